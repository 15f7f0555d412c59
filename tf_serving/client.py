"""Clients of TensorFlow Serving's gRPC and REST APIs (tf_serving/README.md, Contract rules).

Both clients have the same methods and return the same Python values::

    client = GrpcClient("localhost:8500", "census")  # or RestClient("http://localhost:8501", ...)
    client.predict({"age": [[39.0]], "workclass": [["Private"]], ...})   # {"probabilities": array}
    client.classify([{"age": 39.0, "workclass": "Private", ...}])       # [[("0", .8), ("1", .2)]]
    client.regress([{"age": 39.0, ...}])                                # [0.2]
    client.rank({"age": 39.0, ...}, {"occupation": ["a", "b", "c"]})    # scores, top_k_*
    client.metadata(); client.status()

* ``version`` or ``label`` (not both) picks the model version; neither = the latest.
* Errors from the server become `ServingError(code, message)`, with the server's message
  (gRPC details, or REST's ``{"error": ...}``) and status (gRPC code name; REST also keeps
  the HTTP status). UNAVAILABLE / HTTP 503 / refused connections are retried ``retries``
  times with a growing backoff; a call that takes longer than ``timeout`` seconds fails with
  DEADLINE_EXCEEDED.
* Examples for classify/regress are dicts: float → float_list, int (and bool) → int64_list,
  str/bytes → bytes_list; a list gives several values (ints mixed with floats are floats).
  Over REST floats are written with a decimal point (``39.0``), since TF Serving turns an
  integer literal into an int64 feature.
* Predict inputs are array-likes; float64 arrays are sent as float32 (the dtype of float
  inputs of our signatures) unless ``dtypes`` says otherwise.

The gRPC client needs ``tensorflow-serving-api`` and ``grpcio`` (and imports TensorFlow);
the REST client needs only numpy and the standard library.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tf_serving.strings import text_values

DEFAULT_TASKS = (
    ("classification", "tensorflow/serving/classify"),
    ("regression", "tensorflow/serving/regress"),
)
MAX_BACKOFF_S = 2.0
DEFAULT_TOP_K = 10  # rank: candidates picked on the client when the signature has no top-k

# HTTP status → canonical code (TF Serving's ToHTTPStatusCode, inverted; 400, 409 and 500
# stand for several codes: the most common one is used).
HTTP_TO_CODE = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "RESOURCE_EXHAUSTED",  # the local server's body limit (TF Serving has none)
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# SignatureDef dtype names → numpy dtypes (for REST responses and typed inputs).
DTYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_BOOL": np.bool_,
    "DT_STRING": object,
}
_OBJECT = np.dtype(object)


class ServingError(Exception):
    """An error answer (or no answer) from the server.

    Attributes:
      code: the canonical status name (``INVALID_ARGUMENT``, ``NOT_FOUND``, ``UNAVAILABLE``,
        ``DEADLINE_EXCEEDED``, ...).
      message: the server's message (gRPC details, REST ``error``), or what went wrong.
      http_status: the HTTP status of a REST answer (None for gRPC or no answer).
    """

    def __init__(self, code: str, message: str, http_status: int | None = None):
        self.code = code
        self.message = message
        self.http_status = http_status
        super().__init__(str(self))

    def __str__(self) -> str:
        suffix = f" (HTTP {self.http_status})" if self.http_status is not None else ""
        return f"{self.code}: {self.message}{suffix}"

    def __reduce__(self):
        return (type(self), (self.code, self.message, self.http_status))


def error_from_rest(http_status: int, body: bytes | str) -> ServingError:
    """A `ServingError` from a REST error answer (``{"error": "..."}``, or any text)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    message = text.strip()
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and "error" in obj:
        message = str(obj["error"])
    if not message:
        message = f"HTTP {http_status} with an empty body"
    return ServingError(HTTP_TO_CODE.get(http_status, "UNKNOWN"), message, http_status)


# ----------------------------------------------------------------------------------------
# Shared request pieces.


def _check_version(version: int | str | None, label: str | None) -> tuple[int | None, str | None]:
    if version is not None and label is not None:
        raise ValueError(
            f"give a model version or a label, not both (version={version!r}, label={label!r})"
        )
    if version is not None:
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise ValueError(f"version must be an integer, got {version!r}") from None
        if version < 0:
            raise ValueError(f"version must be >= 0, got {version}")
    if label is not None and (not isinstance(label, str) or not label):
        raise ValueError(f"label must be a non-empty string, got {label!r}")
    return version, label


def _backoff(attempt: int, base: float) -> float:
    return min(base * (2**attempt), MAX_BACKOFF_S)


def _typed_input(value: Any, dtype: Any = None) -> np.ndarray:
    """One input as numpy: ``dtype`` if given (a numpy dtype or a ``DT_*`` name), else
    float64 → float32; text as an object array of the str and bytes given, not yet encoded."""
    if dtype is not None:
        dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
        if dtype is object or np.dtype(dtype) == _OBJECT:
            return np.asarray(value, dtype=object)
        return np.asarray(value, dtype=dtype)
    arr = np.asarray(value)
    if arr.dtype == np.float64:
        return arr.astype(np.float32)
    if arr.dtype.kind in "US":
        return arr.astype(object)
    return arr


def _typed_inputs(
    inputs: Mapping[str, Any], dtypes: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Array-likes → numpy (`_typed_input` each, ``dtypes`` by input name); text stays the
    str and bytes given: `tensor_proto` encodes it for gRPC, the REST body keeps str and
    sends bytes as ``{"b64": ...}``."""
    if not inputs:
        raise ValueError("inputs: need at least one input tensor")
    dtypes = dtypes or {}
    return {name: _typed_input(value, dtypes.get(name)) for name, value in inputs.items()}


def _text_array(value: Any, as_bytes: bool = True) -> np.ndarray:
    """An object array of bytes (or, ``as_bytes=False``, of str and bytes as given)."""
    arr = np.asarray(value, dtype=object)
    out = np.empty(arr.size, dtype=object)
    out[:] = text_values(arr.reshape(-1).tolist(), as_bytes)
    return out.reshape(arr.shape)


def _feature_values(name: str, value: Any) -> tuple[str, list]:
    """(kind, values) of one example feature: kind is 'float', 'int' or 'bytes'."""
    if isinstance(value, np.ndarray):
        value = value.reshape(-1).tolist() if value.ndim else value.item()
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    kinds = set()
    clean = []
    for v in values:
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (bool, int)):
            kinds.add("int")
            v = int(v)
        elif isinstance(v, float):
            kinds.add("float")
        elif isinstance(v, (str, bytes)):
            kinds.add("bytes")
        else:
            raise ValueError(
                f"feature {name!r}: value {v!r} is not a float, int, str or bytes "
                "(or a flat list of them)"
            )
        clean.append(v)
    if "bytes" in kinds and len(kinds) > 1:
        raise ValueError(f"feature {name!r}: mixes strings and numbers: {values!r}")
    if kinds == {"int", "float"}:
        return "float", [float(v) for v in clean]
    return (kinds.pop() if kinds else "float"), clean


def make_example(row: Mapping[str, Any]):
    """A ``tf.train.Example`` of a dict of feature values (see the module docstring)."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    for name, value in row.items():
        kind, values = _feature_values(name, value)
        feature = example.features.feature[name]
        if not values:
            continue  # an empty feature (e.g. an empty multivalent list)
        if kind == "float":
            feature.float_list.value.extend(values)
        elif kind == "int":
            feature.int64_list.value.extend(values)
        else:
            feature.bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in values)
    return example


def _json_value(value: Any) -> Any:
    """A value as TF Serving's REST JSON: bytes as {"b64": ...}, numpy as plain lists."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "fiub":
            return value.tolist()
        return [_json_value(v) for v in value]
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return {"b64": base64.b64encode(value).decode("ascii")}
    return value


def _json_feature(name: str, value: Any) -> Any:
    """One example feature as REST JSON: floats keep a decimal point, ints do not."""
    kind, values = _feature_values(name, value)
    if kind == "float":
        values = [float(v) for v in values]
    values = [_json_value(v) for v in values]
    is_list = isinstance(value, (list, tuple)) or (isinstance(value, np.ndarray) and value.ndim)
    return values if is_list else values[0]


def _from_json_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"}:
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_from_json_value(v) for v in value]
    return value


def _is_named(value: Any) -> bool:
    """Whether a REST output value is an object of named outputs (not a {"b64": ...})."""
    return isinstance(value, dict) and set(value) != {"b64"}


def _to_array(value: Any, dtype_name: str | None) -> np.ndarray:
    value = _from_json_value(value)
    dtype = DTYPES.get(dtype_name) if dtype_name else None
    if dtype is object:
        return _text_array(value)
    return np.asarray(value, dtype=dtype)


def _rank_inputs(
    context: Mapping[str, Any], candidates: Mapping[str, Any], repeat_context: bool = True
) -> dict[str, Any]:
    """The ``rank`` signature's inputs: candidates as [N, 1], context as [N, 1] or [1, 1].

    Sending every input with N rows (``repeat_context``) works with a rank signature that
    broadcasts a 1-row context and with one that needs all inputs batched alike (TF
    Serving's batching does). Without it the context goes once, as [1, 1]: a smaller
    request, and the model preprocesses the context once instead of N times — for servers
    that do not batch ``rank`` (the local server; tensorflow_model_server without
    ``--enable_batching``).
    """
    both = sorted(set(context) & set(candidates))
    if both:
        raise ValueError(f"rank: features {both} are both in context and in candidates")
    if not candidates:
        raise ValueError("rank: candidates must hold at least one feature")
    inputs: dict[str, Any] = {}
    lengths = {}
    for name, value in candidates.items():
        arr = np.asarray(value, dtype=object if _is_text(value) else None)
        if arr.ndim == 0 or (arr.ndim == 2 and arr.shape[1] != 1) or arr.ndim > 2:
            raise ValueError(
                f"rank: candidate feature {name!r} must be a list of N values, "
                f"got shape {arr.shape}"
            )
        inputs[name] = arr.reshape(-1, 1)
        lengths[name] = len(inputs[name])
    if len(set(lengths.values())) > 1:
        raise ValueError(f"rank: candidate features have different lengths {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise ValueError("rank: no candidates")
    for name, value in context.items():
        arr = np.asarray(value, dtype=object if _is_text(value) else None)
        if arr.size != 1:
            raise ValueError(f"rank: context feature {name!r} must be one value, got {value!r}")
        arr = arr.reshape(1, 1)
        inputs[name] = np.repeat(arr, n, axis=0) if repeat_context else arr
    return inputs


def _with_top_k(outputs: dict[str, np.ndarray], top_k: int | None) -> dict[str, np.ndarray]:
    """Adds ``top_k_indices``/``top_k_scores`` from ``scores`` when the signature has none.

    Ties keep candidate order (a stable sort), as ``tf.math.top_k`` does.
    """
    if "scores" not in outputs or "top_k_indices" in outputs:
        return outputs
    scores = np.asarray(outputs["scores"]).reshape(-1)
    k = len(scores) if top_k is None else min(top_k, len(scores))
    order = np.argsort(-scores, kind="stable")[:k].astype(np.int32)
    return {**outputs, "top_k_indices": order, "top_k_scores": scores[order]}


def _is_text(value: Any) -> bool:
    first = value
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    if isinstance(first, np.ndarray):
        return first.dtype.kind in "USO"
    return isinstance(first, (str, bytes))


def signature_io(metadata: Mapping[str, Any], signature_name: str) -> tuple[dict, dict]:
    """({input: dtype}, {output: dtype}) of a signature in a `metadata()` answer."""
    sigs = metadata.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
    if signature_name not in sigs:
        raise ValueError(
            f"signature {signature_name!r} is not in the model's signatures {sorted(sigs)}"
        )
    sig = sigs[signature_name]
    inputs = {k: v.get("dtype", "") for k, v in sig.get("inputs", {}).items()}
    outputs = {k: v.get("dtype", "") for k, v in sig.get("outputs", {}).items()}
    return inputs, outputs


def _filter_outputs(outputs: dict[str, np.ndarray], output_filter: Iterable[str] | None):
    if not output_filter:
        return outputs
    wanted = list(output_filter)
    missing = [n for n in wanted if n not in outputs]
    if missing:
        raise ServingError(
            "INVALID_ARGUMENT",
            f"output tensor alias not found in signature: {missing[0]} "
            f"Outputs expected to be in the set {sorted(outputs)}.",
        )
    return {n: outputs[n] for n in wanted}


# ----------------------------------------------------------------------------------------
# gRPC.


class GrpcClient:
    """A client of TF Serving's gRPC ``PredictionService`` and ``ModelService``.

    Args:
      target: ``host:port`` of the server (``localhost:8500``).
      model_name: the served model's name.
      timeout: seconds per call (the gRPC deadline).
      retries: extra attempts when the server is UNAVAILABLE (not yet up, overloaded).
      backoff: first wait between attempts in seconds; doubles up to 2 s.
      channel: use this channel instead of an insecure one to ``target``.
      use_proxy: honour the ``grpc_proxy``/``http_proxy`` environment variables.
    """

    def __init__(
        self,
        target: str,
        model_name: str,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.1,
        channel=None,
        use_proxy: bool = False,
    ):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self._grpc = grpc
        self.target = target
        self.model_name = model_name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self._own_channel = channel is None
        self.channel = channel or grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.max_receive_message_length", -1),
                # Reconnect soon after a refused connection, so retries can succeed.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
                ("grpc.enable_http_proxy", int(use_proxy)),
            ],
        )
        self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        if self._own_channel:
            self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def _model_spec(self, spec, signature_name: str | None, version, label) -> None:
        version, label = _check_version(version, label)
        spec.name = self.model_name
        if signature_name is not None:
            spec.signature_name = signature_name
        if version is not None:
            spec.version.value = version
        elif label is not None:
            spec.version_label = label

    def _call(self, method: Callable, request):
        unavailable = self._grpc.StatusCode.UNAVAILABLE
        for attempt in range(self.retries + 1):
            try:
                return method(request, timeout=self.timeout)
            except self._grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else None
                details = e.details() if hasattr(e, "details") else str(e)
                if code == unavailable and attempt < self.retries:
                    time.sleep(_backoff(attempt, self.backoff))
                    continue
                name = code.name if code is not None else "UNKNOWN"
                raise ServingError(name, details or name) from None
        raise AssertionError("unreachable")

    def _fill_input(self, input_msg, examples: Sequence[Mapping[str, Any]], context) -> None:
        if not examples:
            raise ValueError("examples: need at least one example")
        built = [make_example(e) for e in examples]
        if context:
            input_msg.example_list_with_context.context.CopyFrom(make_example(context))
            input_msg.example_list_with_context.examples.extend(built)
        else:
            input_msg.example_list.examples.extend(built)

    # -- requests (built without sending, for tests and warmup files) ---------------------

    def predict_request(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = "serving_default",
        version: int | None = None,
        label: str | None = None,
        output_filter: Iterable[str] | None = None,
        dtypes: Mapping[str, Any] | None = None,
    ):
        from tensorflow_serving.apis import predict_pb2

        from tf_serving.tensors import tensor_proto

        request = predict_pb2.PredictRequest()
        self._model_spec(request.model_spec, signature_name, version, label)
        for name, arr in _typed_inputs(inputs, dtypes).items():
            tensor_proto(arr, out=request.inputs[name])
        if output_filter:
            request.output_filter.extend(output_filter)
        return request

    def classify_request(
        self, examples, signature_name="classification", context=None, version=None, label=None
    ):
        from tensorflow_serving.apis import classification_pb2

        request = classification_pb2.ClassificationRequest()
        self._model_spec(request.model_spec, signature_name, version, label)
        self._fill_input(request.input, examples, context)
        return request

    def regress_request(
        self, examples, signature_name="regression", context=None, version=None, label=None
    ):
        from tensorflow_serving.apis import regression_pb2

        request = regression_pb2.RegressionRequest()
        self._model_spec(request.model_spec, signature_name, version, label)
        self._fill_input(request.input, examples, context)
        return request

    # -- API -------------------------------------------------------------------------------

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = "serving_default",
        version: int | None = None,
        label: str | None = None,
        output_filter: Iterable[str] | None = None,
        dtypes: Mapping[str, Any] | None = None,
    ) -> dict[str, np.ndarray]:
        """Predict: input tensors by name → output tensors by alias."""
        from tf_serving.tensors import tensor_array

        request = self.predict_request(
            inputs, signature_name, version, label, output_filter, dtypes
        )
        response = self._call(self.prediction.Predict, request)
        return {name: tensor_array(t) for name, t in response.outputs.items()}

    def classify(
        self,
        examples: Sequence[Mapping[str, Any]],
        signature_name: str = "classification",
        context: Mapping[str, Any] | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Classify: per example, its (class label, score) pairs."""
        request = self.classify_request(examples, signature_name, context, version, label)
        response = self._call(self.prediction.Classify, request)
        return _classifications(response.result)

    def regress(
        self,
        examples: Sequence[Mapping[str, Any]],
        signature_name: str = "regression",
        context: Mapping[str, Any] | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> list[float]:
        """Regress: one value per example."""
        request = self.regress_request(examples, signature_name, context, version, label)
        response = self._call(self.prediction.Regress, request)
        return [r.value for r in response.result.regressions]

    def multi_inference(
        self,
        examples: Sequence[Mapping[str, Any]],
        tasks: Sequence[tuple[str, str]] = DEFAULT_TASKS,
        context: Mapping[str, Any] | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> dict[str, list]:
        """Several classify/regress signatures on one input: signature name → its results.

        Args:
          tasks: (signature name, method name) pairs; method names are
            ``tensorflow/serving/classify`` and ``tensorflow/serving/regress``.
        """
        from tensorflow_serving.apis import inference_pb2

        if not tasks:
            raise ValueError("multi_inference: need at least one task")
        request = inference_pb2.MultiInferenceRequest()
        for signature_name, method_name in tasks:
            task = request.tasks.add()
            self._model_spec(task.model_spec, signature_name, version, label)
            task.method_name = method_name
        self._fill_input(request.input, examples, context)
        response = self._call(self.prediction.MultiInference, request)
        out = {}
        for (signature_name, _), result in zip(tasks, response.results):
            kind = result.WhichOneof("result")
            if kind == "classification_result":
                out[signature_name] = _classifications(result.classification_result)
            elif kind == "regression_result":
                out[signature_name] = [r.value for r in result.regression_result.regressions]
            else:
                out[signature_name] = []
        return out

    def rank(
        self,
        context: Mapping[str, Any],
        candidates: Mapping[str, Any],
        signature_name: str = "rank",
        version: int | None = None,
        label: str | None = None,
        dtypes: Mapping[str, Any] | None = None,
        top_k: int | None = DEFAULT_TOP_K,
        repeat_context: bool = True,
    ) -> dict[str, np.ndarray]:
        """Scores N candidates for one context: ``scores`` [N], ``top_k_indices/_scores``.

        When the signature returns only ``scores``, the top ``top_k`` are picked here.
        ``repeat_context=False`` sends the context once (see `_rank_inputs`: not for a
        server that batches ``rank``).
        """
        outputs = self.predict(
            _rank_inputs(context, candidates, repeat_context),
            signature_name,
            version,
            label,
            dtypes=dtypes,
        )
        return _with_top_k(outputs, top_k)

    def metadata(self, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        """The model's signatures, as the REST ``/metadata`` JSON."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest()
        self._model_spec(request.model_spec, None, version, label)
        request.metadata_field.append("signature_def")
        response = self._call(self.prediction.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        as_dict = lambda m: json_format.MessageToDict(  # noqa: E731
            m, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        return {
            "model_spec": as_dict(response.model_spec),
            "metadata": {"signature_def": as_dict(signature_map)},
        }

    def status(self, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        """The model's versions and their states, as the REST status JSON."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self._model_spec(request.model_spec, None, version, label)
        response = self._call(self.models.GetModelStatus, request)
        return json_format.MessageToDict(
            response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )


def _classifications(result) -> list[list[tuple[str, float]]]:
    return [[(c.label, c.score) for c in cls.classes] for cls in result.classifications]


# ----------------------------------------------------------------------------------------
# REST.


class RestClient:
    """A client of TF Serving's REST API (``/v1/models/<name>...``).

    Args:
      base_url: ``http://host:port`` of the REST server (``http://localhost:8501``).
      model_name: the served model's name.
      timeout: seconds per HTTP request.
      retries: extra attempts on HTTP 503 and refused/reset connections.
      backoff: first wait between attempts in seconds; doubles up to 2 s.
      use_proxy: honour the ``http_proxy`` environment variables (off: talk directly).

    REST has no output_filter (it is applied here) and no MultiInference. A predict answer
    names no output when the signature has only one; the client then asks for the
    signature's metadata once (cached) to name it and to give outputs their dtypes.
    """

    def __init__(
        self,
        base_url: str,
        model_name: str,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.1,
        use_proxy: bool = False,
    ):
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if not base_url.startswith(("http://", "https://")):
            base_url = "http://" + base_url
        self.base_url = base_url.rstrip("/")
        self.model_name = model_name
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        handlers = [] if use_proxy else [urllib.request.ProxyHandler({})]
        self._opener = urllib.request.build_opener(*handlers)
        self._signature_cache: dict[tuple, tuple[dict, dict] | None] = {}

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- plumbing ------------------------------------------------------------------------

    def url(
        self, verb: str | None = None, version: int | None = None, label: str | None = None
    ) -> str:
        """``/v1/models/<name>[/versions/<v>|/labels/<l>]`` + ``:<verb>`` or ``/metadata``."""
        version, label = _check_version(version, label)
        url = f"{self.base_url}/v1/models/{urllib.parse.quote(self.model_name, safe='')}"
        if version is not None:
            url += f"/versions/{version}"
        elif label is not None:
            url += f"/labels/{urllib.parse.quote(label, safe='')}"
        if verb == "metadata":
            url += "/metadata"
        elif verb:
            url += f":{verb}"
        return url

    def _request(self, url: str, body: Mapping[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(
                url,
                data=data,
                method="GET" if data is None else "POST",
                headers={"Content-Type": "application/json"} if data is not None else {},
            )
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as e:
                error = error_from_rest(e.code, e.read() or b"")
                if e.code == 503 and attempt < self.retries:
                    time.sleep(_backoff(attempt, self.backoff))
                    continue
                raise error from None
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                reason = getattr(e, "reason", e)
                if isinstance(reason, TimeoutError) or "timed out" in str(reason):
                    raise ServingError(
                        "DEADLINE_EXCEEDED", f"no answer from {url} within {self.timeout} s"
                    ) from None
                if isinstance(reason, ConnectionError) and attempt < self.retries:
                    time.sleep(_backoff(attempt, self.backoff))
                    continue
                raise ServingError("UNAVAILABLE", f"{url}: {reason}") from None
            try:
                return json.loads(payload)
            except ValueError:
                raise ServingError(
                    "INTERNAL", f"{url}: answer is not JSON: {payload[:200]!r}"
                ) from None
        raise AssertionError("unreachable")

    def _signature(self, signature_name: str, version, label) -> tuple[dict, dict] | None:
        key = (signature_name, version, label)
        if key not in self._signature_cache:
            try:
                self._signature_cache[key] = signature_io(
                    self.metadata(version=version, label=label), signature_name
                )
            except (ServingError, ValueError):
                self._signature_cache[key] = None
        return self._signature_cache[key]

    # -- request bodies (built without sending) ------------------------------------------

    @staticmethod
    def predict_body(
        inputs: Mapping[str, Any],
        signature_name: str = "serving_default",
        columnar: bool = False,
        dtypes: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of a predict: row (``instances``) or columnar (``inputs``) format."""
        arrays = {
            name: _text_array(arr, as_bytes=False) if arr.dtype == object else arr
            for name, arr in _typed_inputs(inputs, dtypes).items()
        }
        body: dict[str, Any] = {"signature_name": signature_name}
        if columnar:
            body["inputs"] = {name: _json_value(arr) for name, arr in arrays.items()}
            return body
        rows = {name: (arr.shape[0] if arr.ndim else None) for name, arr in arrays.items()}
        if None in rows.values() or len(set(rows.values())) != 1:
            raise ValueError(
                "row-format predict needs every input with the same first dimension, got "
                f"{ {n: arrays[n].shape for n in arrays} }; use columnar=True otherwise"
            )
        n = next(iter(rows.values()))
        body["instances"] = [
            {name: _json_value(arr[i]) for name, arr in arrays.items()} for i in range(n)
        ]
        return body

    @staticmethod
    def examples_body(
        examples: Sequence[Mapping[str, Any]],
        signature_name: str,
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The JSON body of a classify/regress (``examples`` and optional ``context``)."""
        if not examples:
            raise ValueError("examples: need at least one example")
        body: dict[str, Any] = {"signature_name": signature_name}
        if context:
            body["context"] = {k: _json_feature(k, v) for k, v in context.items()}
        body["examples"] = [{k: _json_feature(k, v) for k, v in e.items()} for e in examples]
        return body

    @staticmethod
    def parse_predict(
        answer: Mapping[str, Any],
        output_dtypes: Mapping[str, str] | None = None,
        output_filter: Iterable[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Output arrays of a predict answer (``predictions`` or ``outputs``).

        A single unnamed output takes its name from ``output_dtypes`` when that names one
        output, else ``predictions``/``outputs`` (the answer's key).
        """
        if "predictions" in answer:
            key, value = "predictions", answer["predictions"]
            named = isinstance(value, list) and bool(value) and all(_is_named(v) for v in value)
            if named:
                value = {n: [row[n] for row in value] for n in value[0]}
        elif "outputs" in answer:
            key, value = "outputs", answer["outputs"]
            named = _is_named(value)
        else:
            raise ServingError(
                "INTERNAL", f"predict answer has neither 'predictions' nor 'outputs': {answer}"
            )
        dtypes = dict(output_dtypes or {})
        if not named:
            name = next(iter(dtypes)) if len(dtypes) == 1 else key
            value = {name: value}
        outputs = {n: _to_array(v, dtypes.get(n)) for n, v in value.items()}
        return _filter_outputs(outputs, output_filter)

    # -- API -------------------------------------------------------------------------------

    def predict(
        self,
        inputs: Mapping[str, Any],
        signature_name: str = "serving_default",
        version: int | None = None,
        label: str | None = None,
        output_filter: Iterable[str] | None = None,
        dtypes: Mapping[str, Any] | None = None,
        columnar: bool = False,
    ) -> dict[str, np.ndarray]:
        """Predict: input tensors by name → output tensors by alias."""
        url = self.url("predict", version, label)
        answer = self._request(url, self.predict_body(inputs, signature_name, columnar, dtypes))
        signature = self._signature(signature_name, version, label)
        return self.parse_predict(answer, signature[1] if signature else None, output_filter)

    def classify(
        self,
        examples: Sequence[Mapping[str, Any]],
        signature_name: str = "classification",
        context: Mapping[str, Any] | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> list[list[tuple[str, float]]]:
        """Classify: per example, its (class label, score) pairs."""
        url = self.url("classify", version, label)
        answer = self._request(url, self.examples_body(examples, signature_name, context))
        return [[(str(c), float(s)) for c, s in row] for row in _results(answer)]

    def regress(
        self,
        examples: Sequence[Mapping[str, Any]],
        signature_name: str = "regression",
        context: Mapping[str, Any] | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> list[float]:
        """Regress: one value per example."""
        url = self.url("regress", version, label)
        answer = self._request(url, self.examples_body(examples, signature_name, context))
        return [float(v) for v in _results(answer)]

    def multi_inference(self, *args, **kwargs):
        raise NotImplementedError(
            "TF Serving's REST API has no MultiInference; use GrpcClient.multi_inference, or "
            "call classify and regress"
        )

    def rank(
        self,
        context: Mapping[str, Any],
        candidates: Mapping[str, Any],
        signature_name: str = "rank",
        version: int | None = None,
        label: str | None = None,
        dtypes: Mapping[str, Any] | None = None,
        top_k: int | None = DEFAULT_TOP_K,
        repeat_context: bool = True,
    ) -> dict[str, np.ndarray]:
        """Scores N candidates for one context: ``scores`` [N], ``top_k_indices``, ``top_k_scores``.

        Sent in the columnar format (a rank signature's top-k outputs, when it has them,
        do not have N rows, which the row format needs); with only ``scores`` the top
        ``top_k`` are picked here. ``repeat_context=False`` sends the context once (see
        `_rank_inputs`: not for a server that batches ``rank``).
        """
        outputs = self.predict(
            _rank_inputs(context, candidates, repeat_context),
            signature_name,
            version,
            label,
            dtypes=dtypes,
            columnar=True,
        )
        return _with_top_k(outputs, top_k)

    def metadata(self, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        """GET ``.../metadata``: the model's signatures."""
        return self._request(self.url("metadata", version, label))

    def status(self, version: int | None = None, label: str | None = None) -> dict[str, Any]:
        """GET ``/v1/models/<name>``: the model's versions and their states."""
        return self._request(self.url(None, version, label))


def _results(answer: Mapping[str, Any]) -> list:
    if "results" not in answer:
        raise ServingError("INTERNAL", f"answer has no 'results': {answer}")
    return answer["results"]
