"""tf_serving/client.py and scripts/predict.py.

Requests are checked as built (PredictRequest protos, REST JSON bodies), REST against a
scripted HTTP server, and gRPC end to end against a tiny ``grpc.server`` whose servicer
runs a real SavedModel exported by `train_lib.train_and_evaluate` (so client ↔ proto
conversion meets the real signatures), including retries on UNAVAILABLE and timeouts.
"""

import base64
import csv
import gzip
import http.server
import importlib.util
import io
import json
import os
import socket
import sys
import threading
import time
from concurrent import futures

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tf_serving import client as cl
from tf_serving.client import GrpcClient, RestClient, ServingError
from wdl_tf import datasets
from wdl_tf import features as fs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "census"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_script(name):
    spec = importlib.util.spec_from_file_location(
        f"{name}_script", os.path.join(ROOT, "scripts", f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _census_rows(n: int) -> list[dict]:
    """The first n rows of adult.test as typed feature dicts (no label; "?" → default)."""
    spec = fs.preset("census")
    kinds = {f.name: f.kind for f in spec.features}
    defaults = {f.name: f.raw_default for f in spec.features}
    rows = []
    with gzip.open(datasets.CENSUS_TEST, "rt") as f:
        for record in csv.reader(f, skipinitialspace=True):
            if len(record) != len(spec.csv.columns):
                continue
            row = {}
            for name, value in zip(spec.csv.columns, record):
                value = value.strip()
                if name in kinds and value in spec.csv.na_values:
                    row[name] = defaults[name]
                elif name in kinds:
                    row[name] = float(value) if kinds[name] == fs.NUMERIC else value
            rows.append(row)
            if len(rows) == n:
                return rows
    raise AssertionError("adult.test is too short")


def _columns(rows: list[dict]) -> dict[str, list]:
    return {name: [[r[name]] for r in rows] for name in rows[0]}


# ----------------------------------------------------------------------------------------
# Request construction, without a server.


def test_version_or_label_not_both():
    rest = RestClient("localhost:8501", MODEL)
    with pytest.raises(ValueError, match="version or a label, not both"):
        rest.url("predict", version=1, label="stable")
    with pytest.raises(ValueError, match="version or a label, not both"):
        GrpcClient("localhost:1", MODEL).predict_request({"a": [[1.0]]}, version=1, label="x")
    with pytest.raises(ValueError, match="version must be an integer, got 'x'"):
        rest.url("predict", version="x")


def test_rest_urls():
    rest = RestClient("http://localhost:8501/", MODEL)
    base = "http://localhost:8501/v1/models/census"
    assert rest.url("predict") == f"{base}:predict"
    assert rest.url("classify", version=3) == f"{base}/versions/3:classify"
    assert rest.url("regress", label="stable") == f"{base}/labels/stable:regress"
    assert rest.url("metadata", version=2) == f"{base}/versions/2/metadata"
    assert rest.url() == base
    assert RestClient("h:1", "a b").url("predict") == "http://h:1/v1/models/a%20b:predict"


def test_predict_request_proto():
    client = GrpcClient("localhost:1", MODEL)
    request = client.predict_request(
        {
            "age": [[39.0], [50.0]],  # float64 → DT_FLOAT
            "workclass": np.array([["Private"], ["State-gov"]]),
            "ids": [[1], [2]],
        },
        signature_name="predict",
        version=7,
        output_filter=["class_ids"],
    )
    assert isinstance(request, predict_pb2.PredictRequest)
    assert request.model_spec.name == "census"
    assert request.model_spec.signature_name == "predict"
    assert request.model_spec.version.value == 7
    assert request.model_spec.WhichOneof("version_choice") == "version"
    assert list(request.output_filter) == ["class_ids"]
    age = request.inputs["age"]
    assert age.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in age.tensor_shape.dim] == [2, 1]
    assert tf.make_ndarray(age).tolist() == [[39.0], [50.0]]
    assert request.inputs["workclass"].dtype == tf.string.as_datatype_enum
    assert tf.make_ndarray(request.inputs["workclass"]).tolist() == [[b"Private"], [b"State-gov"]]
    assert request.inputs["ids"].dtype == tf.int64.as_datatype_enum
    labelled = client.predict_request({"x": [[1.0]]}, label="canary", dtypes={"x": "DT_DOUBLE"})
    assert labelled.model_spec.version_label == "canary"
    assert labelled.inputs["x"].dtype == tf.float64.as_datatype_enum


def test_classify_and_regress_request_protos():
    client = GrpcClient("localhost:1", MODEL)
    examples = [{"age": 39.0, "hours": 40, "workclass": "Private", "apps": ["a", "b"]}]
    request = client.classify_request(examples, context={"country": b"US", "w": [1, 2.5]})
    assert isinstance(request, classification_pb2.ClassificationRequest)
    assert request.model_spec.signature_name == "classification"
    with_context = request.input.example_list_with_context
    feature = with_context.examples[0].features.feature
    assert list(feature["age"].float_list.value) == [39.0]
    assert list(feature["hours"].int64_list.value) == [40]
    assert list(feature["workclass"].bytes_list.value) == [b"Private"]
    assert list(feature["apps"].bytes_list.value) == [b"a", b"b"]
    context = with_context.context.features.feature
    assert list(context["country"].bytes_list.value) == [b"US"]
    assert list(context["w"].float_list.value) == [1.0, 2.5]  # ints mixed with floats: floats
    request = client.regress_request(examples, signature_name="r", version=2)
    assert isinstance(request, regression_pb2.RegressionRequest)
    assert request.model_spec.signature_name == "r" and request.model_spec.version.value == 2
    assert len(request.input.example_list.examples) == 1
    with pytest.raises(ValueError, match="need at least one example"):
        client.regress_request([])


def test_make_example_kinds_and_errors():
    example = cl.make_example(
        {"b": True, "n": np.int64(3), "f": np.float32(0.5), "arr": np.array([1.0, 2.0]), "e": []}
    )
    feature = example.features.feature
    assert list(feature["b"].int64_list.value) == [1]
    assert list(feature["n"].int64_list.value) == [3]
    assert list(feature["f"].float_list.value) == [0.5]
    assert list(feature["arr"].float_list.value) == [1.0, 2.0]
    assert feature["e"].WhichOneof("kind") is None
    with pytest.raises(ValueError, match="feature 'x': mixes strings and numbers"):
        cl.make_example({"x": ["a", 1]})
    with pytest.raises(ValueError, match="feature 'y': value None"):
        cl.make_example({"y": None})
    with pytest.raises(ValueError, match=r"feature 'z': value \[1\]"):
        cl.make_example({"z": [[1]]})


def test_rest_predict_body_row_and_columnar():
    inputs = {
        "age": [[39.0], [50.5]],
        "workclass": [["Private"], ["State-gov"]],
        "blob": np.array([[b"\xff\x00"], [b"ok"]], dtype=object),
    }
    body = RestClient.predict_body(inputs, "serving_default")
    assert body == {
        "signature_name": "serving_default",
        "instances": [
            {"age": [39.0], "workclass": ["Private"], "blob": [{"b64": "/wA="}]},
            {"age": [50.5], "workclass": ["State-gov"], "blob": [{"b64": "b2s="}]},
        ],
    }
    assert '"age": [39.0]' in json.dumps(body)
    columnar = RestClient.predict_body({"age": [[39.0]], "occupation": ["a", "b"]}, "rank", True)
    assert columnar == {
        "signature_name": "rank",
        "inputs": {"age": [[39.0]], "occupation": ["a", "b"]},
    }
    with pytest.raises(ValueError, match="same first dimension"):
        RestClient.predict_body({"a": [[1.0]], "b": [[1.0], [2.0]]})


def test_rest_examples_body_keeps_floats_floats():
    body = RestClient.examples_body(
        [{"age": 39.0, "hours": 40, "workclass": "Private", "apps": ["a", "b"], "raw": b"\x01"}],
        "classification",
        context={"w": np.float32(2.0), "mixed": [1, 2.5]},
    )
    assert body == {
        "signature_name": "classification",
        "context": {"w": 2.0, "mixed": [1.0, 2.5]},
        "examples": [
            {
                "age": 39.0,
                "hours": 40,
                "workclass": "Private",
                "apps": ["a", "b"],
                "raw": {"b64": "AQ=="},
            }
        ],
    }
    text = json.dumps(body)
    assert '"age": 39.0' in text and '"hours": 40,' in text and '"w": 2.0' in text


def test_rest_parse_predict():
    parse = RestClient.parse_predict
    single = parse({"predictions": [[0.25], [0.75]]}, {"probabilities": "DT_FLOAT"})
    assert list(single) == ["probabilities"]
    assert single["probabilities"].dtype == np.float32
    assert single["probabilities"].tolist() == [[0.25], [0.75]]
    assert list(parse({"predictions": [1.0]})) == ["predictions"]  # no metadata: the key
    multi = parse(
        {"predictions": [{"p": [0.5], "c": [1]}, {"p": [0.25], "c": [0]}]},
        {"p": "DT_FLOAT", "c": "DT_INT64"},
    )
    assert multi["c"].dtype == np.int64 and multi["c"].tolist() == [[1], [0]]
    columnar = parse(
        {"outputs": {"scores": [0.5, 0.25], "top_k_indices": [0, 1], "k_bytes": [{"b64": "YQ=="}]}},
        {"scores": "DT_FLOAT", "top_k_indices": "DT_INT32", "k_bytes": "DT_STRING"},
        output_filter=["scores", "k_bytes"],
    )
    assert list(columnar) == ["scores", "k_bytes"]
    assert columnar["k_bytes"].tolist() == [b"a"]
    with pytest.raises(ServingError, match="INVALID_ARGUMENT: output tensor alias not found"):
        parse({"outputs": {"a": [1.0]}}, output_filter=["b"])


def test_rest_error_body_becomes_serving_error():
    error = cl.error_from_rest(
        404, b'{\n    "error": "Servable not found for request: Latest(half)"\n}'
    )
    assert isinstance(error, ServingError)
    assert error.code == "NOT_FOUND" and error.http_status == 404
    assert error.message == "Servable not found for request: Latest(half)"
    assert str(error) == "NOT_FOUND: Servable not found for request: Latest(half) (HTTP 404)"
    assert cl.error_from_rest(502, "<html>bad gateway</html>").message == "<html>bad gateway</html>"
    assert cl.error_from_rest(502, "").code == "UNKNOWN"
    assert cl.error_from_rest(503, '{"error": "x"}').code == "UNAVAILABLE"


def test_rest_has_no_multi_inference():
    with pytest.raises(NotImplementedError, match="REST API has no MultiInference"):
        RestClient("localhost:8501", MODEL).multi_inference([{"a": 1.0}])


def test_rank_inputs_shapes():
    inputs = cl._rank_inputs({"age": 39.0, "gender": "Male"}, {"occupation": ["a", "b", "c"]})
    assert inputs["age"].shape == (1, 1) and inputs["gender"].shape == (1, 1)
    assert inputs["occupation"].shape == (3, 1)
    with pytest.raises(ValueError, match=r"features \['age'\] are both in context"):
        cl._rank_inputs({"age": 1.0}, {"age": [1.0, 2.0]})
    with pytest.raises(ValueError, match="different lengths"):
        cl._rank_inputs({}, {"a": [1.0, 2.0], "b": ["x"]})
    with pytest.raises(ValueError, match="context feature 'a' must be one value"):
        cl._rank_inputs({"a": [1.0, 2.0]}, {"b": ["x"]})


# ----------------------------------------------------------------------------------------
# REST against a scripted HTTP server.


class _ScriptedHTTP:
    """Answers requests from a script of (status, body, delay_s); records every request."""

    def __init__(self, script, port=None, start_after=0.0):
        self.script = list(script)
        self.requests = []
        self.port = port or _free_port()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append((self.command, self.path, body))
                status, answer, delay = outer.script.pop(0) if outer.script else (500, {}, 0)
                time.sleep(delay)
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout)

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = None

        def start():
            time.sleep(start_after)
            self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
            self.server.serve_forever(poll_interval=0.05)

        self.thread = threading.Thread(target=start, daemon=True)
        self.thread.start()
        if not start_after:
            while self.server is None:
                time.sleep(0.01)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.thread.join(timeout=5) if self.server is None else None
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


REST_METADATA = {
    "model_spec": {"name": MODEL, "signature_name": "", "version": "2"},
    "metadata": {
        "signature_def": {
            "signature_def": {
                "serving_default": {
                    "inputs": {"age": {"dtype": "DT_FLOAT", "name": "serving_default_age:0"}},
                    "outputs": {"probabilities": {"dtype": "DT_FLOAT", "name": "x:0"}},
                    "method_name": "tensorflow/serving/predict",
                }
            }
        }
    },
}


def test_rest_predict_retries_503_and_names_the_single_output():
    server = _ScriptedHTTP(
        [
            (503, {"error": "overloaded"}, 0),
            (200, {"predictions": [[0.25], [0.75]]}, 0),
            (200, REST_METADATA, 0),
        ]
    )
    try:
        client = RestClient(server.url, MODEL, retries=2, backoff=0.01)
        out = client.predict({"age": [[39.0], [50.0]]}, version=2)
        assert list(out) == ["probabilities"] and out["probabilities"].dtype == np.float32
        assert out["probabilities"].tolist() == [[0.25], [0.75]]
        (m1, p1, b1), (m2, p2, b2), (m3, p3, _) = server.requests
        assert (m1, p1) == (m2, p2) == ("POST", "/v1/models/census/versions/2:predict")
        assert json.loads(b1) == {
            "signature_name": "serving_default",
            "instances": [{"age": [39.0]}, {"age": [50.0]}],
        }
        assert (m3, p3) == ("GET", "/v1/models/census/versions/2/metadata")
    finally:
        server.close()


def test_rest_classify_regress_rank_status():
    server = _ScriptedHTTP(
        [
            (200, {"results": [[["0", 0.75], ["1", 0.25]]]}, 0),
            (200, {"results": [0.25]}, 0),
            (200, {"outputs": {"scores": [0.5, 0.25], "top_k_indices": [0, 1]}}, 0),
            (404, {"error": "no metadata here"}, 0),
            (200, {"model_version_status": [{"version": "1", "state": "AVAILABLE"}]}, 0),
        ]
    )
    try:
        client = RestClient(server.url, MODEL, retries=0)
        example = {"age": 39.0, "hours_per_week": 40, "workclass": "Private"}
        assert client.classify([example], label="stable") == [[("0", 0.75), ("1", 0.25)]]
        assert client.regress([example], context={"race": "White"}) == [0.25]
        ranked = client.rank({"age": 39.0}, {"occupation": ["a", "b"]})
        assert ranked["scores"].tolist() == [0.5, 0.25]
        assert ranked["top_k_indices"].tolist() == [0, 1]
        assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
        paths = [(m, p) for m, p, _ in server.requests]
        assert paths == [
            ("POST", "/v1/models/census/labels/stable:classify"),
            ("POST", "/v1/models/census:regress"),
            ("POST", "/v1/models/census:predict"),
            ("GET", "/v1/models/census/metadata"),
            ("GET", "/v1/models/census"),
        ]
        classify_body = server.requests[0][2].decode()
        assert '"age": 39.0' in classify_body and '"hours_per_week": 40' in classify_body
        assert json.loads(server.requests[1][2])["context"] == {"race": "White"}
        assert json.loads(server.requests[2][2])["inputs"] == {
            "age": [[39.0]],
            "occupation": [["a"], ["b"]],
        }
    finally:
        server.close()


def test_rest_errors_timeouts_and_refused_connections():
    message = 'Serving signature name: "nope" not found in signature def'
    server = _ScriptedHTTP([(400, {"error": message}, 0), (200, {"results": [1.0]}, 1.0)])
    try:
        client = RestClient(server.url, MODEL, timeout=0.2, retries=3)
        with pytest.raises(ServingError) as e:
            client.regress([{"a": 1.0}], signature_name="nope")
        assert (e.value.code, e.value.message, e.value.http_status) == (
            "INVALID_ARGUMENT",
            message,
            400,
        )
        assert len(server.requests) == 1  # not retried
        start = time.monotonic()
        with pytest.raises(ServingError, match="DEADLINE_EXCEEDED"):
            client.regress([{"a": 1.0}])
        assert time.monotonic() - start < 0.9
    finally:
        server.close()
    closed = RestClient(f"http://127.0.0.1:{_free_port()}", MODEL, retries=1, backoff=0.01)
    with pytest.raises(ServingError, match="UNAVAILABLE.*refused"):
        closed.status()


def test_rest_retries_until_the_server_is_up():
    server = _ScriptedHTTP([(200, {"results": [0.5]}, 0)], start_after=0.3)
    try:
        client = RestClient(server.url, MODEL, retries=8, backoff=0.05)
        assert client.regress([{"a": 1.0}]) == [0.5]
    finally:
        server.close()


# ----------------------------------------------------------------------------------------
# gRPC against a real SavedModel.


class _Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """TF Serving's PredictionService for one SavedModel (version 1, label 'stable')."""

    def __init__(self, export_dir, loaded, delay=0.0):
        self.model = loaded
        self.delay = delay
        self.calls = 0
        saved = saved_model_pb2.SavedModel()
        with open(os.path.join(export_dir, "saved_model.pb"), "rb") as f:
            saved.ParseFromString(f.read())
        self.signature_defs = saved.meta_graphs[0].signature_def

    def _check(self, spec, context):
        self.calls += 1
        time.sleep(self.delay)
        if spec.name != MODEL:
            context.abort(
                grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({spec.name})"
            )
        if spec.HasField("version") and spec.version.value != 1:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: Specific({spec.name}, {spec.version.value})",
            )
        if spec.version_label and spec.version_label != "stable":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label")

    def _run(self, name, feeds, context):
        if name not in self.model.signatures:
            context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.'
            )
        fn = self.model.signatures[name]
        expected = set(fn.structured_input_signature[1])
        if set(feeds) != expected:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"input size does not match signature: {len(feeds)}!={len(expected)}",
            )
        try:
            return {k: v.numpy() for k, v in fn(**feeds).items()}
        except (tf.errors.OpError, TypeError, ValueError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e)[:500])

    def _serialized(self, input_msg):
        kind = input_msg.WhichOneof("kind")
        if kind == "example_list":
            return [e.SerializeToString() for e in input_msg.example_list.examples]
        with_context = input_msg.example_list_with_context
        prefix = with_context.context.SerializeToString()
        return [prefix + e.SerializeToString() for e in with_context.examples]

    def _classify(self, spec, input_msg, context, result):
        out = self._run(
            spec.signature_name, {"inputs": tf.constant(self._serialized(input_msg))}, context
        )
        for classes, scores in zip(out["classes"], out["scores"]):
            c = result.classifications.add()
            for label, score in zip(classes, scores):
                c.classes.add(label=label.decode(), score=score)

    def _regress(self, spec, input_msg, context, result):
        out = self._run(
            spec.signature_name, {"inputs": tf.constant(self._serialized(input_msg))}, context
        )
        for value in out["outputs"]:
            result.regressions.add(value=value)

    def Predict(self, request, context):
        self._check(request.model_spec, context)
        name = request.model_spec.signature_name or "serving_default"
        feeds = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        out = self._run(name, feeds, context)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = MODEL
        response.model_spec.version.value = 1
        response.model_spec.signature_name = name
        for key, value in out.items():
            if not request.output_filter or key in request.output_filter:
                response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def Classify(self, request, context):
        self._check(request.model_spec, context)
        response = classification_pb2.ClassificationResponse()
        self._classify(request.model_spec, request.input, context, response.result)
        return response

    def Regress(self, request, context):
        self._check(request.model_spec, context)
        response = regression_pb2.RegressionResponse()
        self._regress(request.model_spec, request.input, context, response.result)
        return response

    def MultiInference(self, request, context):
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            self._check(task.model_spec, context)
            result = response.results.add()
            result.model_spec.CopyFrom(task.model_spec)
            if task.method_name == "tensorflow/serving/classify":
                self._classify(
                    task.model_spec, request.input, context, result.classification_result
                )
            elif task.method_name == "tensorflow/serving/regress":
                self._regress(task.model_spec, request.input, context, result.regression_result)
            else:
                context.abort(grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name")
        return response

    def GetModelMetadata(self, request, context):
        self._check(request.model_spec, context)
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field not supported")
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = MODEL
        response.model_spec.version.value = 1
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, value in self.signature_defs.items():
            signatures.signature_def[key].CopyFrom(value)
        response.metadata["signature_def"].Pack(signatures)
        return response


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def GetModelStatus(self, request, context):
        response = get_model_status_pb2.GetModelStatusResponse()
        status = response.model_version_status.add(version=1)
        status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        status.status.SetInParent()  # OK, as TF Serving answers
        return response


def _start_grpc(servicer, port=None):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(), server)
    port = server.add_insecure_port(f"127.0.0.1:{port or 0}")
    server.start()
    return server, port


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(export dir, loaded SavedModel, spec, "host:port" of a gRPC server running it)."""
    from wdl_tf import config as config_lib
    from wdl_tf import train_lib

    tmp = tmp_path_factory.mktemp("served")
    result = train_lib.train_and_evaluate(
        config_lib.preset(
            "test", model_dir=str(tmp / "model"), export_base=str(tmp / "export"), epochs=1
        )
    )
    export = result.export_path
    loaded = tf.saved_model.load(export)
    spec = fs.load(os.path.join(export, "assets.extra", "feature_spec.json"))
    servicer = _Servicer(export, loaded)
    server, port = _start_grpc(servicer)
    yield {"export": export, "model": loaded, "spec": spec, "target": f"127.0.0.1:{port}"}
    server.stop(None)


def _direct(served, rows, signature="serving_default"):
    spec = served["spec"]
    feeds = {}
    for f in spec.features:
        values = [[r[f.name]] for r in rows]
        feeds[f.name] = tf.constant(values, tf.float32 if f.kind == fs.NUMERIC else tf.string)
    return {k: v.numpy() for k, v in served["model"].signatures[signature](**feeds).items()}


def test_grpc_predict_matches_the_saved_model(served):
    rows = _census_rows(5)
    with GrpcClient(served["target"], MODEL) as client:
        out = client.predict(_columns(rows))
        assert list(out) == ["probabilities"]
        assert out["probabilities"].dtype == np.float32 and out["probabilities"].shape == (5, 1)
        np.testing.assert_allclose(out["probabilities"], _direct(served, rows)["probabilities"])
        assert client.predict(_columns(rows), version=1)["probabilities"].shape == (5, 1)
        assert client.predict(_columns(rows), label="stable")["probabilities"].shape == (5, 1)
        filtered = client.predict(_columns(rows), "predict", output_filter=["class_ids"])
        assert list(filtered) == ["class_ids"] and filtered["class_ids"].dtype == np.int64
        np.testing.assert_array_equal(
            filtered["class_ids"], (out["probabilities"] > 0.5).astype(np.int64)
        )


def test_grpc_classify_regress_multi_inference(served):
    rows = _census_rows(4)
    probabilities = _direct(served, rows)["probabilities"].reshape(-1)
    # Integer literals for numeric features (int64 lists), as REST makes of "39".
    examples = [{k: int(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows]
    with GrpcClient(served["target"], MODEL) as client:
        classes = client.classify(examples)
        assert [[c for c, _ in row] for row in classes] == [["0", "1"]] * 4
        np.testing.assert_allclose([row[1][1] for row in classes], probabilities, atol=1e-5)
        np.testing.assert_allclose(client.regress(rows), probabilities, atol=1e-5)
        # Shared features in the context give the same answers.
        shared = ("race", "native_country", "gender")
        context = {k: rows[0][k] for k in shared}
        same = [dict(r, **context) for r in rows]
        rest = [{k: v for k, v in r.items() if k not in shared} for r in same]
        np.testing.assert_allclose(
            client.regress(rest, context=context), client.regress(same), atol=1e-6
        )
        both = client.multi_inference(rows)
        assert list(both) == ["classification", "regression"]
        np.testing.assert_allclose(both["regression"], probabilities, atol=1e-5)
        np.testing.assert_allclose(
            [r[1][1] for r in both["classification"]], probabilities, atol=1e-5
        )


def test_grpc_rank_scores_all_candidates(served):
    user = _census_rows(1)[0]
    occupations = ["Tech-support", "Sales", "Exec-managerial", "Craft-repair", "Adm-clerical"]
    context = {k: v for k, v in user.items() if k != "occupation"}
    with GrpcClient(served["target"], MODEL) as client:
        ranked = client.rank(context, {"occupation": occupations})
    expected = _direct(served, [dict(user, occupation=o) for o in occupations])
    np.testing.assert_allclose(ranked["scores"], expected["probabilities"].reshape(-1), atol=1e-6)
    order = np.argsort(-ranked["scores"], kind="stable")
    np.testing.assert_allclose(ranked["top_k_scores"], ranked["scores"][order], atol=1e-7)
    assert sorted(ranked["top_k_indices"].tolist()) == list(range(5))


def test_grpc_metadata_and_status(served):
    with GrpcClient(served["target"], MODEL) as client:
        metadata = client.metadata()
        status = client.status()
    assert metadata["model_spec"]["name"] == MODEL and metadata["model_spec"]["version"] == "1"
    inputs, outputs = cl.signature_io(metadata, "serving_default")
    assert inputs["age"] == "DT_FLOAT" and inputs["workclass"] == "DT_STRING"
    assert outputs == {"probabilities": "DT_FLOAT"}
    assert set(cl.signature_io(metadata, "rank")[1]) == {"scores", "top_k_indices", "top_k_scores"}
    with pytest.raises(ValueError, match="signature 'nope' is not in the model's signatures"):
        cl.signature_io(metadata, "nope")
    assert status == {
        "model_version_status": [
            {
                "version": "1",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }


def test_grpc_errors_carry_the_servers_message(served):
    rows = _census_rows(1)
    with GrpcClient(served["target"], MODEL, retries=0) as client:
        with pytest.raises(ServingError) as e:
            client.predict(_columns(rows), signature_name="nope")
        assert e.value.code == "FAILED_PRECONDITION"
        assert e.value.message == 'Serving signature key "nope" not found.'
        with pytest.raises(ServingError, match="NOT_FOUND: .*Specific\\(census, 5\\)"):
            client.predict(_columns(rows), version=5)
        with pytest.raises(ServingError, match="input size does not match signature"):
            client.predict({"age": [[39.0]]})
    with GrpcClient(served["target"], "nope") as client:
        with pytest.raises(ServingError, match="NOT_FOUND: Servable not found"):
            client.regress(rows)


def test_grpc_retries_until_the_server_is_up_and_times_out(served):
    rows = _census_rows(2)
    port = _free_port()
    target = f"127.0.0.1:{port}"
    with GrpcClient(target, MODEL, retries=0) as client:
        with pytest.raises(ServingError, match="UNAVAILABLE"):
            client.regress(rows)

    late = {}

    def start_late():
        time.sleep(0.5)
        late["server"], _ = _start_grpc(_Servicer(served["export"], served["model"]), port)

    thread = threading.Thread(target=start_late)
    thread.start()
    try:
        with GrpcClient(target, MODEL, retries=8, backoff=0.1) as client:
            assert len(client.regress(rows)) == 2
    finally:
        thread.join()
        late["server"].stop(None)

    slow_server, slow_port = _start_grpc(_Servicer(served["export"], served["model"], delay=1.5))
    try:
        with GrpcClient(f"127.0.0.1:{slow_port}", MODEL, timeout=0.3) as client:
            start = time.monotonic()
            with pytest.raises(ServingError, match="DEADLINE_EXCEEDED"):
                client.regress(rows)
            assert time.monotonic() - start < 1.2  # not retried
    finally:
        slow_server.stop(None)


# ----------------------------------------------------------------------------------------
# scripts/predict.py


def test_predict_script_scores_json_and_csv(served, tmp_path, capsys):
    predict = _load_script("predict")
    rows = _census_rows(4)
    expected = _direct(served, rows)["probabilities"].reshape(-1)

    as_json = tmp_path / "rows.json"
    as_json.write_text(json.dumps([dict(r, income_bracket="<=50K") for r in rows]))
    with_header = tmp_path / "rows.csv"
    with open(with_header, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # The census layout without a header: one line with the label, the others without.
    with gzip.open(datasets.CENSUS_TEST, "rt") as f:
        lines = [next(f) for _ in range(5)]  # a comment line, then 4 rows
    lines[2:] = [line.rsplit(",", 1)[0] + "\n" for line in lines[2:]]
    headerless = tmp_path / "rows.data.gz"
    with gzip.open(headerless, "wt") as f:
        f.write("".join(lines))

    def run(**kwargs):
        out = io.StringIO()
        code = predict.run(server=served["target"], out=out, **kwargs)
        return code, [float(v) for v in out.getvalue().split()]

    for kwargs in (
        {"input_path": str(as_json)},  # types from the model's metadata
        {"input_path": str(with_header)},
        {"input_path": str(with_header), "feature_spec": "census"},
        {"input_path": str(headerless), "feature_spec": "census"},
        {"input_path": str(as_json), "signature": "regression", "feature_spec": "census"},
        {"input_path": str(with_header), "signature": "classification", "label": "stable"},
    ):
        code, scores = run(**kwargs)
        assert code == 0, (kwargs, capsys.readouterr().err)
        np.testing.assert_allclose(scores, expected, atol=2e-6, err_msg=str(kwargs))

    code, scores = run(input_path=str(as_json), model_name="nope")
    assert code == 1 and not scores
    assert (
        "error: NOT_FOUND: Servable not found for request: Latest(nope)" in capsys.readouterr().err
    )
    code, _ = run(input_path=str(as_json), version=1, label="stable")
    assert code == 2 and "not both" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"age": 1}))
    assert run(input_path=str(bad))[0] == 2
    assert "expected a JSON list of row objects" in capsys.readouterr().err


def test_b64_helper_round_trip():
    assert cl._from_json_value(cl._json_value(b"\x00\xff")) == b"\x00\xff"
    assert base64.b64decode(cl._json_value(np.bytes_(b"ab"))["b64"]) == b"ab"
