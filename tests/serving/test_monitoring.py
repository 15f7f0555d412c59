"""Prometheus metrics of the local server: requests by model, API, signature and status."""

from __future__ import annotations

import urllib.request

import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2

from tf_serving.server import ModelServer

from .conftest import rest

pytestmark = pytest.mark.slow
PATH = "/monitoring/prometheus/metrics"


def _scrape(url: str) -> dict[str, dict[tuple, float]]:
    """sample name → {sorted label items: value}."""
    with urllib.request.urlopen(url + PATH, timeout=30) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _labels(**kw) -> tuple:
    return tuple(sorted(kw.items()))


def test_requests_and_versions_are_counted(served, prediction_stub):
    row = {name: [served.rows[0][name]] for name in served.inputs}
    ok = _labels(
        model_name="census",
        api="predict",
        signature_name="serving_default",
        entrypoint="REST",
        status="OK",
    )
    bad = _labels(
        model_name="census",
        api="predict",
        signature_name="serving_default",
        entrypoint="REST",
        status="INVALID_ARGUMENT",
    )
    grpc_ok = _labels(
        model_name="census",
        api="predict",
        signature_name="predict",
        entrypoint="GRPC",
        status="OK",
    )
    unknown = _labels(
        model_name="", api="predict", signature_name="", entrypoint="REST", status="NOT_FOUND"
    )
    before = _scrape(served.url).get("tf_serving_requests_total", {})

    assert rest(served.url, "POST", "/v1/models/census:predict", {"instances": [row]})[0] == 200
    assert rest(served.url, "POST", "/v1/models/census:predict", {"instances": [{}]})[0] == 400
    assert (
        rest(served.url, "POST", "/v1/models/random-name-1:predict", {"instances": [row]})[0] == 404
    )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "census"
    request.model_spec.signature_name = "predict"
    for name, value in served.columns(served.rows[:1]).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    prediction_stub.Predict(request, timeout=60)

    metrics = _scrape(served.url)
    counts = metrics["tf_serving_requests_total"]
    for labels in (ok, bad, grpc_ok, unknown):
        assert counts[labels] == before.get(labels, 0) + 1, labels
    assert not any(("model_name", "random-name-1") in k for k in counts)  # bounded labels
    latency = metrics["tf_serving_request_latency_seconds_count"]
    assert latency[ok] >= 1
    assert metrics["tf_serving_model_versions_loaded"][_labels(model_name="census")] == 2
    available = metrics["tf_serving_model_version_available"]
    assert available[_labels(model_name="census", version="1")] == 1
    assert available[_labels(model_name="census", version="2")] == 1
    assert metrics["tf_serving_rest_requests_rejected_total"][()] == 0


def test_no_metrics_page_without_monitoring():
    server = ModelServer({}, grpc_port=None, rest_port=0).start()
    try:
        status, body = rest(server.rest_url, "GET", PATH)
        assert status == 404 and "Not found" in body["error"]
    finally:
        server.stop()
