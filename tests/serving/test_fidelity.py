"""The local server against TF Serving's own source, and the project's non-finite rule.

Each expectation names the TF Serving file it comes from (tf_serving/README.md, "Contract
rules"): model_service_impl.cc (ReloadConfig), server_core.cc (labels), server.cc (config
file polling), get_model_status_impl.cc (status ignores labels), http_rest_api_util.cc
(verbs), json_tensor.cc (integers for float inputs). Non-finite numbers are refused with a
400 / INVALID_ARGUMENT naming the feature: the project's decision (tf_serving/README.md).
"""

from __future__ import annotations

import json
import os
import threading

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    model_management_pb2,
    predict_pb2,
    regression_pb2,
)

from tf_serving import config as cfg
from tf_serving.server import ModelServer

from .conftest import copy_version, rest, version_states, wait_for

pytestmark = pytest.mark.slow
ATOL = 1e-5
NUMERIC = "age"  # a float32 input of the census model
MARK = 123456.5  # a number replaced by a JSON literal in request texts


def _row(served, **overrides):
    return {name: [overrides.get(name, served.rows[0][name])] for name in served.inputs}


def _predict(served, rows, signature=""):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "census"
    request.model_spec.signature_name = signature
    for name, value in served.columns(rows).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def _grpc_error(call, request):
    with pytest.raises(grpc.RpcError) as e:
        call(request, timeout=60)
    return e.value.code(), e.value.details()


# ----------------------------------------------------------------------------------------
# Non-finite numbers: refused, naming the feature (REST and gRPC, before batching).


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "1e39"])
def test_rest_predict_refuses_non_finite_numbers(served, literal):
    row = _row(served, **{NUMERIC: MARK})
    for doc in ({"instances": [row]}, {"inputs": {k: [v] for k, v in row.items()}}):
        body = json.dumps(doc).replace(str(MARK), literal).encode()
        status, answer = rest(served.url, "POST", "/v1/models/census:predict", body)
        assert status == 400, answer
        assert f"Input {NUMERIC} has a non-finite value" in answer["error"]


@pytest.mark.parametrize("literal", ["NaN", "-Infinity", "1e400"])
def test_rest_classify_regress_refuse_non_finite_features(served, literal):
    example = {k: v for k, v in served.rows[0].items() if k in served.inputs}
    text = json.dumps(dict(example, **{NUMERIC: MARK})).replace(str(MARK), literal)
    for verb, signature in (("classify", "classification"), ("regress", "regression")):
        body = f'{{"signature_name": "{signature}", "examples": [{text}]}}'.encode()
        status, answer = rest(served.url, "POST", f"/v1/models/census:{verb}", body)
        assert status == 400, answer
        assert f"Feature: {NUMERIC} has a non-finite value" in answer["error"]
    body = (
        f'{{"signature_name": "regression", "context": {{"{NUMERIC}": {literal}}}, '
        f'"examples": [{{"workclass": "Private"}}]}}'
    ).encode()
    status, answer = rest(served.url, "POST", "/v1/models/census:regress", body)
    assert status == 400 and f"Feature: {NUMERIC}" in answer["error"]


def test_grpc_refuses_non_finite_numbers(served, prediction_stub):
    for bad in (np.nan, np.inf, -np.inf):
        rows = [dict(served.rows[0]), dict(served.rows[1], **{NUMERIC: bad})]
        code, details = _grpc_error(prediction_stub.Predict, _predict(served, rows))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith(f"Input {NUMERIC} has a non-finite value")
        assert "index [1,0]" in details

        request = classification_pb2.ClassificationRequest()
        request.model_spec.name = "census"
        request.model_spec.signature_name = "classification"
        request.input.example_list.examples.extend(served.examples(rows))
        code, details = _grpc_error(prediction_stub.Classify, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert f"Feature: {NUMERIC} has a non-finite value" in details and "example 1" in details

        request = regression_pb2.RegressionRequest()
        request.model_spec.name = "census"
        request.model_spec.signature_name = "regression"
        lists = request.input.example_list_with_context
        lists.context.features.feature[NUMERIC].float_list.value.append(bad)
        lists.examples.extend(served.examples(served.rows[:1]))
        code, details = _grpc_error(prediction_stub.Regress, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "the context" in details


def test_a_bad_request_never_fails_the_batch_it_would_join(served, prediction_stub):
    """`predict` is batched (100 ms window): a NaN request next to good ones fails alone."""
    good_rows = [dict(served.rows[i % 3], age=30.0 + i) for i in range(4)]
    expected = served.run_reference("predict", **served.columns(good_rows))["probabilities"]
    bad_rows = [dict(served.rows[0], age=float("nan"))]
    results: dict[str, object] = {}
    barrier = threading.Barrier(5)

    def call(key, rows):
        request = _predict(served, rows, signature="predict")
        barrier.wait(30)
        try:
            results[key] = prediction_stub.Predict(request, timeout=60)
        except grpc.RpcError as e:
            results[key] = e

    threads = [threading.Thread(target=call, args=(i, [r])) for i, r in enumerate(good_rows)]
    threads.append(threading.Thread(target=call, args=("bad", bad_rows)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert isinstance(results["bad"], grpc.RpcError)
    assert results["bad"].code() == grpc.StatusCode.INVALID_ARGUMENT
    for i in range(4):
        got = tf.make_ndarray(results[i].outputs["probabilities"])
        np.testing.assert_allclose(got, expected[i : i + 1], atol=ATOL)


# ----------------------------------------------------------------------------------------
# JSON numbers (json_tensor.cc: any number converts to a float input since 2021).


def test_integer_beyond_float_precision_is_converted(served):
    big = 2**24 + 1  # not exactly representable as float32: converted to 16777216.0
    status, body = rest(
        served.url, "POST", "/v1/models/census:predict", {"instances": [_row(served, age=big)]}
    )
    assert status == 200, body
    columns = served.columns([dict(served.rows[0], age=float(np.float32(big)))])
    expected = served.run_reference("serving_default", **columns)["probabilities"]
    np.testing.assert_allclose(body["predictions"], expected, atol=ATOL)


# ----------------------------------------------------------------------------------------
# Verbs (http_rest_api_util.cc: the path regex ignores case, the verb comparison does not).


def test_verbs_are_case_sensitive_paths_are_not(served):
    row = {"instances": [_row(served)]}
    status, body = rest(served.url, "POST", "/v1/models/census:PREDICT", row)
    assert status == 400
    assert body["error"] == "Malformed request: POST /v1/models/census:PREDICT"
    assert rest(served.url, "POST", "/V1/MODELS/census:predict", row)[0] == 200


# ----------------------------------------------------------------------------------------
# Status (get_model_status_impl.cc) and labels (server_core.cc).


def test_grpc_status_ignores_the_label(model_stub):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "census"
    request.model_spec.version_label = "no_such_label"
    response = model_stub.GetModelStatus(request, timeout=60)
    assert [s.version for s in response.model_version_status] == [2, 1]


def _reload(model_stub, text: str) -> model_management_pb2.ReloadConfigResponse:
    request = model_management_pb2.ReloadConfigRequest()
    request.config.CopyFrom(cfg.parse_model_server_config(text))
    return model_stub.HandleReloadConfigRequest(request, timeout=120)


def test_reload_config_without_config_changes_nothing(served, model_stub):
    code, details = _grpc_error(
        model_stub.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest()
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("ServerModelConfig type not supported by HandleReloadConfigRequest")
    assert version_states(served.server, "census")[2][0] == "AVAILABLE"
    assert rest(served.url, "GET", "/v1/models/reload")[0] == 200


def test_labels_must_point_at_available_versions(served, model_stub, prediction_stub):
    original = open(served.config_path).read()
    assert "key: 'stable' value: 1" in original
    moved = original.replace("key: 'stable' value: 1", "key: 'stable' value: 7")
    code, details = _grpc_error(
        model_stub.HandleReloadConfigRequest,
        model_management_pb2.ReloadConfigRequest(config=cfg.parse_model_server_config(moved)),
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == (
        "Request to assign label to version 7 of model census, which is not currently "
        "available for inference"
    )
    request = _predict(served, served.rows[:1])
    request.model_spec.version_label = "stable"
    assert prediction_stub.Predict(request, timeout=60).model_spec.version.value == 1  # unchanged

    # A label may move to another AVAILABLE version; moving it back restores the config.
    _reload(model_stub, original.replace("key: 'stable' value: 1", "key: 'stable' value: 2"))
    assert prediction_stub.Predict(request, timeout=60).model_spec.version.value == 2
    _reload(model_stub, original)
    assert prediction_stub.Predict(request, timeout=60).model_spec.version.value == 1


def test_initial_labels_need_the_unavailable_models_flag(tmp_path):
    text = (
        f"model_config_list {{ config {{ name: 'm' base_path: '{tmp_path}' "
        "model_platform: 'tensorflow' version_labels { key: 'stable' value: 1 } } }"
    )
    with pytest.raises(ValueError, match="not currently available.*allow_version_labels"):
        ModelServer(model_config=text, grpc_port=None, rest_port=None)
    ModelServer(
        model_config=text,
        grpc_port=None,
        rest_port=None,
        allow_version_labels_for_unavailable_models=True,
    )


# ----------------------------------------------------------------------------------------
# --model_config_file_poll_wait_seconds (server.cc PollFilesystemAndReloadConfig).


def test_model_config_file_is_polled(served, tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    copy_version(served.export_path, str(base), 1)
    path = tmp_path / "models.config"

    def write(name: str) -> None:
        cfg.write_models_config(str(path), cfg.ServedModel(name, str(base)))

    write("first")
    server = ModelServer(
        model_config_file=str(path),
        model_config_file_poll_wait_seconds=0.2,
        grpc_port=None,
        rest_port=0,
        enable_model_warmup=False,
    ).start()
    try:
        assert server.wait_until_ready(120)
        write("second")
        wait_for(lambda: version_states(server, "second").get(1, ("",))[0] == "AVAILABLE", 120)
        assert rest(server.rest_url, "GET", "/v1/models/first")[0] == 404
        # A file that cannot be parsed is logged; the models stay as they are.
        cfg.write_text_atomic(str(path), "model_config_list { config { nme: 'x' } }")
        row = {"instances": [_row(served)]}
        for _ in range(3):
            threading.Event().wait(0.3)
            assert rest(server.rest_url, "POST", "/v1/models/second:predict", row)[0] == 200
        assert os.path.exists(path)
    finally:
        server.stop()
