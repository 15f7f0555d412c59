"""The local TF-Serving-compatible server against a real exported Wide & Deep model.

Covers the contract in tf_serving/README.md (Contract rules): REST predict (row/columnar),
classify/regress, status, metadata and error answers; gRPC Predict/Classify/Regress/
MultiInference/GetModelMetadata/GetModelStatus; version policies, labels, hot reload,
broken versions, batching; and the pure helpers (config parsing, JSON conversions).
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from tf_serving import server as server_lib

from .conftest import MAX_BODY_BYTES, copy_version, rest, version_states, wait_for

ATOL = 1e-5
CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def _row_json(served, row):
    return {name: [row[name]] for name in served.inputs}


def _int_literals(served, row):
    """A tf.Example JSON object with integer literals for whole-number float features."""
    out = {}
    for name, dtype in served.inputs.items():
        value = row[name]
        out[name] = int(value) if dtype.is_floating and float(value).is_integer() else value
    return out


def _predict_request(served, model="census", signature="", rows=None, version=None, label=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    for name, value in served.columns(rows).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def _expected_probabilities(served, rows=None):
    return served.run_reference("serving_default", **served.columns(rows))["probabilities"]


# ----------------------------------------------------------------------------------------
# Predict.


def test_rest_predict_row_format_matches_in_process_model(served):
    status, body = rest(
        served.url,
        "POST",
        "/v1/models/census:predict",
        {"instances": [_row_json(served, r) for r in served.rows]},
    )
    assert status == 200, body
    # One output ("probabilities"): the name is omitted, one value per row.
    np.testing.assert_allclose(
        np.array(body["predictions"]), _expected_probabilities(served), atol=ATOL
    )


def test_rest_predict_columnar_format_and_b64_strings(served):
    columns = {name: [[r[name]] for r in served.rows] for name in served.inputs}
    string_input = next(n for n, d in served.inputs.items() if d == tf.string)
    columns[string_input] = [
        [{"b64": base64.b64encode(r[string_input].encode()).decode()}] for r in served.rows
    ]
    status, body = rest(
        served.url, "POST", "/v1/models/census/versions/1:predict", {"inputs": columns}
    )
    assert status == 200, body
    np.testing.assert_allclose(
        np.array(body["outputs"]), _expected_probabilities(served), atol=ATOL
    )


def test_rest_predict_multiple_outputs(served):
    rows = [_row_json(served, r) for r in served.rows]
    expected = served.run_reference("predict", **served.columns())
    status, body = rest(
        served.url,
        "POST",
        "/v1/models/census:predict",
        {"signature_name": "predict", "instances": rows},
    )
    assert status == 200, body
    assert [sorted(p) for p in body["predictions"]] == [["class_ids", "probabilities"]] * 3
    np.testing.assert_allclose(
        [p["probabilities"] for p in body["predictions"]], expected["probabilities"], atol=ATOL
    )
    assert [p["class_ids"] for p in body["predictions"]] == expected["class_ids"].tolist()
    status, body = rest(
        served.url,
        "POST",
        "/v1/models/census:predict",
        {
            "signature_name": "predict",
            "inputs": {n: [[r[n]] for r in served.rows] for n in served.inputs},
        },
    )
    assert status == 200, body
    assert sorted(body["outputs"]) == ["class_ids", "probabilities"]
    np.testing.assert_allclose(
        body["outputs"]["probabilities"], expected["probabilities"], atol=ATOL
    )


def test_grpc_predict_matches_in_process_model(served, prediction_stub):
    response = prediction_stub.Predict(_predict_request(served), timeout=60)
    assert response.model_spec.name == "census"
    assert response.model_spec.version.value == 2  # latest of the two versions
    assert response.model_spec.signature_name == "serving_default"
    got = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(got, _expected_probabilities(served), atol=ATOL)

    request = _predict_request(served, signature="predict")
    request.output_filter.append("class_ids")
    response = prediction_stub.Predict(request, timeout=60)
    assert list(response.outputs) == ["class_ids"]
    assert response.model_spec.signature_name == "predict"


def test_grpc_rank_context_row_and_candidates(served, prediction_stub):
    """rank: each feature has 1 row (context, broadcast) or N rows (the candidates)."""
    candidates = [dict(served.rows[i % 3], age=20.0 + 7 * i) for i in range(5)]
    columns = served.columns(candidates)
    context_features = [n for n, d in served.inputs.items() if d == tf.string][:2]
    for name in context_features:  # user/context features: one row
        columns[name] = columns[name][:1]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "census"
    request.model_spec.signature_name = "rank"
    for name, value in columns.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    response = prediction_stub.Predict(request, timeout=60)
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    expected = served.run_reference("rank", **columns)
    # Batch-safe rank: only per-candidate outputs (top-k is picked by the client).
    assert sorted(outputs) == ["scores"]
    assert outputs["scores"].shape == (5,)
    np.testing.assert_allclose(outputs["scores"], expected["scores"], atol=ATOL)
    # The same scores as scoring each candidate with the context copied into it.
    full = served.columns(
        [dict(c, **{n: candidates[0][n] for n in context_features}) for c in candidates]
    )
    np.testing.assert_allclose(
        outputs["scores"],
        served.run_reference("serving_default", **full)["probabilities"].reshape(-1),
        atol=ATOL,
    )


def test_batching_concurrent_predict_requests(served, prediction_stub):
    """Concurrent `predict` requests are merged by the batcher; each gets its own rows."""
    before = served.server.batching_stats
    sizes = [1, 2, 3, 1, 2, 3, 1, 2]
    barrier = threading.Barrier(len(sizes))
    results, errors = {}, []

    def call(i, n):
        rows = [dict(served.rows[(i + j) % 3], age=18.0 + i * 5 + j) for j in range(n)]
        request = _predict_request(served, signature="predict", rows=rows)
        barrier.wait(30)
        try:
            response = prediction_stub.Predict(request, timeout=60)
            results[i] = (rows, tf.make_ndarray(response.outputs["probabilities"]))
        except grpc.RpcError as e:
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i, n)) for i, n in enumerate(sizes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    for i, (rows, got) in results.items():
        assert got.shape == (sizes[i], 1)
        np.testing.assert_allclose(got, _expected_probabilities(served, rows), atol=ATOL)
    after = served.server.batching_stats
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == len(sizes)
    assert batches < requests  # at least two requests shared one call


# ----------------------------------------------------------------------------------------
# Classify, regress, multi-inference.


def test_rest_classify_and_regress_with_integer_literals(served):
    """JSON `39` becomes an int64_list; the signatures accept it for float features."""
    examples = [_int_literals(served, r) for r in served.rows]
    expected = _expected_probabilities(served).reshape(-1)
    status, body = rest(
        served.url,
        "POST",
        "/v1/models/census:classify",
        {"signature_name": "classification", "examples": examples},
    )
    assert status == 200, body
    assert [[c[0] for c in r] for r in body["results"]] == [["0", "1"]] * 3
    np.testing.assert_allclose([r[1][1] for r in body["results"]], expected, atol=ATOL)
    np.testing.assert_allclose([r[0][1] for r in body["results"]], 1 - expected, atol=ATOL)

    status, body = rest(
        served.url,
        "POST",
        "/v1/models/census/labels/stable:regress",
        {"signature_name": "regression", "examples": examples},
    )
    assert status == 200, body
    np.testing.assert_allclose(body["results"], expected, atol=ATOL)


def test_rest_regress_with_context(served):
    string_features = [n for n, d in served.inputs.items() if d == tf.string]
    shared = {name: served.rows[0][name] for name in string_features}
    examples = [
        {k: v for k, v in _int_literals(served, r).items() if k not in shared} for r in served.rows
    ]
    rows = [dict(r, **shared) for r in served.rows]
    status, body = rest(
        served.url,
        "POST",
        "/v1/models/census:regress",
        {"signature_name": "regression", "context": shared, "examples": examples},
    )
    assert status == 200, body
    np.testing.assert_allclose(
        body["results"], _expected_probabilities(served, rows).reshape(-1), atol=ATOL
    )


def test_grpc_classify_regress_and_reference(served, prediction_stub):
    examples = served.examples()
    serialized = np.array([e.SerializeToString() for e in examples], dtype=object)
    expected = served.run_reference("classification", inputs=serialized)

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "census"
    request.model_spec.signature_name = "classification"
    request.input.example_list.examples.extend(examples)
    response = prediction_stub.Classify(request, timeout=60)
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "classification"
    assert len(response.result.classifications) == 3
    for i, classification in enumerate(response.result.classifications):
        assert [c.label for c in classification.classes] == ["0", "1"]
        np.testing.assert_allclose(
            [c.score for c in classification.classes], expected["scores"][i], atol=ATOL
        )

    # example_list_with_context: context features merged into every example.
    context_name = next(n for n, d in served.inputs.items() if d == tf.string)
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "census"
    request.model_spec.signature_name = "regression"
    request.model_spec.version.value = 1
    lists = request.input.example_list_with_context
    lists.context.features.feature[context_name].bytes_list.value.append(b"Shared-value")
    for example in examples:
        stripped = tf.train.Example()
        stripped.CopyFrom(example)
        del stripped.features.feature[context_name]
        lists.examples.append(stripped)
    response = prediction_stub.Regress(request, timeout=60)
    assert response.model_spec.version.value == 1
    rows = [dict(r, **{context_name: "Shared-value"}) for r in served.rows]
    np.testing.assert_allclose(
        [r.value for r in response.result.regressions],
        _expected_probabilities(served, rows).reshape(-1),
        atol=ATOL,
    )


def test_grpc_multi_inference(served, prediction_stub):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regression", REGRESS), ("classification", CLASSIFY)):
        task = request.tasks.add()
        task.model_spec.name = "census"
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.extend(served.examples())
    response = prediction_stub.MultiInference(request, timeout=60)
    expected = _expected_probabilities(served).reshape(-1)
    regression, classification = response.results
    assert regression.model_spec.signature_name == "regression"
    assert regression.model_spec.version.value == 2
    np.testing.assert_allclose(
        [r.value for r in regression.regression_result.regressions], expected, atol=ATOL
    )
    np.testing.assert_allclose(
        [c.classes[1].score for c in classification.classification_result.classifications],
        expected,
        atol=ATOL,
    )

    request.tasks[0].method_name = "tensorflow/serving/predict"
    with pytest.raises(grpc.RpcError) as e:
        prediction_stub.MultiInference(request, timeout=60)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Unsupported signature method_name" in e.value.details()


# ----------------------------------------------------------------------------------------
# Metadata and status.


def test_rest_metadata(served):
    status, body = rest(served.url, "GET", "/v1/models/census/versions/1/metadata")
    assert status == 200, body
    assert body["model_spec"] == {"name": "census", "signature_name": "", "version": "1"}
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert {"serving_default", "predict", "classification", "regression", "rank"} <= set(signatures)
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert set(default["inputs"]) == set(served.inputs)
    some_float = next(n for n, d in served.inputs.items() if d == tf.float32)
    assert default["inputs"][some_float]["dtype"] == "DT_FLOAT"
    assert default["inputs"][some_float]["tensor_shape"]["dim"][0]["size"] == "-1"
    assert signatures["classification"]["inputs"]["inputs"]["dtype"] == "DT_STRING"

    status, body = rest(served.url, "GET", "/v1/models/census/labels/canary/metadata")
    assert status == 200 and body["model_spec"]["version"] == "2"


def test_grpc_metadata(served, prediction_stub):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "census"
    request.metadata_field.append("signature_def")
    response = prediction_stub.GetModelMetadata(request, timeout=60)
    assert response.model_spec.name == "census"
    assert response.model_spec.version.value == 2
    signature_defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signature_defs)
    assert {"serving_default", "predict", "classification", "regression", "rank"} <= set(
        signature_defs.signature_def
    )
    rank = signature_defs.signature_def["rank"]
    assert set(rank.outputs) == {"scores"}  # batch-safe: per-candidate outputs only

    del request.metadata_field[:]
    with pytest.raises(grpc.RpcError) as e:
        prediction_stub.GetModelMetadata(request, timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "must specify at least one metadata_field" in e.value.details()


def test_status_rest_and_grpc(served, model_stub):
    status, body = rest(served.url, "GET", "/v1/models/census")
    assert status == 200
    assert body == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("2", "1")
        ]
    }
    # get_model_status_impl.cc looks only at model_spec.version: a label is ignored.
    for label in ("stable", "nope"):
        status, body = rest(served.url, "GET", f"/v1/models/census/labels/{label}")
        assert status == 200 and [v["version"] for v in body["model_version_status"]] == ["2", "1"]

    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "census"
    request.model_spec.version.value = 2
    response = model_stub.GetModelStatus(request, timeout=60)
    (only,) = response.model_version_status
    assert only.version == 2
    assert only.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE
    assert only.status.error_code == 0

    request.model_spec.name = "nope"
    with pytest.raises(grpc.RpcError) as e:
        model_stub.GetModelStatus(request, timeout=60)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


# ----------------------------------------------------------------------------------------
# Versions and labels.


def test_version_and_label_selection(served, prediction_stub):
    for kwargs, version in (
        ({}, 2),
        ({"version": 1}, 1),
        ({"version": 2}, 2),
        ({"label": "stable"}, 1),
        ({"label": "canary"}, 2),
    ):
        response = prediction_stub.Predict(_predict_request(served, **kwargs), timeout=60)
        assert response.model_spec.version.value == version, kwargs
    row = {"instances": [_row_json(served, served.rows[0])]}
    assert rest(served.url, "POST", "/v1/models/census/versions/1:predict", row)[0] == 200
    assert rest(served.url, "POST", "/v1/models/census/labels/canary:predict", row)[0] == 200

    with pytest.raises(grpc.RpcError) as e:
        prediction_stub.Predict(_predict_request(served, label="nope"), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details() == "Unrecognized servable version label: nope"
    with pytest.raises(grpc.RpcError) as e:
        prediction_stub.Predict(_predict_request(served, version=7), timeout=60)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    assert e.value.details() == "Servable not found for request: Specific(census, 7)"


def _latest_dir_version(base: str) -> int:
    return max(server_lib.scan_versions(base))


def _state(served, model: str, version: int) -> str:
    return version_states(served.server, model).get(version, ("",))[0]


def _serving_version(served, prediction_stub, model="reload") -> int:
    response = prediction_stub.Predict(_predict_request(served, model=model), timeout=60)
    return response.model_spec.version.value


def test_hot_reload_keeps_serving(served, prediction_stub):
    base = served.reload_base
    old = _serving_version(served, prediction_stub)
    new = _latest_dir_version(base) + 1
    body = {"instances": [_row_json(served, served.rows[0])]}
    stop = threading.Event()
    failures, done = [], []

    def hammer():
        while not stop.is_set():
            try:
                status, answer = rest(served.url, "POST", "/v1/models/reload:predict", body)
                if status != 200:
                    failures.append((status, answer))
            except Exception as e:  # noqa: BLE001 - any failure fails the test
                failures.append(e)
            done.append(1)

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        wait_for(lambda: len(done) >= 2, 60)
        copy_version(served.export_path, base, new)
        wait_for(lambda: _state(served, "reload", new) == "AVAILABLE", 120)
        assert _serving_version(served, prediction_stub) == new
        wait_for(lambda: _state(served, "reload", old) == "END", 30)
        count = len(done)
        wait_for(lambda: len(done) >= count + 2, 60)  # still serving after the switch
    finally:
        stop.set()
        thread.join(60)
    assert not failures
    states = version_states(served.server, "reload")
    assert states[new] == ("AVAILABLE", "OK", "")
    assert states[old][:2] == ("END", "OK")


def test_broken_version_keeps_previous_serving(served, prediction_stub):
    base = served.reload_base
    serving = _serving_version(served, prediction_stub)
    bad = _latest_dir_version(base) + 1
    tmp = os.path.join(base, "temp-broken")
    os.makedirs(tmp)
    with open(os.path.join(tmp, "saved_model.pb"), "wb") as f:
        f.write(b"\x0a\xff\xff\xff\xff\x0fthis is not a SavedModel")
    os.rename(tmp, os.path.join(base, str(bad)))
    try:
        wait_for(lambda: _state(served, "reload", bad) == "END", 60)
        state, code, message = version_states(served.server, "reload")[bad]
        assert code == "DATA_LOSS"
        assert "saved_model.pb" in message
        assert version_states(served.server, "reload")[serving][0] == "AVAILABLE"
        assert _serving_version(served, prediction_stub) == serving
        status, body = rest(
            served.url,
            "POST",
            "/v1/models/reload:predict",
            {"instances": [_row_json(served, served.rows[0])]},
        )
        assert status == 200, body
    finally:
        doomed = os.path.join(base, "temp-removed-broken")
        os.rename(os.path.join(base, str(bad)), doomed)
        shutil.rmtree(doomed)


# ----------------------------------------------------------------------------------------
# REST errors: messages and HTTP codes as TF Serving's (contract §1).


def _row(served):
    return _row_json(served, served.rows[0])


REST_ERRORS = [
    # (method, path, body(served) | bytes | None, HTTP code, expected message part)
    (
        "GET",
        "/v1/models/census/foo:predict",
        None,
        400,
        "Malformed request: GET /v1/models/census/foo:predict",
    ),
    (
        "POST",
        "/v1/models/census/metadata",
        lambda s: {},
        400,
        "Malformed request: POST /v1/models/census/metadata",
    ),
    ("GET", "/v1/models/census/versions/HELLO", None, 400, "Malformed request"),
    ("GET", "/v1/models/census/versions/1/labels/x", None, 400, "Malformed request"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    (
        "POST",
        "/v1/models/nope:predict",
        lambda s: {"instances": [_row(s)]},
        404,
        "Servable not found for request: Latest(nope)",
    ),
    (
        "POST",
        "/v1/models/census/versions/99:predict",
        lambda s: {"instances": [_row(s)]},
        404,
        "Servable not found for request: Specific(census, 99)",
    ),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    (
        "GET",
        "/v1/models/census/versions/99",
        None,
        404,
        "Could not find version 99 of model census",
    ),
    (
        "POST",
        "/v1/models/census/labels/nope:predict",
        lambda s: {"instances": [_row(s)]},
        400,
        "Unrecognized servable version label: nope",
    ),
    ("POST", "/v1/models/census:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/census:predict", b"{instances: [1, 2]}", 400, "JSON Parse error: "),
    ("POST", "/v1/models/census:predict", b"[1, 2]", 400, "Is not object"),
    (
        "POST",
        "/v1/models/census:predict",
        lambda s: {"instances": [_row(s)], "inputs": _row(s)},
        400,
        "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist",
    ),
    (
        "POST",
        "/v1/models/census:predict",
        lambda s: {"signature_name": "serving_default"},
        400,
        "Missing 'inputs' or 'instances' key",
    ),
    (
        "POST",
        "/v1/models/census:predict",
        lambda s: {"instances": _row(s)},
        400,
        "Expecting 'instances' to be an list/array",
    ),
    (
        "POST",
        "/v1/models/census:predict",
        lambda s: {"instances": []},
        400,
        "No values in 'instances' array",
    ),
    (
        "POST",
        "/v1/models/census:predict",
        lambda s: {"signature_name": 100, "instances": [1]},
        400,
        "'signature_name' key must be a string value.",
    ),
    (
        "POST",
        "/v1/models/census:predict",
        lambda s: {"signature_name": "nope", "instances": [_row(s)]},
        400,
        'Serving signature name: "nope" not found in signature def',
    ),
    (
        "POST",
        "/v1/models/census:predict",
        lambda s: {"instances": [1.0, 2.0]},
        400,
        "instances is a plain list, but expecting list of objects",
    ),
    (
        "POST",
        "/v1/models/census:predict",
        lambda s: {"instances": [dict(_row(s), age=["abc"])]},
        400,
        'JSON Value: "abc" Type: String is not of expected type: float',
    ),
    (
        "POST",
        "/v1/models/census:predict",
        lambda s: {"inputs": {k: [v] for k, v in _row(s).items() if k != "age"}},
        400,
        "Missing named input: age in 'inputs' object.",
    ),
    (
        "POST",
        "/v1/models/census:predict",
        lambda s: {"instances": [{k: v for k, v in _row(s).items() if k != "age"}]},
        400,
        "keys must be equal to",
    ),
    (
        "POST",
        "/v1/models/census:predict",
        lambda s: {"instances": [dict(_row(s), bogus=[1.0])]},
        400,
        "does not have named input: bogus",
    ),
    (
        "POST",
        "/v1/models/census:classify",
        lambda s: {"signature_name": "classification"},
        400,
        "key 'examples' is expected and was not found",
    ),
    (
        "POST",
        "/v1/models/census:regress",
        lambda s: {"signature_name": "regression", "examples": []},
        400,
        "'examples' value is an empty array",
    ),
    (
        "POST",
        "/v1/models/census:classify",
        lambda s: {"signature_name": "nope", "examples": [{"age": 1}]},
        400,
        "No signature was found with the name: nope",
    ),
    (
        "POST",
        "/v1/models/census:classify",
        lambda s: {"examples": [{"age": 1}]},
        400,
        "Expected one input Tensor.",
    ),
    (
        "POST",
        "/v1/models/census:regress",
        lambda s: {"signature_name": "regression", "examples": [{"age": [1, 2.5]}]},
        400,
        "Unexpected element type in feature: age expecting type: int64",
    ),
    ("GET", "/not/v1/at/all", None, 404, "Not found"),
]


@pytest.mark.parametrize(
    "method,path,body,code,message",
    REST_ERRORS,
    ids=[f"{m} {p} {c} {msg[:40]}" for m, p, _, c, msg in REST_ERRORS],
)
def test_rest_errors(served, method, path, body, code, message):
    if callable(body):
        body = body(served)
    status, answer = rest(served.url, method, path, body)
    assert status == code, answer
    assert set(answer) == {"error"}
    assert message in answer["error"]


def test_rest_oversized_body_is_refused(served):
    body = b'{"instances": [' + b" " * (MAX_BODY_BYTES + 10) + b"]}"
    status, answer = rest(served.url, "POST", "/v1/models/census:predict", body)
    assert status == 413
    assert "too large" in answer["error"] and str(MAX_BODY_BYTES) in answer["error"]
    # The server still answers afterwards.
    assert rest(served.url, "GET", "/v1/models/census")[0] == 200


# ----------------------------------------------------------------------------------------
# gRPC errors.


def _grpc_error(call, request):
    with pytest.raises(grpc.RpcError) as e:
        call(request, timeout=60)
    return e.value.code(), e.value.details()


def test_grpc_errors(served, prediction_stub):
    predict = prediction_stub.Predict
    code, details = _grpc_error(predict, _predict_request(served, model="nope"))
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == "Servable not found for request: Latest(nope)"

    code, details = _grpc_error(predict, _predict_request(served, version=99))
    assert code == grpc.StatusCode.NOT_FOUND

    code, details = _grpc_error(predict, _predict_request(served, signature="nope"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == 'Serving signature key "nope" not found.'

    request = _predict_request(served)
    del request.inputs["age"]
    code, details = _grpc_error(predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("input size does not match signature: 12!=13")
    assert "Missing but required: {age}." in details

    request = _predict_request(served)
    request.inputs["age"].CopyFrom(tf.make_tensor_proto(np.array([[b"abc"]] * 3, dtype=object)))
    code, details = _grpc_error(predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "age" in details and "float" in details and "string" in details

    request = _predict_request(served)
    request.inputs["bogus"].CopyFrom(request.inputs["age"])
    del request.inputs["age"]
    code, details = _grpc_error(predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("input tensor alias not found in signature: bogus.")

    request = _predict_request(served)
    request.output_filter.append("nope")
    code, details = _grpc_error(predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: nope" in details

    request = _predict_request(served)
    request.inputs["age"].CopyFrom(tf.make_tensor_proto(np.array([25.0, 30.0, 35.0], np.float32)))
    code, details = _grpc_error(predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "age" in details and "shape" in details

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "census"
    request.model_spec.signature_name = "classification"
    code, details = _grpc_error(prediction_stub.Classify, request)
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "Input is empty.")

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "census"
    request.input.example_list.examples.extend(served.examples())
    code, details = _grpc_error(prediction_stub.Regress, request)
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, "Expected one input Tensor.")


def test_a_tiny_request_claiming_a_huge_tensor_is_refused_not_run(served, prediction_stub):
    # One float for a [3e9, 1] age: Tensor::FromProto would repeat it 3e9 times (12 GB);
    # the server (before the decoded-size bound) allocated it and was killed by the kernel.
    import resource

    request = _predict_request(served)
    age = request.inputs["age"]
    age.Clear()
    age.dtype = types_pb2.DT_FLOAT
    age.tensor_shape.dim.add(size=3_000_000_000)
    age.tensor_shape.dim.add(size=1)
    age.float_val.append(39.0)
    assert request.ByteSize() < 2000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB; the server is in-process
    code, details = _grpc_error(prediction_stub.Predict, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("input age has shape [3000000000,1]")
    assert "--max_decoded_bytes" in details
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024
    # The server still answers.
    response = prediction_stub.Predict(_predict_request(served), timeout=60)
    assert response.outputs["probabilities"].tensor_shape.dim[0].size == len(served.rows)


def test_decoded_size_bound_counts_every_input():
    from tf_serving.server.inference import check_decoded_size
    from tf_serving.server.status import ServingError

    inputs = {  # 40 + 80 bytes decoded
        "a": tf.make_tensor_proto(np.zeros((10, 1), np.float32)),
        "b": tf.make_tensor_proto(np.zeros((10, 1), np.int64)),
    }
    check_decoded_size(inputs, 120)  # at the limit: accepted
    with pytest.raises(ServingError, match=r"input b has shape \[10,1\]: .* 120 bytes decoded"):
        check_decoded_size(inputs, 119)
    strings = {"s": tf.make_tensor_proto(np.array([b"x"] * 5, dtype=object))}  # 5 tstrings
    check_decoded_size(strings, 5 * 24)
    with pytest.raises(ServingError, match="input s has shape"):
        check_decoded_size(strings, 5 * 24 - 1)
    from tf_serving.server.runner import Runner

    with pytest.raises(ValueError, match="max_decoded_bytes must be >= 1"):
        Runner(max_decoded_bytes=0)


# ----------------------------------------------------------------------------------------
# Pure helpers (no server).


def test_model_config_parsing():
    settings = server_lib.models_from_config(
        """
        model_config_list {
          config { name: 'a' base_path: '/m/a' model_version_policy { latest { num_versions: 2 } } }
          config { name: 'b' base_path: '/m/b' model_version_policy { all {} } }
          config {
            name: 'c' base_path: '/m/c'
            model_version_policy { specific { versions: 42 versions: 43 } }
            version_labels { key: 'stable' value: 42 }
            version_labels { key: 'canary' value: 43 }
          }
          config { name: 'd' base_path: '/m/d' }
        }
        """
    )
    a, b, c, d = settings
    assert (a.version_policy, a.num_versions) == ("latest", 2)
    assert a.aspired([1, 5, 3]) == {3, 5}
    assert b.aspired([1, 5, 3]) == {1, 3, 5}
    assert (c.version_policy, c.versions, dict(c.version_labels)) == (
        "specific",
        (42, 43),
        {"stable": 42, "canary": 43},
    )
    assert c.aspired([41, 42, 44]) == {42}
    assert (d.version_policy, d.num_versions) == ("latest", 1)
    assert d.aspired([]) == set()

    with pytest.raises(ValueError, match="Error parsing text-format"):
        server_lib.models_from_config("model_config_list { config { nme: 'x' } }")
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.add(name="x", base_path="/x", model_platform="pytorch")
    with pytest.raises(ValueError, match="model_platform"):
        server_lib.models_from_config(config)


def test_scan_versions_ignores_non_integer_names(tmp_path):
    for name in ("1", "12", "temp-1700000000", "0003", "abc", "-4"):
        (tmp_path / name).mkdir()
    (tmp_path / "7").write_text("a file, not a directory")
    assert server_lib.scan_versions(str(tmp_path)) == {
        1: str(tmp_path / "1"),
        3: str(tmp_path / "0003"),
        12: str(tmp_path / "12"),
    }


def test_json_to_example_feature_kinds():
    example = server_lib.json_to_example(
        {
            "i": 25,
            "f": 25.0,
            "e": 1e3,
            "s": "abc",
            "b": {"b64": base64.b64encode(b"\x00\xff").decode()},
            "t": True,
            "l": [1, 2, 3],
            "fl": [1.5, 2.5],
        }
    )
    f = example.features.feature
    assert list(f["i"].int64_list.value) == [25]
    assert list(f["f"].float_list.value) == [25.0]
    assert list(f["e"].float_list.value) == [1000.0]
    assert list(f["s"].bytes_list.value) == [b"abc"]
    assert list(f["b"].bytes_list.value) == [b"\x00\xff"]
    assert list(f["t"].int64_list.value) == [1]
    assert list(f["l"].int64_list.value) == [1, 2, 3]
    assert list(f["fl"].float_list.value) == [1.5, 2.5]
    for bad, message in (
        ({"x": [1, 2.5]}, "Unexpected element type in feature: x expecting type: int64"),
        ({"x": None}, "Feature: x has element with unexpected JSON type: Null"),
        ({"x": [[1]]}, "Feature: x has element with unexpected JSON type: Array"),
        ({"x": 2**63}, "Only int64 is supported"),
    ):
        with pytest.raises(server_lib.ServingError, match=message.replace("[", r"\[")):
            server_lib.json_to_example(bad)


def test_json_tensor_conversions():
    from tensorflow.core.framework import types_pb2

    arr = server_lib.json_to_array([[1, 2.5], [3, 4]], types_pb2.DT_FLOAT)
    assert arr.dtype == np.float32 and arr.shape == (2, 2)
    arr = server_lib.json_to_array([["a"], [{"b64": "AAE="}]], types_pb2.DT_STRING)
    assert arr.tolist() == [[b"a"], [b"\x00\x01"]]
    assert server_lib.json_to_array([7, 8], types_pb2.DT_INT64).dtype == np.int64
    for value, dtype, message in (
        (["x"], types_pb2.DT_FLOAT, "is not of expected type: float"),
        ([1.5], types_pb2.DT_INT64, "is not of expected type: int64"),
        ([[1], [2, 3]], types_pb2.DT_FLOAT, "Encountered list at unexpected size"),
        ([3], types_pb2.DT_STRING, "is not of expected type: string"),
    ):
        with pytest.raises(server_lib.ServingError, match=message):
            server_lib.json_to_array(value, dtype)
    assert server_lib.array_to_json(np.array([0.98, 0.5], np.float32)) == [0.98, 0.5]
    assert server_lib.array_to_json(np.array([b"\x00"], object), "x_bytes") == [{"b64": "AA=="}]


def test_start_stop_without_models_and_port_conflict():
    server = server_lib.ModelServer({}, grpc_port=0, rest_port=0)
    server.start()
    try:
        assert server.wait_until_ready(1)
        status, body = rest(server.rest_url, "GET", "/v1/models/x")
        assert status == 404
        # A failed bind is an OSError every time: the REST thread's loop closing after the
        # failure once raced the cleanup, which then raised "Event loop is closed" (about 1
        # start in 18 before the fix; 60 starts take well under a second).
        for _ in range(60):
            conflict = server_lib.ModelServer({}, grpc_port=None, rest_port=server.rest_port)
            with pytest.raises(OSError, match="address already in use"):
                conflict.start()
    finally:
        t = time.monotonic()
        server.stop()
        assert time.monotonic() - t < 10
    server.stop()  # idempotent


def test_large_row_wise_requests_run_in_slices_with_the_same_outputs(served):
    from tf_serving.server.runner import Runner
    from tf_serving.server.servables import Servable

    servable = Servable("census", 1, served.export_path)
    rows = [dict(served.rows[i % 3], age=20.0 + i) for i in range(7)]
    inputs = served.columns(rows)
    whole = Runner(batching_signatures=("predict",))
    sliced = Runner(batching_signatures=("predict",), max_rows_per_call=3)
    for runner in (whole, sliced):
        out = runner.run_predict(servable, servable.signatures["predict"], dict(inputs))
        np.testing.assert_allclose(
            out["probabilities"],
            served.run_reference("predict", **inputs)["probabilities"],
            atol=ATOL,
        )
        assert out["class_ids"].shape == (7, 1)
    with pytest.raises(ValueError, match="max_rows_per_call must be >= 1"):
        Runner(max_rows_per_call=0)
