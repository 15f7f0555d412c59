"""A model with a multivalent feature (the app store's installed_apps) over the local server:
REST predict takes the list as one "a|b|c" string, REST classify as a JSON list (a bytes_list
in the tf.Example); both must give the in-process SavedModel's probabilities."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from tf_serving.server import ModelServer
from wdl_tf import config as config_lib
from wdl_tf import features as fs
from wdl_tf import input_pipeline, train_lib


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
    rows = []
    for i in range(4):
        row = {}
        for f in spec.features:
            value = raw[f.name].numpy()[i, 0]
            row[f.name] = value.decode() if isinstance(value, bytes) else value.item()
        rows.append(row)
    assert any("|" in row["installed_apps"] for row in rows)  # real lists, not single apps
    server = ModelServer(
        {"apps": config.export_base}, host="127.0.0.1", grpc_port=None, rest_port=0
    ).start()
    assert server.wait_until_ready(120)
    yield spec, rows, result.export_path, f"http://127.0.0.1:{server.rest_port}"
    server.stop()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _in_process(path: str, spec, rows) -> np.ndarray:
    fn = tf.saved_model.load(path).signatures["serving_default"]
    inputs = {}
    for f in spec.features:
        values = [[row[f.name]] for row in rows]
        dtype = (
            tf.float32
            if f.kind == fs.NUMERIC
            else (tf.int64 if f.dtype == "int" and f.kind == fs.CATEGORICAL else tf.string)
        )
        inputs[f.name] = tf.constant(values, dtype=dtype)
    return fn(**inputs)["probabilities"].numpy().reshape(-1)


def test_rest_predict_takes_a_joined_list(apps_model):
    spec, rows, path, url = apps_model
    instances = [{name: [value] for name, value in row.items()} for row in rows]
    got = _post(f"{url}/v1/models/apps:predict", {"instances": instances})["predictions"]
    np.testing.assert_allclose(np.array(got).reshape(-1), _in_process(path, spec, rows), atol=1e-5)


def test_rest_classify_takes_a_json_list(apps_model):
    spec, rows, path, url = apps_model
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
