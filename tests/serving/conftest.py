"""Fixtures for the local TF-Serving-compatible server tests.

One model is trained and exported per session (`exported`); one server (`served`) serves it
in-process on free loopback ports, from a models.config with two models:

* ``census``: versions 1 and 2 (copies of the export), policy ``all``, labels
  ``stable`` → 1 and ``canary`` → 2; batching on for the ``predict`` signature only.
* ``reload``: version 1, policy ``latest``; the hot-reload and broken-version tests publish
  new versions into it.

Monitoring is on (``/monitoring/prometheus/metrics``).

Clients are plain ``grpc`` stubs and ``urllib.request`` (not the project's client module).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from tf_serving.server import ModelServer

MAX_BODY_BYTES = 1 << 20

# Census-like rows; inputs the table lacks get a value from their dtype.
ROWS = [
    dict(
        age=39.0,
        workclass="State-gov",
        education="Bachelors",
        education_num=13.0,
        marital_status="Never-married",
        occupation="Adm-clerical",
        relationship="Not-in-family",
        race="White",
        gender="Male",
        capital_gain=2174.0,
        capital_loss=0.0,
        hours_per_week=40.0,
        native_country="United-States",
    ),
    dict(
        age=50.0,
        workclass="Self-emp-not-inc",
        education="Masters",
        education_num=14.0,
        marital_status="Married-civ-spouse",
        occupation="Exec-managerial",
        relationship="Husband",
        race="White",
        gender="Male",
        capital_gain=15024.0,
        capital_loss=0.0,
        hours_per_week=60.0,
        native_country="United-States",
    ),
    dict(
        age=28.0,
        workclass="Private",
        education="HS-grad",
        education_num=9.0,
        marital_status="Married-civ-spouse",
        occupation="Prof-specialty",
        relationship="Wife",
        race="Black",
        gender="Female",
        capital_gain=0.0,
        capital_loss=1902.0,
        hours_per_week=35.0,
        native_country="Cuba",
    ),
]


@dataclasses.dataclass
class Served:
    server: ModelServer
    export_path: str  # the trained version (a SavedModel dir)
    census_base: str
    reload_base: str
    config_path: str  # the models.config the server started with
    reference: Any  # tf.saved_model.load(export_path)
    inputs: dict[str, tf.DType]  # serving_default inputs → dtype
    rows: list[dict[str, Any]]  # one value per input

    @property
    def url(self) -> str:
        return self.server.rest_url

    def columns(self, rows: list[dict[str, Any]] | None = None) -> dict[str, np.ndarray]:
        """Rows as serving_default inputs ([N, 1] each, numpy)."""
        rows = self.rows if rows is None else rows
        out = {}
        for name, dtype in self.inputs.items():
            values = [[r[name]] for r in rows]
            if dtype == tf.string:
                arr = np.empty((len(rows), 1), dtype=object)
                arr[:, 0] = [v[0].encode() for v in values]
                out[name] = arr
            else:
                out[name] = np.array(values, dtype=dtype.as_numpy_dtype)
        return out

    def run_reference(self, signature: str, **inputs) -> dict[str, np.ndarray]:
        fn = self.reference.signatures[signature]
        return {
            k: v.numpy() for k, v in fn(**{k: tf.constant(v) for k, v in inputs.items()}).items()
        }

    def examples(self, rows: list[dict[str, Any]] | None = None) -> list[tf.train.Example]:
        """Rows as tf.Examples with float_list numeric features."""
        out = []
        for row in self.rows if rows is None else rows:
            ex = tf.train.Example()
            for name, dtype in self.inputs.items():
                feature = ex.features.feature[name]
                if dtype == tf.string:
                    feature.bytes_list.value.append(row[name].encode())
                elif dtype.is_floating:
                    feature.float_list.value.append(row[name])
                else:
                    feature.int64_list.value.append(row[name])
            out.append(ex)
        return out


def _make_rows(inputs: dict[str, tf.DType]) -> list[dict[str, Any]]:
    rows = []
    for i, base in enumerate(ROWS):
        row = {}
        for name, dtype in inputs.items():
            if name in base:
                row[name] = base[name]
            elif dtype == tf.string:
                row[name] = f"value{i}"
            elif dtype.is_floating:
                row[name] = float(i + 1)
            else:
                row[name] = i + 1
        rows.append(row)
    return rows


def copy_version(src: str, base: str, version: int) -> str:
    """Publishes ``src`` as ``base/version`` atomically (temp dir, then rename)."""
    tmp = os.path.join(base, f"temp-{version}-{time.monotonic_ns()}")
    shutil.copytree(src, tmp)
    final = os.path.join(base, str(version))
    os.rename(tmp, final)
    return final


@pytest.fixture(scope="session")
def exported(census_export) -> str:
    return census_export.export_path


@pytest.fixture(scope="session")
def served(exported, tmp_path_factory):
    root = tmp_path_factory.mktemp("serving_models")
    census = root / "census"
    reload = root / "reload"
    census.mkdir()
    reload.mkdir()
    copy_version(exported, str(census), 1)
    copy_version(exported, str(census), 2)
    copy_version(exported, str(reload), 1)
    (census / "temp-999").mkdir()  # not a version: must be ignored
    (census / "temp-999" / "saved_model.pb").write_bytes(b"garbage")
    (census / "README").write_text("not a version")
    config = root / "models.config"
    config.write_text(
        f"""
model_config_list {{
  config {{
    name: 'census'
    base_path: '{census}'
    model_platform: 'tensorflow'
    model_version_policy {{ all {{}} }}
    version_labels {{ key: 'stable' value: 1 }}
    version_labels {{ key: 'canary' value: 2 }}
  }}
  config {{
    name: 'reload'
    base_path: '{reload}'
    model_platform: 'tensorflow'
  }}
}}
"""
    )
    server = ModelServer(
        model_config_file=str(config),
        grpc_port=0,
        rest_port=0,
        poll_seconds=0.2,
        max_body_bytes=MAX_BODY_BYTES,
        batching=True,
        batching_signatures=("predict",),
        max_batch_size=64,
        batch_timeout_micros=100_000,
        enable_model_warmup=False,
        grpc_workers=16,
        allow_version_labels_for_unavailable_models=True,
        monitoring=True,
    )
    server.start()
    reference = tf.saved_model.load(exported)
    inputs = {
        name: spec.dtype
        for name, spec in reference.signatures["serving_default"]
        .structured_input_signature[1]
        .items()
    }
    try:
        assert server.wait_until_ready(300), "the server did not load the models"
        wait_for(lambda: version_state(server, "census", 1) == "AVAILABLE", 300)
        yield Served(
            server=server,
            export_path=exported,
            census_base=str(census),
            reload_base=str(reload),
            config_path=str(config),
            reference=reference,
            inputs=inputs,
            rows=_make_rows(inputs),
        )
    finally:
        server.stop()


@pytest.fixture(scope="session")
def channel(served):
    with grpc.insecure_channel(served.server.grpc_address) as ch:
        yield ch


@pytest.fixture(scope="session")
def prediction_stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="session")
def model_stub(channel):
    return model_service_pb2_grpc.ModelServiceStub(channel)


# ----------------------------------------------------------------------------------------
# Helpers.


def rest(url: str, method: str, path: str, body: Any = None, timeout: float = 60):
    """(HTTP status, parsed JSON body) of one REST call; ``body`` JSON-encoded unless bytes."""
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            assert response.headers["Content-Type"] == "application/json"
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        assert e.headers["Content-Type"] == "application/json"
        return e.code, json.loads(e.read())


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def version_states(server: ModelServer, model: str) -> dict[int, tuple[str, str, str]]:
    """version → (state, error code name, error message) from the REST status API."""
    status, body = rest(server.rest_url, "GET", f"/v1/models/{model}")
    if status != 200:
        return {}
    return {
        int(v["version"]): (v["state"], v["status"]["error_code"], v["status"]["error_message"])
        for v in body["model_version_status"]
    }


def version_state(server: ModelServer, model: str, version: int) -> str | None:
    entry = version_states(server, model).get(version)
    return entry[0] if entry else None
