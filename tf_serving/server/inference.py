"""Request checks and signature contracts of Predict, Classify and Regress (no front, no state).

Each check follows TF Serving's servable code (predict_util.cc, classifier.cc,
regressor.cc, util.cc; tf_serving/README.md lists the rules); the non-finite checks are
this project's decision (refuse, naming the feature) and run before a request can be
merged with others by the batcher.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import input_pb2, predict_pb2

from tf_serving.server.servables import DEFAULT_SIGNATURE, Servable, Signature
from tf_serving.server.status import dtype_name, failed_precondition, invalid
from tf_serving.tensors import tensor_array, tensor_proto

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
NON_FINITE_RULE = "NaN, Infinity and numbers beyond the float range are refused"


def predict_signature(servable: Servable, name: str) -> Signature:
    sig = servable.signatures.get(name)
    if sig is None:
        raise failed_precondition(f'Serving signature key "{name}" not found.')
    return sig


def check_input_names(sig: Signature, names: Iterable[str]) -> None:
    sent = set(names)
    wanted = set(sig.inputs)
    if len(sent) != len(wanted):
        raise invalid(
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
        )
    extra = sorted(sent - wanted)
    if extra:
        raise invalid(
            f"input tensor alias not found in signature: {extra[0]}. Inputs expected to be "
            f"in the set {{{','.join(sorted(wanted))}}}."
        )


def check_shapes(sig: Signature, inputs: Mapping[str, np.ndarray]) -> None:
    for alias, value in inputs.items():
        _, shape = sig.inputs[alias]
        if shape is None:
            continue
        if value.ndim != len(shape) or any(d >= 0 and d != n for d, n in zip(shape, value.shape)):
            raise invalid(
                f"input tensor {alias} has shape [{','.join(map(str, value.shape))}] "
                f"but signature {sig.name} expects [{','.join(map(str, shape))}]"
            )


def check_output_filter(sig: Signature, output_filter: Iterable[str]) -> list[str]:
    seen: list[str] = []
    for alias in output_filter:
        if alias not in sig.sigdef.outputs:
            raise invalid(
                f"output tensor alias not found in signature: {alias} Outputs expected to "
                f"be in the set {{{','.join(sig.outputs)}}}."
            )
        if alias in seen:
            raise invalid(f"duplicate output tensor alias: {alias}")
        seen.append(alias)
    return seen or list(sig.outputs)


def check_finite(inputs: Mapping[str, np.ndarray]) -> None:
    """Refuses NaN and ±inf in floating inputs, naming the input and the first bad element."""
    for alias, value in inputs.items():
        if value.dtype.kind != "f" or value.size == 0:
            continue
        finite = np.isfinite(value)
        if finite.all():
            continue
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise invalid(
            f"Input {alias} has a non-finite value {float(value[index])} at index "
            f"[{','.join(map(str, index))}]: {NON_FINITE_RULE}"
        )


def check_finite_examples(input_proto: input_pb2.Input) -> None:
    """Refuses NaN and ±inf in the float_list features of an Input's tf.Examples."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        groups = [("example", input_proto.example_list.examples)]
    elif kind == "example_list_with_context":
        lists = input_proto.example_list_with_context
        groups = [("context", [lists.context]), ("example", lists.examples)]
    else:
        return
    for where, examples in groups:
        for i, example in enumerate(examples):
            for name, feature in example.features.feature.items():
                if feature.WhichOneof("kind") != "float_list":
                    continue
                for value in feature.float_list.value:
                    if not math.isfinite(value):
                        at = "the context" if where == "context" else f"example {i}"
                        raise invalid(
                            f"Feature: {name} has a non-finite value {value!r} in {at}: "
                            f"{NON_FINITE_RULE}"
                        )


# Bytes one element takes once decoded: a string tensor element is a 24-byte tstring (its
# payload, if longer than the inline buffer, came with the request).
_DECODED_ITEM_BYTES = {
    types_pb2.DT_STRING: 24,
    types_pb2.DT_BOOL: 1,
    types_pb2.DT_INT8: 1,
    types_pb2.DT_UINT8: 1,
    types_pb2.DT_INT16: 2,
    types_pb2.DT_UINT16: 2,
    types_pb2.DT_HALF: 2,
    types_pb2.DT_BFLOAT16: 2,
    types_pb2.DT_FLOAT: 4,
    types_pb2.DT_INT32: 4,
    types_pb2.DT_UINT32: 4,
}


def check_decoded_size(inputs: Mapping[str, tensor_pb2.TensorProto], limit: int) -> None:
    """Refuses a Predict request whose tensors would take more than ``limit`` bytes decoded.

    A TensorProto that carries fewer values than its shape holds is filled with its last
    value (TensorFlow's ``Tensor::FromProto``, which TF Serving parses with), so a request
    of a hundred bytes can claim billions of elements: one claiming 3e9 floats for ``age``
    had the local server allocate 12 GB and the kernel kill it (2026-12-02, this 2-core
    24 GiB machine; the same before and after `servables.ProtoCall`). TF Serving has no
    such bound; this server refuses the request, naming the input that crosses it.
    """
    total = 0
    for alias, proto in inputs.items():
        elements = math.prod(max(int(d.size), 0) for d in proto.tensor_shape.dim)
        total += elements * _DECODED_ITEM_BYTES.get(proto.dtype, 8)
        if total > limit:
            shape = ",".join(str(d.size) for d in proto.tensor_shape.dim)
            raise invalid(
                f"input {alias} has shape [{shape}]: the request's tensors would take "
                f"{total} bytes decoded, more than this server's limit of {limit} bytes "
                "(--max_decoded_bytes)"
            )


def tensor_to_array(alias: str, proto: tensor_pb2.TensorProto, want: int) -> np.ndarray:
    """A request TensorProto → ndarray, after checking its dtype against the signature's."""
    if proto.dtype != want:
        raise invalid(
            f"Expects arg for input {alias} to be {dtype_name(want)} but "
            f"{dtype_name(proto.dtype)} is provided"
        )
    try:
        return tensor_array(proto)
    except Exception as e:
        raise invalid(f"tensor parsing error: {alias}") from e


def array_to_tensor(value: np.ndarray) -> tensor_pb2.TensorProto:
    return tensor_proto(value)


def predict_response(
    name: str, version: int, signature: str, outputs: Mapping[str, np.ndarray]
) -> predict_pb2.PredictResponse:
    """The PredictResponse of ``outputs``, its model_spec naming the version that ran."""
    response = predict_pb2.PredictResponse()
    response.model_spec.name = name
    response.model_spec.version.value = version
    response.model_spec.signature_name = signature
    for alias, value in outputs.items():
        response.outputs[alias].CopyFrom(array_to_tensor(value))
    return response


def examples_tensor(input_proto: input_pb2.Input) -> np.ndarray:
    """The serialized tf.Examples of an Input (context bytes + example bytes = merge)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in input_proto.example_list.examples]
    elif kind == "example_list_with_context":
        lists = input_proto.example_list_with_context
        context = lists.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in lists.examples]
    else:
        serialized = []
    if not serialized:
        raise invalid("Input is empty.")
    out = np.empty(len(serialized), dtype=object)
    out[:] = serialized
    return out


def example_signature(servable: Servable, name: str, method: str) -> Signature:
    """The classify/regress signature ``name``, checked as classifier.cc/regressor.cc do."""
    name = name or DEFAULT_SIGNATURE
    sigdef = servable.signature_defs.get(name)
    sig = servable.signatures.get(name)
    if sigdef is None or sig is None:
        raise invalid(f"No signature was found with the name: {name}")
    debug = text_format.MessageToString(sigdef, as_one_line=True)
    if len(sigdef.inputs) != 1:
        raise invalid("Expected one input Tensor.")
    if method == "classify":
        if len(sigdef.outputs) not in (1, 2):
            raise invalid(f"Expected one or two output Tensors, found {len(sigdef.outputs)}")
        if "inputs" not in sigdef.inputs:
            raise failed_precondition(f"No classification inputs found in SignatureDef: {debug}")
        if "classes" not in sigdef.outputs and "scores" not in sigdef.outputs:
            raise failed_precondition(
                "Expected classification signature outputs to contain at least one of "
                f'"classes" or "scores". Signature was: {debug}'
            )
    else:
        if len(sigdef.outputs) != 1:
            raise invalid("Expected one output Tensor.")
        if "inputs" not in sigdef.inputs:
            raise failed_precondition(f"No regression inputs found in SignatureDef: {debug}")
        if "outputs" not in sigdef.outputs:
            raise failed_precondition(f"No regression outputs found in SignatureDef: {debug}")
    if sigdef.inputs["inputs"].dtype != types_pb2.DT_STRING:
        raise invalid(f"Signature {name}: input 'inputs' must be DT_STRING")
    return sig


def check_classify_outputs(
    outputs: Mapping[str, np.ndarray], n: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(classes [N, C] | None, scores [N, C] | None), checked as classifier.cc does."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for alias, tensor, want in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise invalid(
                "Expected Tensor shape: [batch_size num_classes] but got "
                f"[{','.join(map(str, tensor.shape))}]"
            )
        ok = tensor.dtype == object if want == "DT_STRING" else tensor.dtype == np.float32
        if not ok:
            raise invalid(f"Expected {alias} Tensor of {want}. Got: {tensor.dtype}")
        if tensor.shape[0] != n:
            raise invalid(f"Expected {alias} output batch size of {n}. Got: {tensor.shape[0]}")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    return classes, scores


def check_regress_output(values: np.ndarray, n: int) -> np.ndarray:
    """The regression values [N], checked as regressor.cc does."""
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise invalid(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
            f"got [{','.join(map(str, values.shape))}]"
        )
    if values.shape[0] != n:
        raise invalid(
            f"Input batch size did not match output batch size: {n} vs. {values.shape[0]}"
        )
    if values.dtype != np.float32:
        raise invalid(f"Expected output Tensor of DT_FLOAT. Got: {values.dtype}")
    return values.reshape(-1)


def fill_classifications(classes, scores, result) -> None:
    n, c = (classes if classes is not None else scores).shape
    for i in range(n):
        classification = result.classifications.add()
        for j in range(c):
            cls = classification.classes.add()
            if classes is not None:
                cls.label = classes[i, j].decode("utf-8", "replace")
            if scores is not None:
                cls.score = float(scores[i, j])
