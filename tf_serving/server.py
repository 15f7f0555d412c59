"""A TF-Serving-compatible model server in Python, for development, CI and small deployments.

**Production uses TensorFlow Serving's own ``tensorflow_model_server``** (the APT package or
the ``tensorflow/serving`` Docker image). This module exists so that the project's clients,
scripts and tests can run the same contract where that binary is not available: it speaks
the same gRPC API (``tensorflow.serving.PredictionService`` and ``ModelService``) and the
same REST API (``/v1/models/...``) with the same JSON formats, error messages and status
codes, as written down in ``shared/docs/tf_serving_contract.md``. It is not a replacement
for TF Serving's performance, C++ batching, monitoring or resource management.

What it does:

* Models come from ``{name: base_path}`` or a ``models.config`` text proto
  (``tensorflow.serving.ModelServerConfig``: version policy ``latest {num_versions}`` / ``all``
  / ``specific {versions}``, ``version_labels``).
* A background thread polls every base path (``poll_seconds``). Only children whose names
  are integers are versions (``temp-*`` and other names are ignored, so an export written to
  a temporary sibling and renamed appears atomically). A new version is loaded with
  ``tf.saved_model.load`` *before* the version it replaces is unloaded (availability
  preserving); requests without a version get the highest available one. A version that
  fails to load leaves the previous one serving and is reported by the status API as
  ``END`` with the error's code and message. Warmup requests in
  ``assets.extra/tf_serving_warmup_requests`` are replayed before a version becomes
  ``AVAILABLE``; a failing warmup fails the load, as in TF Serving.
* gRPC (default ``127.0.0.1:8500``): Predict, Classify, Regress, MultiInference,
  GetModelMetadata, GetModelStatus, HandleReloadConfigRequest.
* REST (default ``127.0.0.1:8501``): predict (row ``instances`` / columnar ``inputs``),
  classify, regress, model status and metadata, ``{"error": ...}`` bodies with TF Serving's
  status → HTTP code mapping; request bodies are limited to ``max_body_bytes`` (413).
* Optional server-side batching of concurrent Predict requests (``batching=True``).

Use::

    server = ModelServer({"census": "/models/census"}, grpc_port=8500, rest_port=8501)
    server.start()
    server.wait_until_ready(60)
    ...
    server.stop()

or ``python -m tf_serving.server --model_name=census --model_base_path=/models/census``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import concurrent.futures
import dataclasses
import http.server
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format, text_format
from google.protobuf.message import DecodeError
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_log_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from tf_serving.config import parse_model_server_config

log = logging.getLogger("tf_serving")

DEFAULT_SIGNATURE = "serving_default"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000
DEFAULT_MAX_BODY_BYTES = 64 << 20
DEFAULT_BATCHING_SIGNATURES = ("serving_default", "predict")
_GRPC_MESSAGE_LIMIT = 1024
_MAX_MESSAGE_BYTES = 2**31 - 1
_INT64_MAX = 2**63 - 1

# Version states, as tensorflow.serving.ModelVersionStatus.State names them.
LOADING = "LOADING"
AVAILABLE = "AVAILABLE"
UNLOADING = "UNLOADING"
END = "END"
_STATE_ENUM = get_model_status_pb2.ModelVersionStatus.State

_HTTP_CODES = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A request or load failure with TF Serving's status code (= the gRPC code)."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return _HTTP_CODES.get(self.code, 500)


def _invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def _error_from_exception(e: BaseException) -> ServingError:
    """TF Serving's status for an exception raised while loading or running a model."""
    if isinstance(e, ServingError):
        return e
    if isinstance(e, tf.errors.OpError):
        code = _CODE_BY_NUMBER.get(int(e.error_code), grpc.StatusCode.UNKNOWN)
        return ServingError(code, e.message)
    if isinstance(e, FileNotFoundError):
        return ServingError(grpc.StatusCode.NOT_FOUND, str(e))
    if isinstance(e, (ValueError, TypeError)):
        return _invalid(str(e))
    return ServingError(grpc.StatusCode.UNKNOWN, f"{type(e).__name__}: {e}")


def _dtype_name(dtype: int) -> str:
    """TF's DataTypeString: DT_FLOAT → "float"."""
    try:
        return types_pb2.DataType.Name(dtype)[3:].lower()
    except ValueError:
        return f"dtype_{dtype}"


# ----------------------------------------------------------------------------------------
# Configuration.


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """One served model: where its versions are and which of them to serve.

    Attributes:
      name: the model name requests use.
      base_path: the directory holding the integer version directories.
      policy: ``"latest"`` (the ``num_versions`` highest), ``"all"`` or ``"specific"``.
      num_versions: versions kept by the ``latest`` policy.
      versions: the versions of the ``specific`` policy.
      labels: version label → version number.
    """

    name: str
    base_path: str
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def validate(self) -> None:
        if not self.name:
            raise ValueError("model name must not be empty")
        if not self.base_path:
            raise ValueError(f"model {self.name!r}: base_path must not be empty")
        if self.policy not in ("latest", "all", "specific"):
            raise ValueError(f"model {self.name!r}: unknown version policy {self.policy!r}")
        if self.policy == "latest" and self.num_versions < 1:
            raise ValueError(f"model {self.name!r}: latest.num_versions must be >= 1")
        if self.policy == "specific" and not self.versions:
            raise ValueError(f"model {self.name!r}: specific policy needs at least one version")

    def aspired(self, on_disk: Iterable[int]) -> set[int]:
        """The versions this policy wants loaded, among those on disk."""
        present = sorted(on_disk)
        if self.policy == "latest":
            return set(present[-self.num_versions :])
        if self.policy == "all":
            return set(present)
        return set(present) & set(self.versions)


def load_model_server_config(path: str) -> model_server_config_pb2.ModelServerConfig:
    """Reads and parses a ``models.config`` file."""
    with open(path) as f:
        return parse_model_server_config(f.read())


def settings_from_config(
    config: model_server_config_pb2.ModelServerConfig | str,
) -> list[ModelSettings]:
    """`ModelSettings` of every model in a ModelServerConfig (proto or text)."""
    if isinstance(config, str):
        config = parse_model_server_config(config)
    if config.WhichOneof("config") == "custom_model_config":
        raise ValueError("custom_model_config is not supported; use model_config_list")
    out = []
    names = set()
    for mc in config.model_config_list.config:
        if mc.model_platform not in ("", "tensorflow"):
            raise ValueError(
                f"model {mc.name!r}: model_platform {mc.model_platform!r} is not supported "
                "(only 'tensorflow')"
            )
        if mc.name in names:
            raise ValueError(f"model {mc.name!r} is configured more than once")
        names.add(mc.name)
        policy = mc.model_version_policy
        choice = policy.WhichOneof("policy_choice")
        kwargs: dict[str, Any] = {}
        if choice == "all":
            kwargs["policy"] = "all"
        elif choice == "specific":
            kwargs["policy"] = "specific"
            kwargs["versions"] = tuple(int(v) for v in policy.specific.versions)
        else:
            kwargs["policy"] = "latest"
            if choice == "latest" and policy.latest.num_versions:
                kwargs["num_versions"] = int(policy.latest.num_versions)
        settings = ModelSettings(
            name=mc.name,
            base_path=mc.base_path,
            labels={k: int(v) for k, v in mc.version_labels.items()},
            **kwargs,
        )
        settings.validate()
        out.append(settings)
    return out


_VERSION_DIR_RE = re.compile(r"\d+")


def scan_versions(base_path: str) -> dict[int, str]:
    """Version → directory for the children of ``base_path`` whose names are integers.

    Other names (``temp-1700000000``, ``README``) are ignored, as TF Serving does; of
    duplicates such as ``7`` and ``007`` the first in sorted order wins.

    Raises:
      OSError: ``base_path`` cannot be listed.
    """
    found: dict[int, str] = {}
    for name in sorted(os.listdir(base_path)):
        if not _VERSION_DIR_RE.fullmatch(name):
            continue
        version = int(name)
        path = os.path.join(base_path, name)
        if version > _INT64_MAX or version in found or not os.path.isdir(path):
            continue
        found[version] = path
    return found


# ----------------------------------------------------------------------------------------
# Loaded models.


@dataclasses.dataclass
class _Signature:
    """One callable signature of a loaded version."""

    name: str
    sigdef: meta_graph_pb2.SignatureDef
    fn: Callable[..., Mapping[str, tf.Tensor]]
    inputs: dict[str, tuple[int, tuple[int, ...] | None]]  # alias → (dtype, shape | None)
    outputs: tuple[str, ...]

    @classmethod
    def create(cls, name: str, sigdef: meta_graph_pb2.SignatureDef, fn) -> _Signature:
        inputs = {}
        for alias, info in sigdef.inputs.items():
            shape = None
            if not info.tensor_shape.unknown_rank:
                shape = tuple(int(d.size) for d in info.tensor_shape.dim)
            inputs[alias] = (int(info.dtype), shape)
        return cls(name, sigdef, fn, inputs, tuple(sorted(sigdef.outputs)))


class Servable:
    """A loaded model version: the SavedModel's SignatureDefs and its callable signatures."""

    def __init__(self, name: str, version: int, path: str):
        self.name = name
        self.version = version
        self.path = path
        meta_graph = read_meta_graph(path)
        self.signature_defs = dict(meta_graph.signature_def)
        self.loaded = tf.saved_model.load(path, tags=["serve"])
        self.signatures: dict[str, _Signature] = {}
        for key, sigdef in self.signature_defs.items():
            fn = self.loaded.signatures.get(key)
            if fn is not None:  # e.g. __saved_model_init_op is a SignatureDef but no function
                self.signatures[key] = _Signature.create(key, sigdef, fn)

    def signature_def_map(self) -> get_model_metadata_pb2.SignatureDefMap:
        out = get_model_metadata_pb2.SignatureDefMap()
        for key, sigdef in self.signature_defs.items():
            out.signature_def[key].CopyFrom(sigdef)
        return out


def read_meta_graph(path: str, tag: str = "serve") -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef tagged ``tag`` of the SavedModel at ``path`` (exact SignatureDefs).

    Raises:
      ServingError: NOT_FOUND without a saved_model.pb(txt), DATA_LOSS when it cannot be
        parsed, NOT_FOUND when no MetaGraph has the tag.
    """
    pb = os.path.join(path, "saved_model.pb")
    pbtxt = os.path.join(path, "saved_model.pbtxt")
    saved_model = saved_model_pb2.SavedModel()
    if os.path.exists(pb):
        try:
            with open(pb, "rb") as f:
                saved_model.ParseFromString(f.read())
        except (DecodeError, RuntimeError, ValueError) as e:
            raise ServingError(
                grpc.StatusCode.DATA_LOSS, f"Can't parse {pb} as binary proto"
            ) from e
    elif os.path.exists(pbtxt):
        try:
            with open(pbtxt) as f:
                text_format.Parse(f.read(), saved_model)
        except (text_format.ParseError, UnicodeDecodeError) as e:
            raise ServingError(
                grpc.StatusCode.DATA_LOSS, f"Can't parse {pbtxt} as text proto"
            ) from e
    else:
        raise ServingError(
            grpc.StatusCode.NOT_FOUND,
            f"Could not find SavedModel .pb or .pbtxt at supplied export directory path: {path}",
        )
    for meta_graph in saved_model.meta_graphs:
        if tag in meta_graph.meta_info_def.tags:
            return meta_graph
    raise ServingError(
        grpc.StatusCode.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {tag} }}. To inspect "
        "available tag-sets in the SavedModel, please use the SavedModel CLI: "
        "`saved_model_cli`",
    )


@dataclasses.dataclass
class _VersionRecord:
    version: int
    path: str
    state: str = LOADING
    servable: Servable | None = None
    error: ServingError | None = None
    failed: bool = False
    attempts: int = 0
    retry_at: float = 0.0
    dir_id: tuple = ()


class _Model:
    def __init__(self, settings: ModelSettings):
        self.settings = settings
        self.versions: dict[int, _VersionRecord] = {}
        self.warned: str = ""

    def latest_available(self) -> _VersionRecord | None:
        ready = [r for r in self.versions.values() if r.state == AVAILABLE]
        return max(ready, key=lambda r: r.version) if ready else None


@dataclasses.dataclass(frozen=True)
class _Spec:
    """A request's model_spec."""

    name: str
    version: int | None = None
    label: str | None = None
    signature_name: str = ""

    @classmethod
    def from_proto(cls, spec) -> _Spec:
        choice = spec.WhichOneof("version_choice")
        return cls(
            name=spec.name,
            version=spec.version.value if choice == "version" else None,
            label=spec.version_label if choice == "version_label" else None,
            signature_name=spec.signature_name,
        )

    @property
    def signature(self) -> str:
        return self.signature_name or DEFAULT_SIGNATURE


def _dir_id(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_ino, st.st_mtime_ns)


# ----------------------------------------------------------------------------------------
# Batching.


class _BatchItem:
    __slots__ = ("inputs", "rows", "done", "result", "error")

    def __init__(self, inputs: dict[str, np.ndarray], rows: int):
        self.inputs = inputs
        self.rows = rows
        self.done = threading.Event()
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None


class _BatchQueue:
    def __init__(self, fn, lock: threading.Lock):
        self.fn = fn
        self.items: list[_BatchItem] = []
        self.cond = threading.Condition(lock)


class _Batcher:
    """Merges concurrent Predict requests to one signature into one call.

    One worker thread per (model, version, signature, input layout) key takes the queued
    requests (up to ``max_batch_size`` rows, waiting at most ``batch_timeout_micros`` after
    the first), concatenates every input along dim 0, runs the signature once and splits
    every output along dim 0. If an output's dim 0 is not the total row count, or the
    merged call fails, each request is run on its own instead, so results and errors are
    exactly those of unbatched calls. A worker exits after ``idle_seconds`` without work.
    """

    def __init__(self, run: Callable, max_batch_size: int, timeout_micros: int, idle_seconds=2.0):
        self._run = run
        self.max_batch_size = max_batch_size
        self.timeout = timeout_micros / 1e6
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._queues: dict[tuple, _BatchQueue] = {}
        self._stopped = False
        self.batches = 0
        self.requests = 0

    def submit(self, key: tuple, fn, inputs: dict[str, np.ndarray], rows: int):
        item = _BatchItem(inputs, rows)
        with self._lock:
            if self._stopped:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "Server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _BatchQueue(fn, self._lock)
                threading.Thread(
                    target=self._work, args=(key, queue), name="batcher", daemon=True
                ).start()
            queue.items.append(item)
            queue.cond.notify()
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for queue in self._queues.values():
                queue.cond.notify_all()

    def _take(self, key: tuple, queue: _BatchQueue) -> list[_BatchItem] | None:
        with self._lock:
            while not queue.items:
                if self._stopped or not queue.cond.wait(self.idle_seconds):
                    if not queue.items:
                        del self._queues[key]
                        return None
            deadline = time.monotonic() + self.timeout
            while not self._stopped:
                if sum(i.rows for i in queue.items) >= self.max_batch_size:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                queue.cond.wait(remaining)
            batch, rows = [], 0
            while queue.items and (not batch or rows + queue.items[0].rows <= self.max_batch_size):
                item = queue.items.pop(0)
                batch.append(item)
                rows += item.rows
            return batch

    def _work(self, key: tuple, queue: _BatchQueue) -> None:
        while True:
            batch = self._take(key, queue)
            if batch is None:
                return
            self.batches += 1
            self.requests += len(batch)
            if len(batch) == 1 or not self._run_merged(queue.fn, batch):
                for item in batch:
                    self._run_one(queue.fn, item)

    def _run_one(self, fn, item: _BatchItem) -> None:
        try:
            item.result = self._run(fn, item.inputs)
        except BaseException as e:
            item.error = e
        item.done.set()

    def _run_merged(self, fn, batch: list[_BatchItem]) -> bool:
        names = batch[0].inputs.keys()
        try:
            merged = {k: np.concatenate([i.inputs[k] for i in batch], axis=0) for k in names}
            outputs = self._run(fn, merged)
        except Exception:
            return False
        total = sum(i.rows for i in batch)
        if any(v.ndim == 0 or v.shape[0] != total for v in outputs.values()):
            return False
        offset = 0
        for item in batch:
            item.result = {k: v[offset : offset + item.rows] for k, v in outputs.items()}
            offset += item.rows
            item.done.set()
        return True


# ----------------------------------------------------------------------------------------
# The server.


class ModelServer:
    """Serves SavedModel versions over TF Serving's gRPC and REST APIs (see module doc).

    Args:
      models: model name → base path (each served with the ``latest`` policy).
      model_config: a ``ModelServerConfig`` proto or its text; combined with ``models``.
      model_config_file: a ``models.config`` file (text proto).
      host: the address both servers bind (``127.0.0.1`` by default: loopback only).
      grpc_port: gRPC port; 0 = any free port, None = no gRPC server.
      rest_port: REST port; 0 = any free port, None = no REST server.
      poll_seconds: how often base paths are listed; <= 0 = only once, at start.
      grpc_workers: threads serving gRPC requests.
      max_body_bytes: largest REST request body accepted (413 above).
      batching: merge concurrent Predict requests (see `_Batcher`); off by default.
      max_batch_size: most rows in one merged call.
      batch_timeout_micros: longest wait for more requests after the first of a batch.
      batching_signatures: the signatures whose Predict requests are batched; each must be
        row-wise (output row i depends only on input row i), which ``rank`` is not.
      enable_model_warmup: replay ``assets.extra/tf_serving_warmup_requests`` on load.
      max_num_load_retries: how often a failed version is retried (its directory unchanged).
      load_retry_interval_s: seconds between those retries; a version directory that is
        replaced (new inode or mtime) is retried at the next poll.
    """

    def __init__(
        self,
        models: Mapping[str, str] | None = None,
        *,
        model_config: model_server_config_pb2.ModelServerConfig | str | None = None,
        model_config_file: str | None = None,
        host: str = "127.0.0.1",
        grpc_port: int | None = 8500,
        rest_port: int | None = 8501,
        poll_seconds: float = 1.0,
        grpc_workers: int = 16,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        batching: bool = False,
        max_batch_size: int = 128,
        batch_timeout_micros: int = 1000,
        batching_signatures: Iterable[str] = DEFAULT_BATCHING_SIGNATURES,
        enable_model_warmup: bool = True,
        max_num_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
    ):
        settings = [ModelSettings(name, base) for name, base in (models or {}).items()]
        if model_config is not None:
            settings += settings_from_config(model_config)
        if model_config_file:
            settings += settings_from_config(load_model_server_config(model_config_file))
        self._check_settings(settings)
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be >= 1")
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.host = host
        self.grpc_port = grpc_port
        self.rest_port = rest_port
        self.poll_seconds = poll_seconds
        self.grpc_workers = grpc_workers
        self.max_body_bytes = max_body_bytes
        self.enable_model_warmup = enable_model_warmup
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval_s = load_retry_interval_s
        self.batching_signatures = frozenset(batching_signatures)
        self._batcher = (
            _Batcher(self._call_signature, max_batch_size, batch_timeout_micros)
            if batching
            else None
        )
        self._lock = threading.Lock()  # guards _models and every _VersionRecord
        self._poll_lock = threading.RLock()  # one reconcile at a time
        self._models = {s.name: _Model(s) for s in settings}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._poller: threading.Thread | None = None
        self._grpc_server: grpc.Server | None = None
        self._http_server: _HTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self._started = False
        self._stopped = False

    @staticmethod
    def _check_settings(settings: list[ModelSettings]) -> None:
        seen = set()
        for s in settings:
            s.validate()
            if s.name in seen:
                raise ValueError(f"model {s.name!r} is configured more than once")
            seen.add(s.name)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> ModelServer:
        """Starts polling and both servers; returns at once (see `wait_until_ready`).

        Raises:
          OSError: a port cannot be bound.
        """
        if self._started:
            raise RuntimeError("ModelServer.start() called twice")
        self._started = True
        try:
            if self.grpc_port is not None:
                self._start_grpc()
            if self.rest_port is not None:
                self._start_rest()
        except BaseException:
            self.stop()
            raise
        self._poller = threading.Thread(target=self._poll_loop, name="model-poller", daemon=True)
        self._poller.start()
        return self

    def _start_grpc(self) -> None:
        server = grpc.server(
            concurrent.futures.ThreadPoolExecutor(
                max_workers=self.grpc_workers, thread_name_prefix="grpc-serving"
            ),
            options=[
                ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionServicer(self), server
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelServicer(self), server)
        host = f"[{self.host}]" if ":" in self.host else self.host
        address = f"{host}:{self.grpc_port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as e:
            raise OSError(f"cannot bind gRPC to {address}: {e}") from e
        if not port:
            raise OSError(f"cannot bind gRPC to {address}")
        server.start()
        self._grpc_server = server
        self.grpc_port = port
        log.info("gRPC server listening on %s:%d", self.host, port)

    def _start_rest(self) -> None:
        cls = _HTTPServer6 if ":" in self.host else _HTTPServer
        httpd = cls((self.host, self.rest_port), _RestHandler)
        httpd.api = _RestApi(self)
        httpd.max_body_bytes = self.max_body_bytes
        self._http_server = httpd
        self.rest_port = httpd.server_address[1]
        self._http_thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="rest", daemon=True
        )
        self._http_thread.start()
        log.info("REST server listening on %s:%d", self.host, self.rest_port)

    def stop(self, grace: float = 1.0) -> None:
        """Stops polling and both servers, and unloads every version. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._wake.set()
        if self._http_server is not None:
            if self._http_thread is not None:
                self._http_server.shutdown()
            self._http_server.server_close()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait()
        if self._batcher is not None:
            self._batcher.stop()
        if self._poller is not None:
            self._poller.join()
        with self._lock:
            for model in self._models.values():
                for record in model.versions.values():
                    if record.state == AVAILABLE:
                        record.state = END
                    record.servable = None
        log.info("server stopped")

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Waits until every model has an AVAILABLE version; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                ready = all(m.latest_available() for m in self._models.values())
            if ready:
                return True
            if self._stop.is_set():
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.rest_port}"

    @property
    def batching_stats(self) -> dict[str, int]:
        """Merged calls and requests through the batcher (empty without batching)."""
        if self._batcher is None:
            return {}
        return {"batches": self._batcher.batches, "requests": self._batcher.requests}

    # -- configuration and versions -------------------------------------------------------

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig | str) -> None:
        """Replaces the served model set (TF Serving's HandleReloadConfigRequest).

        Models absent from ``config`` are unloaded; new ones are loaded before this returns.
        """
        settings = settings_from_config(config)
        self._check_settings(settings)
        with self._poll_lock:
            with self._lock:
                names = {s.name for s in settings}
                removed = [m for n, m in self._models.items() if n not in names]
                models = {}
                for s in settings:
                    model = self._models.get(s.name) or _Model(s)
                    model.settings = s
                    models[s.name] = model
                self._models = models
            for model in removed:
                for version in list(model.versions):
                    self._unload(model, version)
            self.poll_once()

    def poll_once(self) -> None:
        """Lists every base path once and loads/unloads versions accordingly."""
        with self._poll_lock:
            with self._lock:
                models = list(self._models.values())
            for model in models:
                if self._stop.is_set():
                    return
                try:
                    self._reconcile(model)
                except Exception:
                    log.exception("error while polling model %s", model.settings.name)

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            if self.poll_seconds <= 0:
                return
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def _reconcile(self, model: _Model) -> None:
        s = model.settings
        try:
            on_disk = scan_versions(s.base_path)
        except OSError as e:
            self._warn_once(model, f"cannot list base path {s.base_path} of {s.name}: {e}")
            return
        if not on_disk:
            self._warn_once(
                model, f"No versions of servable {s.name} found under base path {s.base_path}"
            )
        else:
            model.warned = ""
        aspired = s.aspired(on_disk)
        now = time.monotonic()
        for version in sorted(aspired, reverse=True):
            if self._stop.is_set():
                return
            path = on_disk[version]
            with self._lock:
                record = model.versions.get(version)
                if record is not None:
                    if record.state in (AVAILABLE, LOADING):
                        continue
                    if (
                        record.failed
                        and record.dir_id == _dir_id(path)
                        and (record.attempts > self.max_num_load_retries or now < record.retry_at)
                    ):
                        continue
                    if record.dir_id != _dir_id(path) or record.path != path:
                        record.attempts = 0
                    record.path = path
                else:
                    record = model.versions[version] = _VersionRecord(version, path)
                record.state = LOADING
                record.error = None
            self._load(model, record)
        # Unload versions no longer aspired, never leaving the model without one.
        with self._lock:
            available = sorted(v for v, r in model.versions.items() if r.state == AVAILABLE)
            for version, record in model.versions.items():
                if record.failed and version not in aspired:
                    record.attempts = 0
                    record.retry_at = 0.0
        unaspired = [v for v in available if v not in aspired]
        if not any(v in aspired for v in available):
            unaspired = unaspired[:-1]
        for version in unaspired:
            self._unload(model, version)

    def _warn_once(self, model: _Model, message: str) -> None:
        if model.warned != message:
            log.warning(message)
            model.warned = message

    def _load(self, model: _Model, record: _VersionRecord) -> None:
        name = model.settings.name
        log.info("loading %s version %d from %s", name, record.version, record.path)
        dir_id = _dir_id(record.path)
        start = time.monotonic()
        try:
            servable = Servable(name, record.version, record.path)
            if self.enable_model_warmup:
                self._warmup(servable)
        except Exception as e:
            error = _error_from_exception(e)
            with self._lock:
                record.state = END
                record.error = error
                record.failed = True
                record.attempts += 1
                record.retry_at = time.monotonic() + self.load_retry_interval_s
                record.dir_id = dir_id
            log.error(
                "failed to load %s version %d (%s): %s",
                name,
                record.version,
                error.code.name,
                error.message,
            )
            return
        with self._lock:
            record.servable = servable
            record.state = AVAILABLE
            record.failed = False
            record.error = None
            record.attempts = 0
            record.dir_id = dir_id
        log.info("%s version %d AVAILABLE (%.1f s)", name, record.version, time.monotonic() - start)

    def _unload(self, model: _Model, version: int) -> None:
        with self._lock:
            record = model.versions.get(version)
            if record is None or record.state != AVAILABLE:
                return
            record.state = UNLOADING
            record.servable = None  # in-flight requests keep their own reference
            record.state = END
        log.info("unloaded %s version %d", model.settings.name, version)

    def _warmup(self, servable: Servable) -> None:
        path = os.path.join(servable.path, WARMUP_FILE)
        if not os.path.exists(path):
            return
        records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
        if len(records) > MAX_WARMUP_RECORDS:
            raise _invalid(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
            )
        for raw in records:
            entry = prediction_log_pb2.PredictionLog.FromString(raw)
            kind = entry.WhichOneof("log_type")
            if kind == "predict_log":
                self._predict_on(servable, entry.predict_log.request)
            elif kind == "classify_log":
                request = entry.classify_log.request
                self._classify_on(servable, request.model_spec.signature_name, request.input)
            elif kind == "regress_log":
                request = entry.regress_log.request
                self._regress_on(servable, request.model_spec.signature_name, request.input)
            elif kind == "multi_inference_log":
                self._multi_inference_on(servable, entry.multi_inference_log.request)
            else:
                raise _invalid(f"Unsupported log_type for warmup: {kind}")
        log.info(
            "%s version %d: replayed %d warmup requests",
            servable.name,
            servable.version,
            len(records),
        )

    # -- resolution -----------------------------------------------------------------------

    def _resolve(self, spec: _Spec) -> Servable:
        with self._lock:
            model = self._models.get(spec.name)
            version = spec.version
            if spec.label is not None:
                labels = model.settings.labels if model else {}
                if spec.label not in labels:
                    raise _invalid(f"Unrecognized servable version label: {spec.label}")
                version = labels[spec.label]
            if model is not None:
                if version is None:
                    record = model.latest_available()
                else:
                    record = model.versions.get(version)
                if record is not None and record.state == AVAILABLE and record.servable:
                    return record.servable
        request = f"Latest({spec.name})" if version is None else f"Specific({spec.name}, {version})"
        raise ServingError(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: {request}")

    def model_status(self, spec: _Spec) -> get_model_status_pb2.GetModelStatusResponse:
        response = get_model_status_pb2.GetModelStatusResponse()
        with self._lock:
            model = self._models.get(spec.name)
            records = sorted(model.versions.values() if model else [], key=lambda r: -r.version)
            if spec.label is not None:
                labels = model.settings.labels if model else {}
                if spec.label not in labels:
                    raise _invalid(f"Unrecognized servable version label: {spec.label}")
                wanted = labels[spec.label]
            else:
                wanted = spec.version
            if wanted is not None:
                records = [r for r in records if r.version == wanted]
                if not records:
                    raise ServingError(
                        grpc.StatusCode.NOT_FOUND,
                        f"Could not find version {wanted} of model {spec.name}",
                    )
            elif not records:
                raise ServingError(
                    grpc.StatusCode.NOT_FOUND, f"Could not find any versions of model {spec.name}"
                )
            for r in records:
                status = response.model_version_status.add()
                status.version = r.version
                status.state = _STATE_ENUM.Value(r.state)
                status.status.SetInParent()  # printed as {"error_code": "OK", ...} when OK
                if r.error is not None:
                    status.status.error_code = r.error.code.value[0]
                    status.status.error_message = r.error.message
        return response

    # -- running signatures ---------------------------------------------------------------

    @staticmethod
    def _call_signature(fn, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = fn(**inputs)
            return {k: v.numpy() for k, v in outputs.items()}
        except Exception as e:
            raise _error_from_exception(e) from e

    def _execute(self, servable: Servable, sig: _Signature, inputs: dict[str, np.ndarray]):
        if (
            self._batcher is not None
            and sig.name in self.batching_signatures
            and inputs
            and all(v.ndim >= 1 for v in inputs.values())
        ):
            rows = {v.shape[0] for v in inputs.values()}
            if len(rows) == 1:
                layout = tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in inputs.items()))
                key = (servable.name, servable.version, id(servable), sig.name, layout)
                return self._batcher.submit(key, sig.fn, inputs, rows.pop())
        return self._call_signature(sig.fn, inputs)

    @staticmethod
    def _predict_signature(servable: Servable, name: str) -> _Signature:
        sig = servable.signatures.get(name)
        if sig is None:
            raise ServingError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{name}" not found.',
            )
        return sig

    @staticmethod
    def _check_input_names(sig: _Signature, names: Iterable[str]) -> None:
        sent = set(names)
        wanted = set(sig.inputs)
        if len(sent) != len(wanted):
            raise _invalid(
                f"input size does not match signature: {len(sent)}!={len(wanted)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
                f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
            )
        extra = sorted(sent - wanted)
        if extra:
            raise _invalid(
                f"input tensor alias not found in signature: {extra[0]}. Inputs expected to be "
                f"in the set {{{','.join(sorted(wanted))}}}."
            )

    @staticmethod
    def _check_shapes(sig: _Signature, inputs: Mapping[str, np.ndarray]) -> None:
        for alias, value in inputs.items():
            _, shape = sig.inputs[alias]
            if shape is None:
                continue
            if value.ndim != len(shape) or any(
                d >= 0 and d != n for d, n in zip(shape, value.shape)
            ):
                raise _invalid(
                    f"input tensor {alias} has shape [{','.join(map(str, value.shape))}] "
                    f"but signature {sig.name} expects [{','.join(map(str, shape))}]"
                )

    def _check_output_filter(self, sig: _Signature, output_filter: Iterable[str]) -> list[str]:
        seen: list[str] = []
        for alias in output_filter:
            if alias not in sig.sigdef.outputs:
                raise _invalid(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sig.outputs)}}}."
                )
            if alias in seen:
                raise _invalid(f"duplicate output tensor alias: {alias}")
            seen.append(alias)
        return seen or list(sig.outputs)

    def run_predict(
        self,
        servable: Servable,
        sig: _Signature,
        inputs: dict[str, np.ndarray],
        output_filter: Iterable[str] = (),
    ) -> dict[str, np.ndarray]:
        """Runs ``sig`` on inputs already named and typed as it expects; checks shapes."""
        wanted = self._check_output_filter(sig, output_filter)
        self._check_shapes(sig, inputs)
        outputs = self._execute(servable, sig, inputs)
        return {k: outputs[k] for k in wanted}

    def _predict_on(
        self, servable: Servable, request: predict_pb2.PredictRequest
    ) -> predict_pb2.PredictResponse:
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        sig = self._predict_signature(servable, name)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = name
        self._check_input_names(sig, request.inputs.keys())
        inputs = {}
        for alias, proto in request.inputs.items():
            want, _ = sig.inputs[alias]
            if proto.dtype != want:
                raise _invalid(
                    f"Expects arg for input {alias} to be {_dtype_name(want)} but "
                    f"{_dtype_name(proto.dtype)} is provided"
                )
            try:
                inputs[alias] = tf.make_ndarray(proto)
            except Exception as e:
                raise _invalid(f"tensor parsing error: {alias}") from e
        outputs = self.run_predict(servable, sig, inputs, request.output_filter)
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
        return response

    @staticmethod
    def _examples_tensor(input_proto: input_pb2.Input) -> np.ndarray:
        """The serialized tf.Examples of an Input (context bytes + example bytes = merge)."""
        kind = input_proto.WhichOneof("kind")
        if kind == "example_list":
            serialized = [e.SerializeToString() for e in input_proto.example_list.examples]
        elif kind == "example_list_with_context":
            lists = input_proto.example_list_with_context
            context = lists.context.SerializeToString()
            serialized = [context + e.SerializeToString() for e in lists.examples]
        else:
            serialized = []
        if not serialized:
            raise _invalid("Input is empty.")
        out = np.empty(len(serialized), dtype=object)
        out[:] = serialized
        return out

    @staticmethod
    def _example_signature(servable: Servable, name: str, method: str) -> _Signature:
        name = name or DEFAULT_SIGNATURE
        sigdef = servable.signature_defs.get(name)
        sig = servable.signatures.get(name)
        if sigdef is None or sig is None:
            raise _invalid(f"No signature was found with the name: {name}")
        debug = text_format.MessageToString(sigdef, as_one_line=True)
        if len(sigdef.inputs) != 1:
            raise _invalid("Expected one input Tensor.")
        if method == "classify":
            if len(sigdef.outputs) not in (1, 2):
                raise _invalid(f"Expected one or two output Tensors, found {len(sigdef.outputs)}")
            if "inputs" not in sigdef.inputs:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"No classification inputs found in SignatureDef: {debug}",
                )
            if "classes" not in sigdef.outputs and "scores" not in sigdef.outputs:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "Expected classification signature outputs to contain at least one of "
                    f'"classes" or "scores". Signature was: {debug}',
                )
        else:
            if len(sigdef.outputs) != 1:
                raise _invalid("Expected one output Tensor.")
            if "inputs" not in sigdef.inputs:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"No regression inputs found in SignatureDef: {debug}",
                )
            if "outputs" not in sigdef.outputs:
                raise ServingError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"No regression outputs found in SignatureDef: {debug}",
                )
        if sigdef.inputs["inputs"].dtype != types_pb2.DT_STRING:
            raise _invalid(f"Signature {name}: input 'inputs' must be DT_STRING")
        return sig

    def _classify_on(
        self, servable: Servable, signature_name: str, input_proto: input_pb2.Input
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Runs a classify signature; returns (classes [N, C] | None, scores [N, C] | None)."""
        sig = self._example_signature(servable, signature_name, "classify")
        examples = self._examples_tensor(input_proto)
        n = len(examples)
        outputs = self._call_signature(sig.fn, {"inputs": examples})
        classes, scores = outputs.get("classes"), outputs.get("scores")
        checks = (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT"))
        for alias, tensor, want in checks:
            if tensor is None:
                continue
            if tensor.ndim != 2:
                raise _invalid(
                    "Expected Tensor shape: [batch_size num_classes] but got "
                    f"[{','.join(map(str, tensor.shape))}]"
                )
            ok = tensor.dtype == object if want == "DT_STRING" else tensor.dtype == np.float32
            if not ok:
                raise _invalid(f"Expected {alias} Tensor of {want}. Got: {tensor.dtype}")
            if tensor.shape[0] != n:
                raise _invalid(f"Expected {alias} output batch size of {n}. Got: {tensor.shape[0]}")
        if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
            raise _invalid(
                "Tensors class and score should match in dim_size(1). Got "
                f"{classes.shape[1]} vs. {scores.shape[1]}"
            )
        return classes, scores

    def _regress_on(
        self, servable: Servable, signature_name: str, input_proto: input_pb2.Input
    ) -> np.ndarray:
        """Runs a regress signature; returns the values [N]."""
        sig = self._example_signature(servable, signature_name, "regress")
        examples = self._examples_tensor(input_proto)
        n = len(examples)
        values = self._call_signature(sig.fn, {"inputs": examples})["outputs"]
        if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
            raise _invalid(
                "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but "
                f"got [{','.join(map(str, values.shape))}]"
            )
        if values.shape[0] != n:
            raise _invalid(
                f"Input batch size did not match output batch size: {n} vs. {values.shape[0]}"
            )
        if values.dtype != np.float32:
            raise _invalid(f"Expected output Tensor of DT_FLOAT. Got: {values.dtype}")
        return values.reshape(-1)

    @staticmethod
    def _classification_result(classes, scores, result) -> None:
        n, c = (classes if classes is not None else scores).shape
        for i in range(n):
            classification = result.classifications.add()
            for j in range(c):
                cls = classification.classes.add()
                if classes is not None:
                    cls.label = classes[i, j].decode("utf-8", "replace")
                if scores is not None:
                    cls.score = float(scores[i, j])

    def _multi_inference_on(
        self, servable: Servable, request: inference_pb2.MultiInferenceRequest
    ) -> inference_pb2.MultiInferenceResponse:
        response = inference_pb2.MultiInferenceResponse()
        seen = set()
        for task in request.tasks:
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if name in seen:
                raise _invalid(f"Duplicate evaluation of signature: {name}")
            seen.add(name)
            if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
                raise ServingError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"Unsupported signature method_name: {task.method_name}",
                )
        for task in request.tasks:
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            result = response.results.add()
            result.model_spec.name = task.model_spec.name
            result.model_spec.version.value = servable.version
            result.model_spec.signature_name = name
            if task.method_name == CLASSIFY_METHOD:
                classes, scores = self._classify_on(servable, name, request.input)
                self._classification_result(classes, scores, result.classification_result)
            else:
                values = self._regress_on(servable, name, request.input)
                result.regression_result.regressions.extend(
                    regression_pb2.Regression(value=float(v)) for v in values
                )
        return response

    # -- the API (gRPC messages in and out; raise ServingError) ---------------------------

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        servable = self._resolve(_Spec.from_proto(request.model_spec))
        return self._predict_on(servable, request)

    def classify(
        self, request: classification_pb2.ClassificationRequest
    ) -> classification_pb2.ClassificationResponse:
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        spec = _Spec.from_proto(request.model_spec)
        servable = self._resolve(spec)
        classes, scores = self._classify_on(servable, spec.signature_name, request.input)
        response = classification_pb2.ClassificationResponse()
        _fill_spec(response.model_spec, spec, servable.version)
        self._classification_result(classes, scores, response.result)
        return response

    def regress(
        self, request: regression_pb2.RegressionRequest
    ) -> regression_pb2.RegressionResponse:
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        spec = _Spec.from_proto(request.model_spec)
        servable = self._resolve(spec)
        values = self._regress_on(servable, spec.signature_name, request.input)
        response = regression_pb2.RegressionResponse()
        _fill_spec(response.model_spec, spec, servable.version)
        response.result.regressions.extend(
            regression_pb2.Regression(value=float(v)) for v in values
        )
        return response

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest
    ) -> inference_pb2.MultiInferenceResponse:
        if not request.tasks:
            raise _invalid("Expected at least one task")
        first = request.tasks[0].model_spec
        for task in request.tasks:
            if task.model_spec.name != first.name:
                raise _invalid(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            if task.model_spec.WhichOneof("version_choice") != first.WhichOneof(
                "version_choice"
            ) or (
                task.model_spec.version.value != first.version.value
                or task.model_spec.version_label != first.version_label
            ):
                raise _invalid(
                    "ModelSpec version must be the same for all tasks in a MultiInferenceRequest."
                )
        servable = self._resolve(_Spec.from_proto(first))
        return self._multi_inference_on(servable, request)

    def get_model_metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise _invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise _invalid(f"Metadata field {field} is not supported")
        servable = self._resolve(_Spec.from_proto(request.model_spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(servable.signature_def_map())
        return response

    def get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise _invalid("Missing ModelSpec")
        if not request.model_spec.name:
            raise _invalid("Missing model name in request.")
        return self.model_status(_Spec.from_proto(request.model_spec))

    def handle_reload_config(
        self, request: model_management_pb2.ReloadConfigRequest
    ) -> model_management_pb2.ReloadConfigResponse:
        try:
            self.reload_config(request.config)
        except ValueError as e:
            raise _invalid(str(e)) from e
        return model_management_pb2.ReloadConfigResponse()


def _fill_spec(out, spec: _Spec, version: int) -> None:
    out.name = spec.name
    out.version.value = version
    out.signature_name = spec.signature


# ----------------------------------------------------------------------------------------
# gRPC.


def _grpc_message(message: str) -> str:
    if len(message) > _GRPC_MESSAGE_LIMIT:
        return message[:_GRPC_MESSAGE_LIMIT] + "...TRUNCATED"
    return message


def _grpc_call(context: grpc.ServicerContext, fn: Callable, request):
    try:
        return fn(request)
    except ServingError as e:
        context.abort(e.code, _grpc_message(e.message))
    except Exception as e:
        log.exception("internal error in %s", getattr(fn, "__name__", fn))
        context.abort(grpc.StatusCode.INTERNAL, _grpc_message(f"{type(e).__name__}: {e}"))


class _PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def Predict(self, request, context):
        return _grpc_call(context, self._server.predict, request)

    def Classify(self, request, context):
        return _grpc_call(context, self._server.classify, request)

    def Regress(self, request, context):
        return _grpc_call(context, self._server.regress, request)

    def MultiInference(self, request, context):
        return _grpc_call(context, self._server.multi_inference, request)

    def GetModelMetadata(self, request, context):
        return _grpc_call(context, self._server.get_model_metadata, request)


class _ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server: ModelServer):
        self._server = server

    def GetModelStatus(self, request, context):
        return _grpc_call(context, self._server.get_model_status, request)

    def HandleReloadConfigRequest(self, request, context):
        return _grpc_call(context, self._server.handle_reload_config, request)


# ----------------------------------------------------------------------------------------
# JSON ↔ tensors and tf.Examples (tensorflow_serving/util/json_tensor.cc).

_FLOAT_TYPES = {
    types_pb2.DT_FLOAT: (np.float32, 2**24 - 1, float(np.finfo(np.float32).max)),
    types_pb2.DT_DOUBLE: (np.float64, 2**53 - 1, float(np.finfo(np.float64).max)),
    types_pb2.DT_HALF: (np.float16, 2**11 - 1, float(np.finfo(np.float16).max)),
}
_INT_TYPES = {
    types_pb2.DT_INT64: np.int64,
    types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT16: np.int16,
    types_pb2.DT_INT8: np.int8,
    types_pb2.DT_UINT8: np.uint8,
    types_pb2.DT_UINT16: np.uint16,
    types_pb2.DT_UINT32: np.uint32,
    types_pb2.DT_UINT64: np.uint64,
}
_MAX_JSON_IN_MESSAGE = 512


def _json_str(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if len(text) > _MAX_JSON_IN_MESSAGE:
        text = text[:_MAX_JSON_IN_MESSAGE] + "..."
    return text


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _b64_decode(value: Any) -> bytes:
    if not _is_b64(value):
        raise _invalid(f"JSON Value: {_json_str(value)} not formatted correctly for base64 data")
    text = value["b64"]
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise _invalid("Unable to base64 decode") from e


def _type_error(value: Any, dtype: int) -> ServingError:
    return _invalid(
        f"JSON Value: {_json_str(value)} Type: {_json_type(value)} is not of expected type: "
        f"{_dtype_name(dtype)}"
    )


def _json_leaf(value: Any, dtype: int) -> Any:
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, dict):
            return _b64_decode(value)
        raise _type_error(value, dtype)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if dtype == types_pb2.DT_BOOL and isinstance(value, bool):
            return value
        raise _type_error(value, dtype)
    if dtype in _FLOAT_TYPES:
        _, max_int, max_value = _FLOAT_TYPES[dtype]
        lossy = (
            abs(value) > max_int
            if isinstance(value, int)
            else np.isfinite(value) and abs(value) > max_value
        )
        if lossy:
            raise _invalid(
                f"Cannot convert JSON value: {_json_str(value)} to {_dtype_name(dtype)} without "
                "loss of precision."
            )
        return value
    if dtype in _INT_TYPES:
        info = np.iinfo(_INT_TYPES[dtype])
        if isinstance(value, float) or not info.min <= value <= info.max:
            raise _type_error(value, dtype)
        return value
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED,
        f"Conversion of JSON Value: {_json_str(value)} to type: {_dtype_name(dtype)}",
    )


def _dense_shape(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _fill_leaves(value: Any, level: int, shape: tuple, dtype: int, out: list) -> None:
    rank = len(shape)
    if not isinstance(value, list):
        if level != rank:
            raise _invalid(
                f"JSON Value: {_json_str(value)} found at incorrect level: {level + 1} in the "
                f"JSON DOM. Expected at level: {rank}"
            )
        out.append(_json_leaf(value, dtype))
        return
    if level >= rank:
        raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(value) != shape[level]:
        raise _invalid(
            f"Encountered list at unexpected size: {len(value)} at level: {level} expected "
            f"size: {shape[level]}"
        )
    for v in value:
        _fill_leaves(v, level + 1, shape, dtype, out)


def _numpy_dtype(dtype: int):
    if dtype == types_pb2.DT_STRING:
        return object
    if dtype in _FLOAT_TYPES:
        return _FLOAT_TYPES[dtype][0]
    if dtype in _INT_TYPES:
        return _INT_TYPES[dtype]
    if dtype == types_pb2.DT_BOOL:
        return np.bool_
    raise ServingError(
        grpc.StatusCode.UNIMPLEMENTED, f"JSON conversion to type {_dtype_name(dtype)}"
    )


def _fast_numeric(value: Any, dtype: int) -> np.ndarray | None:
    """Vectorized conversion of a well-formed numeric JSON value; None → use the slow path."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = arr.dtype.kind
    if dtype in _FLOAT_TYPES:
        np_type, max_int, max_value = _FLOAT_TYPES[dtype]
        if kind == "f":
            finite = arr[np.isfinite(arr)]
            if finite.size and np.abs(finite).max() > max_value:
                return None
        elif kind in "iu":
            if arr.size and (arr.max() > max_int or arr.min() < -max_int):
                return None
        else:
            return None
        return arr.astype(np_type)
    if dtype in _INT_TYPES:
        info = np.iinfo(_INT_TYPES[dtype])
        if kind not in "iu" or (arr.size and (arr.max() > info.max or arr.min() < info.min)):
            return None
        return arr.astype(_INT_TYPES[dtype])
    if dtype == types_pb2.DT_BOOL and kind == "b":
        return arr
    return None


def json_to_array(value: Any, dtype: int) -> np.ndarray:
    """A JSON value (scalar or nested lists) → ndarray of the TF ``dtype`` enum.

    Follows TF Serving: strings or ``{"b64": ...}`` for DT_STRING, numbers for float types
    (integers beyond the float's exact range are refused), integer literals for int types.
    """
    if dtype != types_pb2.DT_STRING:
        arr = _fast_numeric(value, dtype)
        if arr is not None:
            return arr
    shape = _dense_shape(value)
    flat: list = []
    _fill_leaves(value, 0, shape, dtype, flat)
    np_type = _numpy_dtype(dtype)
    if np_type is object:
        arr = np.empty(len(flat), dtype=object)
        arr[:] = flat
        return arr.reshape(shape)
    return np.array(flat, dtype=np_type).reshape(shape)


def array_to_json(value: np.ndarray, alias: str = "") -> Any:
    """An output tensor → JSON (float32 in its shortest round-trip form; ``*_bytes`` → b64)."""
    if value.dtype == object or value.dtype.kind == "S":
        if alias.endswith("_bytes"):
            convert = lambda b: {"b64": base64.b64encode(b).decode("ascii")}
        else:
            convert = lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)
        flat = np.empty(value.size, dtype=object)
        flat[:] = [convert(b) for b in value.reshape(-1)]
        return flat.reshape(value.shape).tolist()
    if value.dtype in (np.float32, np.float16):
        return value.astype(str).astype(np.float64).tolist()
    return value.tolist()


def json_to_example(obj: Any) -> example_pb2.Example:
    """A JSON object → tf.Example (TF Serving's Classify/Regress REST conversion).

    A string or ``{"b64": ...}`` → bytes_list; a number written with a decimal point or an
    exponent → float_list; an integer literal or true/false → int64_list; a list holds
    several values of one kind.
    """
    if not isinstance(obj, dict):
        raise _invalid(f"Example must be JSON object but got JSON {_json_type(obj)}")
    example = example_pb2.Example()
    features = example.features.feature
    for name, content in obj.items():
        values = content if isinstance(content, list) else [content]
        kind = None
        out: list = []
        for v in values:
            if isinstance(v, bool):
                this, item = "int64", int(v)
            elif isinstance(v, str):
                this, item = "bytes", v.encode("utf-8")
            elif isinstance(v, dict) and _is_b64(v):
                this, item = "bytes", _b64_decode(v)
            elif isinstance(v, float):
                this, item = "float", v
                if np.isfinite(v) and abs(v) > _FLOAT_TYPES[types_pb2.DT_FLOAT][2]:
                    raise _invalid(
                        f"Cannot convert JSON value: {_json_str(v)} to float without loss of "
                        "precision."
                    )
            elif isinstance(v, int):
                if v > _INT64_MAX:
                    if v < 2**64:
                        raise _invalid(
                            f"Feature: {name} has uint64 element. Only int64 is supported."
                        )
                    this, item = "float", float(v)
                elif v < -(2**63):
                    this, item = "float", float(v)
                else:
                    this, item = "int64", v
            else:
                raise _invalid(
                    f"Feature: {name} has element with unexpected JSON type: {_json_type(v)}"
                )
            if kind is not None and this != kind:
                raise _invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")
            kind = this
            out.append(item)
        feature = feature_pb2.Feature()
        if kind == "bytes":
            feature.bytes_list.value.extend(out)
        elif kind == "float":
            feature.float_list.value.extend(out)
        elif kind == "int64":
            feature.int64_list.value.extend(out)
        features[name].CopyFrom(feature)
    return example


# ----------------------------------------------------------------------------------------
# REST.

_V1_RE = re.compile(r"(?i)/v1/.*")
_PREDICT_RE = re.compile(
    r"(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r":(classify|regress|predict)"
)
_STATUS_RE = re.compile(
    r"(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
    r"(?:/(metadata))?"
)
_RAPIDJSON_MESSAGES = {
    "Expecting value": "Invalid value.",
    "Extra data": "The document root must not be followed by other values.",
    "Expecting property name enclosed in double quotes": "Missing a name for object member.",
    "Expecting ':' delimiter": "Missing a colon after a name of object member.",
    "Unterminated string starting at": "Missing a closing quotation mark in string.",
    "Invalid control character at": "Invalid encoding in string.",
}


class _RestApi:
    """TF Serving's REST handler: (method, path, body) → (HTTP status, JSON object)."""

    def __init__(self, server: ModelServer):
        self.server = server

    def handle(self, method: str, raw_path: str, body: bytes) -> tuple[int, Any]:
        path = urllib.parse.urlsplit(raw_path).path
        if not _V1_RE.fullmatch(path):
            return 404, {"error": f"Not found: {method} {path}"}
        try:
            return 200, self._dispatch(method, path, body)
        except ServingError as e:
            return e.http_status, {"error": e.message}

    def _dispatch(self, method: str, path: str, body: bytes) -> Any:
        if method == "POST":
            match = _PREDICT_RE.fullmatch(path)
            if match:
                name, version, label, verb = match.groups()
                spec = self._spec(name, version, label)
                verb = verb.lower()
                if verb == "predict":
                    return self._predict(spec, body)
                return self._classify_regress(spec, body, verb)
        elif method == "GET":
            match = _STATUS_RE.fullmatch(path)
            if match:
                name, version, label, metadata = match.groups()
                if not name:
                    raise _invalid("Missing model name in request.")
                spec = self._spec(name, version, label)
                if metadata:
                    return self._metadata(spec)
                response = self.server.model_status(spec)
                return json_format.MessageToDict(
                    response,
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
        raise _invalid(f"Malformed request: {method} {path}")

    @staticmethod
    def _spec(name: str, version: str | None, label: str | None) -> _Spec:
        number = None
        if version is not None:
            number = int(version)
            if number > _INT64_MAX:
                raise _invalid(f"Failed to convert version: {version} to numeric.")
        return _Spec(
            name=urllib.parse.unquote(name),
            version=number,
            label=urllib.parse.unquote(label) if label is not None else None,
        )

    @staticmethod
    def _parse(body: bytes) -> dict:
        if not body:
            raise _invalid("JSON Parse error: The document is empty")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _invalid(
                f"JSON Parse error: Invalid encoding in string. at offset: {e.start}"
            ) from e
        if not text.strip():
            raise _invalid(f"JSON Parse error: The document is empty. at offset: {len(text)}")
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            message = _RAPIDJSON_MESSAGES.get(e.msg, e.msg)
            raise _invalid(f"JSON Parse error: {message} at offset: {e.pos}") from e
        except RecursionError as e:
            raise _invalid("JSON Parse error: The document is too deeply nested.") from e
        if not isinstance(doc, dict):
            raise _invalid(f"JSON Value: {_json_str(doc)} Is not object")
        return doc

    @staticmethod
    def _signature_name(doc: dict) -> str:
        name = doc.get("signature_name", "")
        if not isinstance(name, str):
            raise _invalid(
                f"JSON Value: {_json_str(doc)} not formatted correctly. 'signature_name' key "
                "must be a string value."
            )
        return name

    def _predict(self, spec: _Spec, body: bytes) -> Any:
        doc = self._parse(body)
        name = self._signature_name(doc) or DEFAULT_SIGNATURE
        servable = self.server._resolve(spec)
        sig = servable.signatures.get(name)
        if sig is None:
            raise _invalid(f'Serving signature name: "{name}" not found in signature def')
        if not sig.inputs:
            raise _invalid(f"Failed to get input map for signature: {name}")
        if "instances" in doc and "inputs" in doc:
            raise _invalid(
                f"JSON Value: {_json_str(doc)} Not formatted correctly expecting only one of "
                "'inputs' or 'instances' keys to exist "
            )
        if "instances" in doc:
            instances = doc["instances"]
            if not isinstance(instances, list):
                raise _invalid(
                    f"JSON Value: {_json_str(doc)} Expecting 'instances' to be an list/array"
                )
            if not instances:
                raise _invalid(f"JSON Value: {_json_str(doc)} No values in 'instances' array")
            inputs = self._instances(instances, sig)
            row = True
        elif "inputs" in doc:
            inputs = self._columns(doc["inputs"], sig)
            row = False
        else:
            raise _invalid("Missing 'inputs' or 'instances' key")
        outputs = self.server.run_predict(servable, sig, inputs)
        if row:
            return {"predictions": self._rows_json(outputs)}
        if len(outputs) == 1:
            ((alias, value),) = outputs.items()
            return {"outputs": array_to_json(value, alias)}
        return {"outputs": {k: array_to_json(v, k) for k, v in sorted(outputs.items())}}

    @staticmethod
    def _instances(instances: list, sig: _Signature) -> dict[str, np.ndarray]:
        is_object = lambda v: isinstance(v, dict) and not _is_b64(v)
        if not isinstance(instances[0], dict) and len(sig.inputs) > 1:
            raise _invalid(
                "instances is a plain list, but expecting list of objects as multiple input "
                "tensors required as per tensorinfo_map"
            )
        names = sorted(sig.inputs)
        if is_object(instances[0]):
            for i, row in enumerate(instances):
                if not is_object(row):
                    raise _invalid(f"Expecting object but got list at item {i} of input list")
                for key in row:
                    if key not in sig.inputs:
                        raise _invalid(
                            f"Failed to process element: {i} key: {key} of 'instances' list. "
                            f"Error: INVALID_ARGUMENT: JSON object: does not have named "
                            f"input: {key}"
                        )
                if len(row) != len(names):
                    raise _invalid(
                        f"Failed to process element: {i} of 'instances' list. JSON object: "
                        f"{_json_str(row)} keys must be equal to: {','.join(names)}"
                    )
            columns = {name: [row[name] for row in instances] for name in names}
            keyed = True
        else:
            for i, row in enumerate(instances):
                if is_object(row):
                    raise _invalid(f"Expecting value/list but got object at item {i} of input list")
            columns = {names[0]: instances}
            keyed = False
        out = {}
        for name, column in columns.items():
            dtype = sig.inputs[name][0]
            try:
                out[name] = json_to_array(column, dtype)
            except ServingError as e:
                precise = _RestApi._element_error(column, name if keyed else None, dtype)
                raise (precise or e) from None
        return out

    @staticmethod
    def _element_error(column: list, key: str | None, dtype: int) -> ServingError | None:
        """The TF-Serving-style error naming the first bad element of an instances list."""
        where = (lambda i: f"{i} key: {key}") if key is not None else (lambda i: f"{i}")
        first_shape = None
        for i, value in enumerate(column):
            try:
                arr = json_to_array(value, dtype)
            except ServingError as e:
                return _invalid(
                    f"Failed to process element: {where(i)} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: {e.message}"
                )
            if first_shape is None:
                first_shape = arr.shape
            elif arr.shape != first_shape:
                size = int(np.prod(first_shape))
                detail = (
                    f"Expecting tensor size: {size} but got: {arr.size}"
                    if arr.size != size
                    else f"Expecting shape [{','.join(map(str, first_shape))}] but got: "
                    f"[{','.join(map(str, arr.shape))}]"
                )
                return _invalid(
                    f"Failed to process element: {where(i)} of 'instances' list. Error: "
                    f"INVALID_ARGUMENT: {detail}"
                )
        return None

    @staticmethod
    def _columns(value: Any, sig: _Signature) -> dict[str, np.ndarray]:
        if not isinstance(value, dict) or _is_b64(value):
            if len(sig.inputs) > 1:
                raise _invalid(
                    "inputs is a plain value/list, but expecting an object as multiple input "
                    "tensors required as per tensorinfo_map"
                )
            ((name, (dtype, _)),) = sig.inputs.items()
            return {name: json_to_array(value, dtype)}
        out = {}
        for name in sorted(sig.inputs):
            if name not in value:
                raise _invalid(f"Missing named input: {name} in 'inputs' object.")
            out[name] = json_to_array(value[name], sig.inputs[name][0])
        return out

    @staticmethod
    def _rows_json(outputs: dict[str, np.ndarray]) -> list:
        batch = None
        for alias, value in sorted(outputs.items()):
            if value.ndim == 0:
                raise _invalid(f"Tensor name: {alias} has no shape information ")
            if batch is not None and value.shape[0] != batch:
                raise _invalid(
                    f"Tensor name: {alias} has inconsistent batch size: {value.shape[0]} "
                    f"expecting: {batch}"
                )
            batch = value.shape[0]
        if len(outputs) == 1:
            ((alias, value),) = outputs.items()
            return array_to_json(value, alias)
        columns = {k: array_to_json(v, k) for k, v in sorted(outputs.items())}
        return [{k: column[i] for k, column in columns.items()} for i in range(batch)]

    def _classify_regress(self, spec: _Spec, body: bytes, verb: str) -> Any:
        doc = self._parse(body)
        spec = dataclasses.replace(spec, signature_name=self._signature_name(doc))
        request_input = input_pb2.Input()
        has_context = "context" in doc
        if has_context:
            request_input.example_list_with_context.context.CopyFrom(
                json_to_example(doc["context"])
            )
        examples = doc.get("examples")
        if "examples" not in doc:
            raise _invalid(
                f"JSON Value: {_json_str(doc)} When method is classify, key 'examples' is "
                "expected and was not found"
            )
        if not isinstance(examples, list):
            raise _invalid(
                f"JSON Value: {_json_str(doc)} Expecting 'examples' value to be an list/array"
            )
        if not examples:
            raise _invalid(f"JSON Value: {_json_str(doc)} 'examples' value is an empty array")
        parsed = [json_to_example(e) for e in examples]
        if has_context:
            request_input.example_list_with_context.examples.extend(parsed)
        else:
            request_input.example_list.examples.extend(parsed)
        servable = self.server._resolve(spec)
        if verb == "regress":
            values = self.server._regress_on(servable, spec.signature_name, request_input)
            return {"results": array_to_json(values)}
        classes, scores = self.server._classify_on(servable, spec.signature_name, request_input)
        n, c = (classes if classes is not None else scores).shape
        labels = array_to_json(classes) if classes is not None else [[""] * c] * n
        values = array_to_json(scores) if scores is not None else [[0.0] * c] * n
        return {"results": [list(map(list, zip(lr, sr))) for lr, sr in zip(labels, values)]}

    def _metadata(self, spec: _Spec) -> Any:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = spec.name
        if spec.version is not None:
            request.model_spec.version.value = spec.version
        if spec.label is not None:
            request.model_spec.version_label = spec.label
        response = self.server.get_model_metadata(request)
        options = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        signature_defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_defs)
        return {
            "model_spec": json_format.MessageToDict(response.model_spec, **options),
            "metadata": {"signature_def": json_format.MessageToDict(signature_defs, **options)},
        }


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: _RestApi
    max_body_bytes: int


class _HTTPServer6(_HTTPServer):
    address_family = socket.AF_INET6


class _BodyTooLarge(Exception):
    pass


class _RestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tf-serving-compatible"
    timeout = 60  # seconds an idle keep-alive connection is kept
    server: _HTTPServer
    _DRAIN_LIMIT = 16 << 20

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - base class signature
        log.debug("%s - %s", self.address_string(), format % args)

    def _send(self, status: int, obj: Any, close: bool = False) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _too_large(self, size: int | None) -> None:
        limit = self.server.max_body_bytes
        what = f"{size} bytes" if size is not None else "larger than the limit"
        self._send(
            413,
            {
                "error": f"Request body too large: {what}; the limit is {limit} bytes "
                "(max_body_bytes)"
            },
            close=True,
        )

    def _content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None:
            return None
        if not value.strip().isdigit():
            raise ValueError(f"invalid Content-Length: {value!r}")
        return int(value)

    def handle_expect_100(self) -> bool:
        try:
            length = self._content_length()
        except ValueError:
            length = None
        if length is not None and length > self.server.max_body_bytes:
            self._too_large(length)
            return False
        return super().handle_expect_100()

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked(limit)
        length = self._content_length()
        if not length:
            return b""
        if length > limit:
            remaining = length if length <= self._DRAIN_LIMIT else 0
            while remaining > 0:  # read it so the client sees the response, not a reset
                chunk = self.rfile.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                remaining -= len(chunk)
            raise _BodyTooLarge(length)
        return self.rfile.read(length)

    def _read_chunked(self, limit: int) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024)
            size = int(line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > limit:
                raise _BodyTooLarge(None)
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _handle(self) -> None:
        if self.server.api.server._stopped:  # a kept-alive connection after stop()
            self._send(503, {"error": "Server is shutting down"}, close=True)
            return
        try:
            body = self._read_body() if self.command in ("POST", "PUT", "PATCH") else b""
        except _BodyTooLarge as e:
            self._too_large(e.args[0])
            return
        except ValueError as e:
            self._send(400, {"error": f"Malformed request body: {e}"}, close=True)
            return
        try:
            status, obj = self.server.api.handle(self.command, self.path, body)
        except Exception as e:
            log.exception("internal error handling %s %s", self.command, self.path)
            status, obj = 500, {"error": f"Internal error: {type(e).__name__}: {e}"}
        self._send(status, obj)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


# ----------------------------------------------------------------------------------------
# Entry points.


def serve(
    model_name: str | None = "default",
    model_base_path: str | None = None,
    model_config_file: str | None = None,
    port: int = 8500,
    rest_api_port: int = 8501,
    host: str = "127.0.0.1",
    poll_seconds: float = 1.0,
    batching: Any = False,
    block: bool = True,
    ready_timeout: float | None = None,
    **options: Any,
) -> ModelServer:
    """Starts a `ModelServer` with TF Serving's flag semantics.

    Args:
      model_name / model_base_path: one model (ignored when ``model_config_file`` is given,
        as ``tensorflow_model_server`` does); the name defaults to ``default``.
      model_config_file: a ``models.config`` text proto.
      port: gRPC port. rest_api_port: REST port, 0 = no REST server (TF Serving's meaning).
      host: the address to bind; the default ``127.0.0.1`` accepts local clients only.
      poll_seconds: ``--file_system_poll_wait_seconds``.
      batching: ``--enable_batching``: a bool, or batching parameters (any object with
        ``max_batch_size`` and ``batch_timeout_micros``, e.g.
        `tf_serving.config.BatchingParameters`); None/False = no batching.
      block: wait until SIGINT/SIGTERM, then stop; otherwise return the running server.
      ready_timeout: with ``block``, first wait this long for every model (None = don't).
      **options: other `ModelServer` arguments (``max_batch_size``, ``max_body_bytes``, ...).
    """
    if model_config_file:
        models: dict[str, str] = {}
    elif model_base_path:
        models = {model_name or "default": model_base_path}
    else:
        raise ValueError("give model_base_path (with model_name) or model_config_file")
    if batching not in (None, False, True):
        for name in ("max_batch_size", "batch_timeout_micros"):
            if hasattr(batching, name):
                options.setdefault(name, int(getattr(batching, name)))
    batching = bool(batching)
    server = ModelServer(
        models,
        model_config_file=model_config_file or None,
        host=host,
        grpc_port=port,
        rest_port=rest_api_port or None,
        poll_seconds=poll_seconds,
        batching=batching,
        **options,
    )
    server.start()
    if not block:
        return server
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if ready_timeout is not None and not server.wait_until_ready(ready_timeout):
            log.warning("not every model is available after %.0f s", ready_timeout)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return server


def build_arg_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="TF-Serving-compatible model server for development and CI "
        "(production: tensorflow_model_server)."
    )
    parser.add_argument("--model_name", default="default")
    parser.add_argument("--model_base_path", default="")
    parser.add_argument("--model_config_file", default="")
    parser.add_argument("--port", type=int, default=8500, help="gRPC port")
    parser.add_argument("--rest_api_port", type=int, default=8501, help="0 = no REST")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0)
    parser.add_argument("--enable_batching", action="store_true")
    parser.add_argument("--max_batch_size", type=int, default=128)
    parser.add_argument("--batch_timeout_micros", type=int, default=1000)
    parser.add_argument("--batching_signatures", default=",".join(DEFAULT_BATCHING_SIGNATURES))
    parser.add_argument("--grpc_workers", type=int, default=16)
    parser.add_argument("--max_body_bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    parser.add_argument(
        "--enable_model_warmup", type=lambda s: s.lower() in ("1", "true", "yes"), default=True
    )
    parser.add_argument("--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_arg_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        serve(
            model_name=args.model_name,
            model_base_path=args.model_base_path or None,
            model_config_file=args.model_config_file or None,
            port=args.port,
            rest_api_port=args.rest_api_port,
            host=args.host,
            poll_seconds=args.file_system_poll_wait_seconds,
            batching=args.enable_batching,
            max_batch_size=args.max_batch_size,
            batch_timeout_micros=args.batch_timeout_micros,
            batching_signatures=[s for s in args.batching_signatures.split(",") if s],
            grpc_workers=args.grpc_workers,
            max_body_bytes=args.max_body_bytes,
            enable_model_warmup=args.enable_model_warmup,
        )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
