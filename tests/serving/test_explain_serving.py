"""The ``explain`` signature through the local server: REST (``"signature_name": "explain"``)
and gRPC Predict, and concurrent gRPC requests merged by the batcher; every answer must hold
the identities and match the in-process SavedModel."""

from __future__ import annotations

import json
import threading
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tf_serving.server import ModelServer
from wdl_tf import explain

from .conftest import ROWS, copy_version

pytestmark = pytest.mark.slow
ATOL = 1e-5


@pytest.fixture(scope="module")
def server(exported, tmp_path_factory):
    base = tmp_path_factory.mktemp("explain_serving") / "census"
    base.mkdir()
    copy_version(exported, str(base), 1)
    srv = ModelServer(
        {"census": str(base)},
        grpc_port=0,
        rest_port=0,
        batching=True,
        max_batch_size=64,
        batch_timeout_micros=200_000,
        batching_signatures=("explain",),
    ).start()
    assert srv.wait_until_ready(120)
    yield srv, tf.saved_model.load(exported)
    srv.stop()


def _tensors(rows):
    return {
        name: tf.constant([[r[name]] for r in rows], tf.float32 if isinstance(v, float) else None)
        for name, v in rows[0].items()
    }


def _check(outputs: dict, rows, reference) -> None:
    """Identities to 1e-5, and the same numbers as the SavedModel in this process."""
    tensors = _tensors(rows)
    p = reference.signatures["serving_default"](**tensors)["probabilities"].numpy().reshape(-1)
    errors = explain.identity_errors(outputs, p)
    assert max(errors.values()) <= ATOL, errors
    local = reference.signatures["explain"](**tensors)
    assert set(outputs) == set(local)
    for key, value in local.items():
        np.testing.assert_allclose(np.asarray(outputs[key]).reshape(-1), value.numpy(), atol=ATOL)


def test_rest_explain(server):
    srv, reference = server
    # Each instance holds one row of every [B, 1] input: a 1-element list.
    instances = [{k: [v] for k, v in row.items()} for row in ROWS]
    body = {"signature_name": "explain", "instances": instances}
    request = urllib.request.Request(
        f"{srv.rest_url}/v1/models/census:predict", data=json.dumps(body).encode(), method="POST"
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        predictions = json.loads(response.read())["predictions"]
    assert len(predictions) == len(ROWS)
    outputs = {k: np.array([row[k] for row in predictions]) for k in predictions[0]}
    _check(outputs, ROWS, reference)


def _grpc_request(rows) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "census"
    request.model_spec.signature_name = "explain"
    for name, value in _tensors(rows).items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def test_grpc_explain_and_batching(server):
    srv, reference = server
    channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    before = srv.batching_stats
    sizes = [1, 2, 3, 1, 3, 2]
    barrier = threading.Barrier(len(sizes))
    results, errors = {}, []

    def call(i, n):
        rows = [dict(ROWS[(i + j) % 3], age=20.0 + 7 * i + j) for j in range(n)]
        request = _grpc_request(rows)
        barrier.wait(30)
        try:
            response = stub.Predict(request, timeout=60)
            results[i] = (rows, {k: tf.make_ndarray(v) for k, v in response.outputs.items()})
        except grpc.RpcError as e:
            errors.append(e)

    threads = [threading.Thread(target=call, args=(i, n)) for i, n in enumerate(sizes)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    channel.close()
    assert not errors
    for i, (rows, outputs) in results.items():
        assert all(v.shape == (sizes[i],) for v in outputs.values())  # each request its rows
        _check(outputs, rows, reference)
    after = srv.batching_stats
    assert after["requests"] - before["requests"] == len(sizes)
    assert after["batches"] - before["batches"] < len(sizes)  # some requests shared a call
