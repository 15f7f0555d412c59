"""A model with a multivalent feature (the app store's installed_apps) over the local server:
REST predict takes the list as one "a|b|c" string, REST classify as a JSON list (a bytes_list
in the tf.Example); both must give the in-process SavedModel's probabilities. Its ``explain``
signature holds its identities over REST and gRPC."""

from __future__ import annotations

import json
import urllib.request

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tf_serving.server import ModelServer
from tf_serving.tensors import tensor_array, tensor_proto
from wdl_tf import config as config_lib
from wdl_tf import explain, export_lib, input_pipeline, train_lib
from wdl_tf import features as fs

pytestmark = pytest.mark.slow  # trains a model and starts a server


@pytest.fixture(scope="module")
def apps_model(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apps_serving")
    config = config_lib.preset(
        "test",
        data=config_lib.DataConfig(dataset="apps_synthetic", synthetic_rows=2000, batch_size=128),
        model=config_lib.ModelConfig(hidden_units=(8,)),
        model_dir=str(tmp / "model"),
        export_base=str(tmp / "export"),
        epochs=1,
        export=config_lib.ExportOptions(model_name="apps"),
    )
    result = train_lib.train_and_evaluate(config)
    spec = fs.preset("apps")
    eval_files = train_lib._resolve_data(config)[2]
    raw, _ = next(
        iter(input_pipeline.read_raw(spec, eval_files, input_pipeline.ReadOptions(batch_size=4)))
    )
    columns = export_lib.raw_inputs(spec, raw)  # lists read from TFRecord joined as "a|b"
    rows = []
    for i in range(4):
        row = {}
        for f in spec.features:
            value = columns[f.name][i, 0]
            row[f.name] = value.decode() if isinstance(value, bytes) else value.item()
        rows.append(row)
    assert any("|" in row["installed_apps"] for row in rows)  # real lists, not single apps
    server = ModelServer(
        {"apps": config.export_base}, host="127.0.0.1", grpc_port=0, rest_port=0
    ).start()
    assert server.wait_until_ready(120)
    yield spec, rows, result.export_path, server.rest_url, server.grpc_address
    server.stop()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _columns(spec, rows) -> dict[str, np.ndarray]:
    """serving_default's inputs: one [N, 1] column per feature, as the export types them."""
    out = {}
    for f in spec.features:
        values = [[row[f.name]] for row in rows]
        if f.kind == fs.NUMERIC:
            out[f.name] = np.array(values, dtype=np.float32)
        elif f.dtype == "int" and f.kind == fs.CATEGORICAL:
            out[f.name] = np.array(values, dtype=np.int64)
        else:
            out[f.name] = np.array([[str(v[0]).encode()] for v in values], dtype=object)
    return out


def _in_process(path: str, spec, rows) -> np.ndarray:
    fn = tf.saved_model.load(path).signatures["serving_default"]
    inputs = {k: tf.constant(v) for k, v in _columns(spec, rows).items()}
    return fn(**inputs)["probabilities"].numpy().reshape(-1)


def test_rest_predict_takes_a_joined_list(apps_model):
    spec, rows, path, url, _ = apps_model
    instances = [{name: [value] for name, value in row.items()} for row in rows]
    got = _post(f"{url}/v1/models/apps:predict", {"instances": instances})["predictions"]
    np.testing.assert_allclose(np.array(got).reshape(-1), _in_process(path, spec, rows), atol=1e-5)


def test_rest_classify_takes_a_json_list(apps_model):
    spec, rows, path, url, _ = apps_model
    examples = []
    for row in rows:
        example = dict(row)
        example["installed_apps"] = [a for a in row["installed_apps"].split("|") if a]
        for f in spec.features:
            if f.kind == fs.NUMERIC:
                example[f.name] = float(row[f.name])
        examples.append(example)
    body = {"signature_name": "classification", "examples": examples}
    results = _post(f"{url}/v1/models/apps:classify", body)["results"]
    scores = np.array([dict(classes)["1"] for classes in results])
    np.testing.assert_allclose(scores, _in_process(path, spec, rows), atol=1e-5)


def test_explain_identities_hold_over_rest_and_grpc(apps_model):
    """The multivalent feature's contribution (the sum of its list's weights) included: the
    contributions add up to the wide logit, and sigmoid(logit) is the served probability."""
    spec, rows, path, url, grpc_address = apps_model
    probabilities = _in_process(path, spec, rows)
    instances = [{name: [value] for name, value in row.items()} for row in rows]
    body = {"signature_name": "explain", "instances": instances}
    answer = _post(f"{url}/v1/models/apps:predict", body)["predictions"]
    over_rest = {k: np.array([row[k] for row in answer]) for k in answer[0]}
    assert "contribution_installed_apps" in over_rest
    assert max(explain.identity_errors(over_rest, probabilities).values()) <= 1e-5

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "apps"
    request.model_spec.signature_name = "explain"
    for name, column in _columns(spec, rows).items():
        request.inputs[name].CopyFrom(tensor_proto(column))
    with grpc.insecure_channel(grpc_address) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=60
        )
    over_grpc = {k: tensor_array(v) for k, v in response.outputs.items()}
    assert set(over_grpc) == set(over_rest)
    assert max(explain.identity_errors(over_grpc, probabilities).values()) <= 1e-5
    for key, value in over_rest.items():  # the same numbers either way
        np.testing.assert_allclose(over_grpc[key].reshape(-1), value.reshape(-1), atol=1e-6)
