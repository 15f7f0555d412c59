"""Request logging by the local server: what reaches the model over gRPC and REST is logged
as TF Serving's PredictionLog (request and response), warmup replays are not, and the log
reads back as the rows that were sent (the skew report's input)."""

from __future__ import annotations

import glob
import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
)

from tf_serving.server import ModelServer
from tf_serving.tensors import tensor_array, tensor_proto
from wdl_tf import features as fs
from wdl_tf import samples

from .conftest import ROWS, copy_version, rest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def logged(exported, tmp_path_factory):
    """Serves the export with every request logged, sends four requests (REST and gRPC,
    Predict and Classify), stops the server (which closes the log) and returns what was
    sent and answered, and the log directory."""
    root = tmp_path_factory.mktemp("request_log")
    base = root / "census"
    base.mkdir()
    copy_version(exported, str(base), 1)
    log_dir = root / "log"
    server = ModelServer(
        {"census": str(base)},
        grpc_port=0,
        rest_port=0,
        request_log_dir=str(log_dir),
        request_log_sampling_rate=1.0,
    ).start()
    sent = {}
    try:
        assert server.wait_until_ready(120)
        assert len(glob.glob(str(log_dir / "*"))) == 0  # the warmup replays are not logged
        instances = [{k: [v] for k, v in r.items()} for r in ROWS]  # inputs are [N, 1]
        status, body = rest(server.rest_url, "POST", "/v1/models/census:predict",
                            {"instances": instances})  # fmt: skip
        assert status == 200, body
        sent["rest_predict"] = body["predictions"]  # one output: the value per row
        assert len(sent["rest_predict"]) == len(ROWS)
        status, body = rest(server.rest_url, "POST", "/v1/models/census:classify",
                            {"signature_name": "classification", "examples": ROWS[:2]})  # fmt: skip
        assert status == 200, body
        sent["rest_classify"] = body["results"]
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "census"
            for name, value in ROWS[0].items():
                column = [[r[name]] for r in ROWS]
                if isinstance(value, str):
                    column = np.array([[v[0].encode()] for v in column], dtype=object)
                else:
                    column = np.array(column, dtype=np.float32)
                request.inputs[name].CopyFrom(tensor_proto(column))
            sent["grpc_predict"] = stub.Predict(request, timeout=60)
            classify = classification_pb2.ClassificationRequest()
            classify.model_spec.name = "census"
            classify.model_spec.signature_name = "classification"
            for row in ROWS[1:]:
                example = classify.input.example_list.examples.add()
                for name, value in row.items():
                    feature = example.features.feature[name]
                    if isinstance(value, str):
                        feature.bytes_list.value.append(value.encode())
                    else:
                        feature.float_list.value.append(value)
            sent["grpc_classify"] = stub.Classify(classify, timeout=60)
        assert len(glob.glob(str(log_dir / "*.tfrecord"))) == 0  # still being written
    finally:
        server.stop()
    return sent, str(log_dir)


def _entries(log_dir: str) -> list[prediction_log_pb2.PredictionLog]:
    files = sorted(glob.glob(os.path.join(log_dir, "*")))
    assert files and all(f.endswith(".tfrecord") for f in files), files  # closed by stop
    return [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for f in files
        for r in tf.data.TFRecordDataset(f)
    ]


def test_every_request_is_logged_with_its_answer(logged):
    sent, log_dir = logged
    entries = _entries(log_dir)
    assert [e.WhichOneof("log_type") for e in entries] == [
        "predict_log", "classify_log", "predict_log", "classify_log",
    ]  # fmt: skip
    for e in entries:
        assert e.log_metadata.model_spec.name == "census"
        assert e.log_metadata.sampling_config.sampling_rate == 1.0

    # REST predict: logged as the PredictRequest TF Serving's REST handler makes (one tensor
    # per input, the rows in order) with the probabilities the client got.
    rest_predict = entries[0].predict_log
    ages = tensor_array(rest_predict.request.inputs["age"]).reshape(-1)
    np.testing.assert_allclose(ages, [r["age"] for r in ROWS])
    (output,) = rest_predict.response.outputs.values()
    logged_p = tensor_array(output)
    np.testing.assert_allclose(logged_p, np.array(sent["rest_predict"]), rtol=1e-6)
    assert rest_predict.response.model_spec.version.value == 1

    # REST classify: the examples as sent, and the class scores answered.
    rest_classify = entries[1].classify_log
    examples = rest_classify.request.input.example_list.examples
    assert [e.features.feature["occupation"].bytes_list.value[0].decode() for e in examples] == [
        r["occupation"] for r in ROWS[:2]
    ]
    scores = [[c.score for c in cl.classes] for cl in rest_classify.response.result.classifications]
    np.testing.assert_allclose(scores, [[s for _, s in row] for row in sent["rest_classify"]],
                               rtol=1e-6)  # fmt: skip

    # gRPC: the request proto itself and the response the client received.
    assert entries[2].predict_log.response == sent["grpc_predict"]
    assert entries[3].classify_log.response == sent["grpc_classify"]


def test_the_log_reads_back_as_the_rows_sent(logged):
    _, log_dir = logged
    sample = samples.read_request_log(fs.load("census"), os.path.join(log_dir, "*.tfrecord"))
    sent_rows = ROWS + ROWS[:2] + ROWS + ROWS[1:]
    assert sample.rows == len(sent_rows)
    np.testing.assert_allclose(sample.columns["age"], [r["age"] for r in sent_rows])
    assert list(sample.columns["race"]) == [r["race"] for r in sent_rows]


def test_bad_request_log_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="request_log_sampling_rate: needs request_log_dir"):
        ModelServer({"m": str(tmp_path)}, request_log_sampling_rate=0.5)
    with pytest.raises(ValueError, match=r"request_log_sampling_rate: must be in \(0, 1\], got 2"):
        ModelServer(
            {"m": str(tmp_path)}, request_log_dir=str(tmp_path), request_log_sampling_rate=2
        )
