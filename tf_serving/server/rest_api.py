"""TF Serving's REST API without the HTTP layer: (method, path, body) → (status, JSON).

Routing, verbs and messages follow tensorflow_serving/model_servers/http_server.cc,
http_rest_api_handler.cc and http_rest_api_util.cc; the HTTP method set follows
libevent's evhttp as TF Serving configures it (evhttp_server.cc). tf_serving/README.md
lists the rules. `tf_serving.server.http_front` serves this over aiohttp.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    input_pb2,
    predict_pb2,
    regression_pb2,
)

from tf_serving.server.core import (
    ServingCore,
    classification_response,
    regression_response,
    request_spec,
)
from tf_serving.server.inference import array_to_tensor, predict_response
from tf_serving.server.json_codec import (
    array_to_json,
    is_b64,
    json_str,
    json_to_array,
    json_to_example,
    parse_json_object,
)
from tf_serving.server.servables import DEFAULT_SIGNATURE, INT64_MAX, Signature, Spec
from tf_serving.server.status import (
    INTERNAL_MESSAGE,
    ServingError,
    failed_precondition,
    invalid,
)

log = logging.getLogger("tf_serving")

# libevent's methods as TF Serving enables them; any other method is answered 501.
ALLOWED_METHODS = frozenset({"GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH"})
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET",
    "Access-Control-Allow-Headers": "Content-Type",
}
_V1_RE = re.compile(r"(?i)/v1/.*")
_PREDICT_RE = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)"
)
_STATUS_RE = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r"(?:/(metadata))?"
)
_ORIGIN_RE = re.compile(r"https?://")


@dataclasses.dataclass
class Answer:
    """One REST answer: status, JSON object (None = empty body), headers, metric labels."""

    status: int
    obj: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    content_type: str = "application/json"
    text: str | None = None  # a non-JSON body (the metrics page)
    model_name: str = ""
    api: str = ""
    signature_name: str = ""
    code: str = "OK"  # the status code name, for the metrics


class RestApi:
    """TF Serving's REST handler over a `ServingCore`.

    Args:
      metrics_page: renders the Prometheus page; None = no monitoring endpoint.
      monitoring_path: where that page is (an exact path, any method, as TF Serving).
      enable_cors: add TF Serving's CORS headers (``--rest_api_enable_cors_support``).
    """

    def __init__(
        self,
        core: ServingCore,
        metrics_page: Callable[[], str] | None = None,
        monitoring_path: str = "/monitoring/prometheus/metrics",
        enable_cors: bool = False,
    ):
        self.core = core
        self.metrics_page = metrics_page
        self.monitoring_path = monitoring_path
        self.enable_cors = enable_cors

    def handle(self, method: str, raw_path: str, body: bytearray, origin: str = "") -> Answer:
        """Answers one request; ``body`` is consumed (cleared) once parsed, to free it early."""
        if method not in ALLOWED_METHODS:
            return Answer(501, {"error": f"Method not implemented: {method}"}, code="UNIMPLEMENTED")
        path = urllib.parse.urlsplit(raw_path).path
        if self.metrics_page is not None and path == self.monitoring_path:
            return Answer(200, text=self.metrics_page(), content_type="text/plain")
        if not _V1_RE.fullmatch(path):
            return Answer(404, {"error": f"Not found: {method} {path}"}, code="NOT_FOUND")
        answer = Answer(200)
        try:
            if method == "OPTIONS":  # CORS preflight (http_server.cc)
                if not _ORIGIN_RE.search(origin):
                    raise failed_precondition("Origin header is missing in CORS preflight")
            else:
                answer.obj = self._dispatch(method, path, body, answer)
        except ServingError as e:
            answer.status, answer.obj, answer.code = (
                e.http_status,
                {"error": e.message},
                e.code.name,
            )
        except Exception:
            log.exception("internal error handling %s %s", method, path)
            answer.status, answer.obj, answer.code = 500, {"error": INTERNAL_MESSAGE}, "INTERNAL"
        if self.enable_cors:
            answer.headers.update(CORS_HEADERS)
        return answer

    def _dispatch(self, method: str, path: str, body: bytearray, answer: Answer) -> Any:
        if method == "POST":
            match = _PREDICT_RE.fullmatch(path)
            if match:
                name, version, label, verb = match.groups()
                spec = self._spec(name, version, label)
                answer.model_name, answer.api = spec.name, verb
                # The path regex ignores case, the verb comparison does not: ":PREDICT"
                # is a malformed request in TF Serving.
                if verb == "predict":
                    return self._predict(spec, body, answer)
                if verb in ("classify", "regress"):
                    return self._classify_regress(spec, body, verb, answer)
        elif method == "GET":
            match = _STATUS_RE.fullmatch(path)
            if match:
                name, version, label, metadata = match.groups()
                if name is not None:
                    answer.model_name = urllib.parse.unquote(name)
                answer.api = "metadata" if metadata else "status"
                if not name:
                    raise invalid("Missing model name in request.")
                spec = self._spec(name, version, label)
                if metadata:
                    return self._metadata(spec)
                return json_format.MessageToDict(
                    self.core.model_status(spec),
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
        raise invalid(f"Malformed request: {method} {path}")

    @staticmethod
    def _spec(name: str, version: str | None, label: str | None) -> Spec:
        number = None
        if version is not None:
            number = int(version)
            if number > INT64_MAX:
                raise invalid(f"Failed to convert version: {version} to numeric.")
        return Spec(
            name=urllib.parse.unquote(name),
            version=number,
            label=urllib.parse.unquote(label) if label is not None else None,
        )

    @staticmethod
    def _parse(body: bytearray) -> dict:
        try:
            return parse_json_object(body)
        finally:
            if isinstance(body, bytearray):
                body.clear()  # the decoded document is all that is needed from here on

    @staticmethod
    def _signature_name(doc: dict) -> str:
        name = doc.get("signature_name", "")
        if not isinstance(name, str):
            raise invalid(
                f"JSON Value: {json_str(doc)} not formatted correctly. 'signature_name' key "
                "must be a string value."
            )
        return name

    def _predict(self, spec: Spec, body: bytearray, answer: Answer) -> Any:
        doc = self._parse(body)
        name = self._signature_name(doc) or DEFAULT_SIGNATURE
        answer.signature_name = name
        servable = self.core.resolve(spec)
        sig = servable.signatures.get(name)
        if sig is None:
            raise invalid(f'Serving signature name: "{name}" not found in signature def')
        if not sig.inputs:
            raise invalid(f"Failed to get input map for signature: {name}")
        if "instances" in doc and "inputs" in doc:
            raise invalid(
                f"JSON Value: {json_str(doc)} Not formatted correctly expecting only one of "
                "'inputs' or 'instances' keys to exist "
            )
        if "instances" in doc:
            instances = doc.pop("instances")
            if not isinstance(instances, list):
                raise invalid(
                    f"JSON Value: {json_str(doc)} Expecting 'instances' to be an list/array"
                )
            if not instances:
                raise invalid(f"JSON Value: {json_str(doc)} No values in 'instances' array")
            inputs = self._instances(instances, sig)
            row = True
        elif "inputs" in doc:
            inputs = self._columns(doc.pop("inputs"), sig)
            row = False
        else:
            raise invalid("Missing 'inputs' or 'instances' key")
        del doc
        outputs = self.core.runner.run_predict(servable, sig, inputs)
        if self.core.sample_request_log():
            self._log_predict(spec, name, servable.version, inputs, outputs)
        del inputs
        if row:
            return {"predictions": self._rows_json(outputs)}
        if len(outputs) == 1:
            ((alias, value),) = outputs.items()
            return {"outputs": array_to_json(value, alias)}
        return {"outputs": {k: array_to_json(v, k) for k, v in sorted(outputs.items())}}

    @staticmethod
    def _instances(instances: list, sig: Signature) -> dict[str, np.ndarray]:
        is_object = lambda v: isinstance(v, dict) and not is_b64(v)  # noqa: E731
        if not isinstance(instances[0], dict) and len(sig.inputs) > 1:
            raise invalid(
                "instances is a plain list, but expecting list of objects as multiple input "
                "tensors required as per tensorinfo_map"
            )
        names = sorted(sig.inputs)
        if is_object(instances[0]):
            for i, row in enumerate(instances):
                if not is_object(row):
                    raise invalid(f"Expecting object but got list at item {i} of input list")
                for key in row:
                    if key not in sig.inputs:
                        raise invalid(
                            f"Failed to process element: {i} key: {key} of 'instances' list. "
                            f"Error: INVALID_ARGUMENT: JSON object: does not have named "
                            f"input: {key}"
                        )
                if len(row) != len(names):
                    raise invalid(
                        f"Failed to process element: {i} of 'instances' list. JSON object: "
                        f"{json_str(row)} keys must be equal to: {','.join(names)}"
                    )
            keyed = True
        else:
            for i, row in enumerate(instances):
                if is_object(row):
                    raise invalid(f"Expecting value/list but got object at item {i} of input list")
            keyed = False
        out = {}
        for name in names:
            column = [row[name] for row in instances] if keyed else instances
            dtype = sig.inputs[name][0]
            try:
                out[name] = json_to_array(column, dtype)
            except ServingError as e:
                precise = _element_error(column, name if keyed else None, dtype)
                raise (precise or e) from None
        return out

    @staticmethod
    def _columns(value: Any, sig: Signature) -> dict[str, np.ndarray]:
        if not isinstance(value, dict) or is_b64(value):
            if len(sig.inputs) > 1:
                raise invalid(
                    "inputs is a plain value/list, but expecting an object as multiple input "
                    "tensors required as per tensorinfo_map"
                )
            ((name, (dtype, _)),) = sig.inputs.items()
            return {name: json_to_array(value, dtype)}
        out = {}
        for name in sorted(sig.inputs):
            if name not in value:
                raise invalid(f"Missing named input: {name} in 'inputs' object.")
            out[name] = json_to_array(value[name], sig.inputs[name][0])
        return out

    @staticmethod
    def _rows_json(outputs: dict[str, np.ndarray]) -> list:
        batch = None
        for alias, value in sorted(outputs.items()):
            if value.ndim == 0:
                raise invalid(f"Tensor name: {alias} has no shape information ")
            if batch is not None and value.shape[0] != batch:
                raise invalid(
                    f"Tensor name: {alias} has inconsistent batch size: {value.shape[0]} "
                    f"expecting: {batch}"
                )
            batch = value.shape[0]
        if len(outputs) == 1:
            ((alias, value),) = outputs.items()
            return array_to_json(value, alias)
        columns = {k: array_to_json(v, k) for k, v in sorted(outputs.items())}
        return [{k: column[i] for k, column in columns.items()} for i in range(batch)]

    def _classify_regress(self, spec: Spec, body: bytearray, verb: str, answer: Answer) -> Any:
        doc = self._parse(body)
        spec = dataclasses.replace(spec, signature_name=self._signature_name(doc))
        answer.signature_name = spec.signature
        request_input = input_pb2.Input()
        has_context = "context" in doc
        if has_context:
            request_input.example_list_with_context.context.CopyFrom(
                json_to_example(doc["context"])
            )
        if "examples" not in doc:
            raise invalid(
                f"JSON Value: {json_str(doc)} When method is classify, key 'examples' is "
                "expected and was not found"
            )
        examples = doc.pop("examples")
        if not isinstance(examples, list):
            raise invalid(
                f"JSON Value: {json_str(doc)} Expecting 'examples' value to be an list/array"
            )
        if not examples:
            raise invalid(f"JSON Value: {json_str(doc)} 'examples' value is an empty array")
        parsed = [json_to_example(e) for e in examples]
        del doc, examples
        if has_context:
            request_input.example_list_with_context.examples.extend(parsed)
        else:
            request_input.example_list.examples.extend(parsed)
        del parsed
        servable = self.core.resolve(spec)
        if verb == "regress":
            values = self.core.runner.regress_on(servable, spec.signature_name, request_input)
            if self.core.sample_request_log():
                request = regression_pb2.RegressionRequest(input=request_input)
                request_spec(request.model_spec, spec)
                response = regression_response(spec, servable.version, values)
                self.core.log_rest(request, response, "regress")
            return {"results": array_to_json(values)}
        classes, scores = self.core.runner.classify_on(servable, spec.signature_name, request_input)
        if self.core.sample_request_log():
            request = classification_pb2.ClassificationRequest(input=request_input)
            request_spec(request.model_spec, spec)
            response = classification_response(spec, servable.version, classes, scores)
            self.core.log_rest(request, response, "classify")
        n, c = (classes if classes is not None else scores).shape
        labels = array_to_json(classes) if classes is not None else [[""] * c] * n
        values = array_to_json(scores) if scores is not None else [[0.0] * c] * n
        return {"results": [list(map(list, zip(lr, sr))) for lr, sr in zip(labels, values)]}

    def _log_predict(self, spec: Spec, signature: str, version: int, inputs, outputs) -> None:
        """Logs a REST predict as the PredictRequest/Response TF Serving's REST handler
        converts it to (named tensors, the response's model_spec with the version)."""
        request = predict_pb2.PredictRequest()
        request_spec(request.model_spec, spec)
        for alias, value in inputs.items():
            request.inputs[alias].CopyFrom(array_to_tensor(value))
        response = predict_response(spec.name, version, signature, outputs)
        self.core.log_rest(request, response, "predict")

    def _metadata(self, spec: Spec) -> Any:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = spec.name
        if spec.version is not None:
            request.model_spec.version.value = spec.version
        if spec.label is not None:
            request.model_spec.version_label = spec.label
        response = self.core.get_model_metadata(request)
        options = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_defs)
        return {
            "model_spec": json_format.MessageToDict(response.model_spec, **options),
            "metadata": {"signature_def": json_format.MessageToDict(signature_defs, **options)},
        }


def _element_error(column: list, key: str | None, dtype: int) -> ServingError | None:
    """The TF-Serving-style error naming the first bad element of an instances list."""
    where = (lambda i: f"{i} key: {key}") if key is not None else (lambda i: f"{i}")  # noqa: E731
    first_shape = None
    for i, value in enumerate(column):
        try:
            arr = json_to_array(value, dtype)
        except ServingError as e:
            return invalid(
                f"Failed to process element: {where(i)} of 'instances' list. Error: "
                f"INVALID_ARGUMENT: {e.message}"
            )
        if first_shape is None:
            first_shape = arr.shape
        elif arr.shape != first_shape:
            size = int(np.prod(first_shape))
            detail = (
                f"Expecting tensor size: {size} but got: {arr.size}"
                if arr.size != size
                else f"Expecting shape [{','.join(map(str, first_shape))}] but got: "
                f"[{','.join(map(str, arr.shape))}]"
            )
            return invalid(
                f"Failed to process element: {where(i)} of 'instances' list. Error: "
                f"INVALID_ARGUMENT: {detail}"
            )
    return None
