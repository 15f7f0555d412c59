"""Running signatures: Predict, Classify, Regress and MultiInference on a loaded version.

The batcher, when on, merges concurrent Predict calls of the row-wise signatures; every
input check runs before that (tf_serving/server/inference.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import grpc
import numpy as np
from tensorflow_serving.apis import inference_pb2, predict_pb2, regression_pb2

from tf_serving.server import inference as inf
from tf_serving.server.batching import Batcher
from tf_serving.server.servables import DEFAULT_SIGNATURE, Servable, Signature
from tf_serving.server.status import ServingError, error_from_exception, invalid

log = logging.getLogger("tf_serving")


class Runner:
    """Runs requests on servables, through ``batcher`` for ``batching_signatures``."""

    def __init__(self, batcher: Batcher | None = None, batching_signatures: Iterable[str] = ()):
        self.batcher = batcher
        self.batching_signatures = frozenset(batching_signatures)

    @staticmethod
    def call_signature(fn, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = fn(**inputs)
            return {k: v.numpy() for k, v in outputs.items()}
        except Exception as e:
            error = error_from_exception(e)
            if error.code == grpc.StatusCode.INTERNAL:
                log.exception("internal error running a signature")
            raise error from e

    def _execute(self, servable: Servable, sig: Signature, inputs: dict[str, np.ndarray]):
        if (
            self.batcher is not None
            and sig.name in self.batching_signatures
            and inputs
            and all(v.ndim >= 1 for v in inputs.values())
        ):
            rows = {v.shape[0] for v in inputs.values()}
            if len(rows) == 1:
                layout = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
                key = (servable.name, servable.version, id(servable), sig.name, layout)
                return self.batcher.submit(key, sig.fn, inputs, rows.pop())
        return self.call_signature(sig.fn, inputs)

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
        inputs = {
            alias: inf.tensor_to_array(alias, proto, sig.inputs[alias][0])
            for alias, proto in request.inputs.items()
        }
        outputs = self.run_predict(servable, sig, inputs, request.output_filter)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = name
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(inf.array_to_tensor(value))
        return response

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
