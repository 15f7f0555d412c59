"""Running signatures: Predict, Classify, Regress and MultiInference on a loaded version.

The batcher, when on, merges concurrent Predict calls of the row-wise signatures; every
input check runs before that (tf_serving/server/inference.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import inference_pb2, predict_pb2, regression_pb2

from tf_serving.server import inference as inf
from tf_serving.server.batching import Batcher
from tf_serving.server.servables import DEFAULT_SIGNATURE, Servable, Signature
from tf_serving.server.status import ServingError, error_from_exception, invalid

log = logging.getLogger("tf_serving")


DEFAULT_MAX_ROWS_PER_CALL = 8192
DEFAULT_MAX_DECODED_BYTES = 4 << 30


class Runner:
    """Runs requests on servables.

    Args:
      batcher: merges concurrent Predict calls of ``batching_signatures`` (None = off).
      batching_signatures: the row-wise signatures (output row i depends only on input
        row i); only they are batched, and only they are sliced.
      max_rows_per_call: a request to a row-wise signature with more rows runs in slices
        of this many rows, so the model's intermediate tensors for a huge request (a body
        at the size limit holds ~190K census rows) stay bounded; outputs are the same.
      max_decoded_bytes: a Predict request whose tensors would take more bytes once
        decoded is refused (`inference.check_decoded_size`).
    """

    def __init__(
        self,
        batcher: Batcher | None = None,
        batching_signatures: Iterable[str] = (),
        max_rows_per_call: int = DEFAULT_MAX_ROWS_PER_CALL,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    ):
        if max_rows_per_call < 1:
            raise ValueError(f"max_rows_per_call must be >= 1, got {max_rows_per_call}")
        if max_decoded_bytes < 1:
            raise ValueError(f"max_decoded_bytes must be >= 1, got {max_decoded_bytes}")
        self.max_decoded_bytes = max_decoded_bytes
        self.batcher = batcher
        self.batching_signatures = frozenset(batching_signatures)
        self.max_rows_per_call = max_rows_per_call

    @staticmethod
    def call_signature(fn, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Runs ``fn`` on the inputs and returns numpy outputs.

        The inputs become tensors here first: a concrete function called with numpy arrays
        (string ones above all) converts them more slowly itself (measured on the census
        rank signature, 200 candidates).
        """
        try:
            outputs = fn(**{k: tf.constant(v) for k, v in inputs.items()})
            return {k: v.numpy() for k, v in outputs.items()}
        except Exception as e:
            error = error_from_exception(e)
            if error.code == grpc.StatusCode.INTERNAL:
                log.exception("internal error running a signature")
            raise error from e

    def _execute(self, servable: Servable, sig: Signature, inputs: dict[str, np.ndarray]):
        if (
            sig.name in self.batching_signatures
            and inputs
            and all(v.ndim >= 1 for v in inputs.values())
        ):
            rows = {v.shape[0] for v in inputs.values()}
            if len(rows) == 1:
                n = rows.pop()
                if n > self.max_rows_per_call:
                    return self._call_in_slices(sig.fn, inputs, n)
                if self.batcher is not None:
                    layout = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
                    key = (servable.name, servable.version, id(servable), sig.name, layout)
                    return self.batcher.submit(key, sig.fn, inputs, n)
        return self.call_signature(sig.fn, inputs)

    def _call_in_slices(self, fn, inputs: dict[str, np.ndarray], rows: int):
        """``fn`` on ``max_rows_per_call`` rows at a time, outputs concatenated along dim 0."""
        step = self.max_rows_per_call
        parts: dict[str, list[np.ndarray]] = {}
        for start in range(0, rows, step):
            piece = self.call_signature(fn, {k: v[start : start + step] for k, v in inputs.items()})
            expected = min(step, rows - start)
            if any(v.ndim == 0 or v.shape[0] != expected for v in piece.values()):
                return self.call_signature(fn, inputs)  # not row-wise after all: one call
            for k, v in piece.items():
                parts.setdefault(k, []).append(v)
        return {k: np.concatenate(v, axis=0) for k, v in parts.items()}

    def run_predict(
        self,
        servable: Servable,
        sig: Signature,
        inputs: dict[str, np.ndarray],
        output_filter: Iterable[str] = (),
    ) -> dict[str, np.ndarray]:
        """Runs ``sig`` on inputs named and typed as it expects, after every input check.

        The checks (shapes, non-finite numbers) run here, before the batcher can merge the
        request with others, so a bad request fails alone.
        """
        wanted = inf.check_output_filter(sig, output_filter)
        inf.check_shapes(sig, inputs)
        inf.check_finite(inputs)
        outputs = self._execute(servable, sig, inputs)
        return {k: outputs[k] for k in wanted}

    def predict_on(
        self, servable: Servable, request: predict_pb2.PredictRequest
    ) -> predict_pb2.PredictResponse:
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        sig = inf.predict_signature(servable, name)
        inf.check_input_names(sig, request.inputs.keys())
        inf.check_decoded_size(request.inputs, self.max_decoded_bytes)
        if self._runs_whole(sig, request.inputs):
            wanted = inf.check_output_filter(sig, request.output_filter)
            outputs = sig.proto_call(request.inputs)
            if outputs is not None:
                outputs = {k: outputs[k] for k in wanted}
                return inf.predict_response(
                    request.model_spec.name, servable.version, name, outputs
                )
        inputs = {
            alias: inf.tensor_to_array(alias, proto, sig.inputs[alias][0])
            for alias, proto in request.inputs.items()
        }
        outputs = self.run_predict(servable, sig, inputs, request.output_filter)
        return inf.predict_response(request.model_spec.name, servable.version, name, outputs)

    def _runs_whole(self, sig: Signature, protos: Mapping) -> bool:
        """True when a Predict request would run as one call of ``sig``: neither handed to
        the batcher nor sliced (`_execute`). Only such requests may take the signature's
        `ProtoCall`; the row counts come from the TensorProtos' shapes, undecoded."""
        if sig.name not in self.batching_signatures:
            return True
        if self.batcher is not None:
            return False
        for proto in protos.values():
            dims = proto.tensor_shape.dim
            if dims and dims[0].size > self.max_rows_per_call:
                return False
        return True

    def classify_on(self, servable: Servable, signature_name: str, input_proto):
        """Runs a classify signature; returns (classes [N, C] | None, scores [N, C] | None)."""
        sig = inf.example_signature(servable, signature_name, "classify")
        inf.check_finite_examples(input_proto)
        examples = inf.examples_tensor(input_proto)
        outputs = self.call_signature(sig.fn, {"inputs": examples})
        return inf.check_classify_outputs(outputs, len(examples))

    def regress_on(self, servable: Servable, signature_name: str, input_proto) -> np.ndarray:
        """Runs a regress signature; returns the values [N]."""
        sig = inf.example_signature(servable, signature_name, "regress")
        inf.check_finite_examples(input_proto)
        examples = inf.examples_tensor(input_proto)
        values = self.call_signature(sig.fn, {"inputs": examples})["outputs"]
        return inf.check_regress_output(values, len(examples))

    def multi_inference_on(
        self, servable: Servable, request: inference_pb2.MultiInferenceRequest
    ) -> inference_pb2.MultiInferenceResponse:
        response = inference_pb2.MultiInferenceResponse()
        seen = set()
        for task in request.tasks:
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if name in seen:
                raise invalid(f"Duplicate evaluation of signature: {name}")
            seen.add(name)
            if task.method_name not in (inf.CLASSIFY_METHOD, inf.REGRESS_METHOD):
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"Unsupported signature method_name: {task.method_name}",
                )
        for task in request.tasks:
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            result = response.results.add()
            result.model_spec.name = task.model_spec.name
            result.model_spec.version.value = servable.version
            result.model_spec.signature_name = name
            if task.method_name == inf.CLASSIFY_METHOD:
                classes, scores = self.classify_on(servable, name, request.input)
                inf.fill_classifications(classes, scores, result.classification_result)
            else:
                values = self.regress_on(servable, name, request.input)
                result.regression_result.regressions.extend(
                    regression_pb2.Regression(value=float(v)) for v in values
                )
        return response
