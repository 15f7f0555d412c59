"""`ModelServer`: the serving core with its gRPC and REST fronts and metrics; `serve()`."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
from tensorflow_serving.config import model_server_config_pb2

from tf_serving import config as cfg
from tf_serving.request_log import RequestLogConfig, RequestLogWriter
from tf_serving.server import http_front
from tf_serving.server.batching import Batcher
from tf_serving.server.core import ServingCore, models_from_config
from tf_serving.server.grpc_front import DEFAULT_GRPC_WORKERS, start_grpc_server
from tf_serving.server.metrics import Metrics
from tf_serving.server.rest_api import Answer, RestApi
from tf_serving.server.runner import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_ROWS_PER_CALL, Runner

log = logging.getLogger("tf_serving")

DEFAULT_BATCHING_SIGNATURES = ("serving_default", "predict")
DEFAULT_MAX_BODY_BYTES = http_front.DEFAULT_MAX_BODY_BYTES


class ModelServer:
    """Serves SavedModel versions over TF Serving's gRPC and REST APIs.

    Args:
      models: model name → base path (each served with the ``latest`` policy).
      model_config: a ``ModelServerConfig`` proto or its text; combined with ``models``.
      model_config_file: a ``models.config`` file (text proto).
      model_config_file_poll_wait_seconds: re-read ``model_config_file`` this often and
        apply it when it changed (TF Serving's flag); <= 0 = read it once.
      host: the address both servers bind (``127.0.0.1`` by default: loopback only).
      grpc_port: gRPC port; 0 = any free port, None = no gRPC server.
      rest_port: REST port; 0 = any free port, None = no REST server.
      poll_seconds: how often base paths are listed; <= 0 = only once, at start.
      grpc_workers: threads serving gRPC requests.
      max_body_bytes: largest REST request body accepted (413 above).
      max_in_flight_requests: REST requests handled at once (503 above); also the size of
        the REST inference thread pool.
      rest_backlog: the REST listen backlog.
      rest_keepalive_timeout_s: idle keep-alive REST connections are closed after this.
      enable_cors: TF Serving's ``--rest_api_enable_cors_support`` headers.
      monitoring: serve Prometheus metrics at ``monitoring_path`` on the REST port.
      allow_version_labels_for_unavailable_models: see `ServingCore`.
      batching: merge concurrent Predict requests (`Batcher`); off by default.
      max_batch_size / batch_timeout_micros: the batcher's limits.
      batching_signatures: the row-wise signatures (output row i depends only on input row
        i): their Predict requests are batched (with ``batching``) and sliced.
      max_rows_per_call: a request to a row-wise signature with more rows runs in slices
        of this many rows (bounded model memory; same outputs).
      max_decoded_bytes: a Predict request whose tensors would take more bytes decoded is
        refused (INVALID_ARGUMENT / 400), e.g. a small TensorProto claiming a huge shape.
      enable_model_warmup: replay ``assets.extra/tf_serving_warmup_requests`` on load.
      max_num_load_retries / load_retry_interval_s: retries of a version that failed.
      request_log_dir / request_log_sampling_rate: log that share of the requests served
        (gRPC and REST, not warmup) as TF Serving PredictionLog TFRecords in that directory
        (`tf_serving.request_log`); no directory = off. The rate defaults to 1% when a
        directory is given.

    Raises:
      ValueError: a bad model config, a bad limit, or labels in the initial config
        without ``allow_version_labels_for_unavailable_models`` (as TF Serving refuses).
    """

    def __init__(
        self,
        models: Mapping[str, str] | None = None,
        *,
        model_config: model_server_config_pb2.ModelServerConfig | str | None = None,
        model_config_file: str | None = None,
        model_config_file_poll_wait_seconds: float = 0.0,
        host: str = "127.0.0.1",
        grpc_port: int | None = 8500,
        rest_port: int | None = 8501,
        poll_seconds: float = 1.0,
        grpc_workers: int = DEFAULT_GRPC_WORKERS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_in_flight_requests: int = http_front.DEFAULT_MAX_IN_FLIGHT,
        rest_backlog: int = http_front.DEFAULT_BACKLOG,
        rest_keepalive_timeout_s: float = http_front.DEFAULT_KEEPALIVE_S,
        enable_cors: bool = False,
        monitoring: bool = False,
        monitoring_path: str = cfg.DEFAULT_PROMETHEUS_PATH,
        allow_version_labels_for_unavailable_models: bool = False,
        batching: bool = False,
        max_batch_size: int = 128,
        batch_timeout_micros: int = 1000,
        batching_signatures: Iterable[str] = DEFAULT_BATCHING_SIGNATURES,
        max_rows_per_call: int = DEFAULT_MAX_ROWS_PER_CALL,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
        enable_model_warmup: bool = True,
        max_num_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
        request_log_dir: str = "",
        request_log_sampling_rate: float | None = None,
    ):
        served = [cfg.ServedModel(name, base) for name, base in (models or {}).items()]
        if model_config is not None:
            served += models_from_config(model_config)
        if model_config_file:
            with open(model_config_file) as f:
                served += models_from_config(f.read())
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if monitoring:
            cfg.monitoring_config_text(monitoring_path)  # validates the path
        self.host = host
        self.grpc_port = grpc_port
        self.rest_port = rest_port
        self.grpc_workers = grpc_workers
        self.monitoring = monitoring
        self.monitoring_path = monitoring_path
        self.model_config_file = model_config_file
        self.model_config_file_poll_wait_seconds = model_config_file_poll_wait_seconds
        batcher = Batcher(Runner.call_signature, max_batch_size, batch_timeout_micros)
        request_log = None
        if request_log_dir or request_log_sampling_rate is not None:
            rate = 0.01 if request_log_sampling_rate is None else request_log_sampling_rate
            if not request_log_dir:
                raise ValueError("request_log_sampling_rate: needs request_log_dir")
            if not 0.0 < rate <= 1.0:
                raise ValueError(f"request_log_sampling_rate: must be in (0, 1], got {rate}")
            request_log = RequestLogWriter(RequestLogConfig(request_log_dir, rate))
        self.core = ServingCore(
            served,
            poll_seconds=poll_seconds,
            enable_model_warmup=enable_model_warmup,
            max_num_load_retries=max_num_load_retries,
            load_retry_interval_s=load_retry_interval_s,
            allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
            batcher=batcher if batching else None,
            batching_signatures=batching_signatures,
            max_rows_per_call=max_rows_per_call,
            max_decoded_bytes=max_decoded_bytes,
            request_log=request_log,
        )
        self.metrics: Metrics | None = None
        if monitoring:
            self.metrics = Metrics(
                self.core.loaded_versions, self.core.known_labels, self._rest_state
            )
        self._rest_options = dict(
            max_body_bytes=max_body_bytes,
            max_in_flight=max_in_flight_requests,
            backlog=rest_backlog,
            keepalive_timeout_s=rest_keepalive_timeout_s,
        )
        self._rest_api = RestApi(
            self.core,
            metrics_page=self.metrics.page if self.metrics else None,
            monitoring_path=monitoring_path,
            enable_cors=enable_cors,
        )
        # Checked now, so a bad limit is a ValueError before anything starts.
        self._http: http_front.HttpFront | None = None
        if rest_port is not None:
            self._http = http_front.HttpFront(
                self._rest_api, host, rest_port, observe=self._observe_rest, **self._rest_options
            )
        self._grpc_server: grpc.Server | None = None
        self._started = False
        self._stopped = False

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
                observe = self._observe_grpc if self.metrics else None
                self._grpc_server, self.grpc_port = start_grpc_server(
                    self.core, self.host, self.grpc_port, self.grpc_workers, observe
                )
                log.info("gRPC server listening on %s:%d", self.host, self.grpc_port)
            if self._http is not None:
                self.rest_port = self._http.start()
                log.info("REST server listening on %s:%d", self.host, self.rest_port)
        except BaseException:
            self.stop()
            raise
        self.core.start()
        if self.model_config_file and self.model_config_file_poll_wait_seconds > 0:
            self.core.watch_config_file(
                self.model_config_file, self.model_config_file_poll_wait_seconds
            )
        return self

    def stop(self, grace: float = 1.0) -> None:
        """Stops polling and both servers, and unloads every version. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._http is not None:
            self._http.stop()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace).wait()
        self.core.stop()
        log.info("server stopped")

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Waits until every model has an AVAILABLE version; False on timeout."""
        return self.core.wait_until_ready(timeout)

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
        batcher = self.core.runner.batcher
        if batcher is None:
            return {}
        return {"batches": batcher.batches, "requests": batcher.requests}

    @property
    def rest_stats(self) -> dict[str, int]:
        """REST requests in flight now and answered 503 for overload so far."""
        in_flight, rejected = self._rest_state()
        return {"in_flight": in_flight, "rejected": rejected}

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig | str) -> None:
        """Replaces the served model set; see `ServingCore.reload_config`."""
        self.core.reload_config(config)

    def poll_once(self) -> None:
        self.core.poll_once()

    # -- metrics --------------------------------------------------------------------------

    def _rest_state(self) -> tuple[int, int]:
        if self._http is None:
            return 0, 0
        return self._http.in_flight, self._http.rejected

    def _observe_rest(self, answer: Answer, seconds: float, path: str) -> None:
        if self.metrics is not None and path != self.monitoring_path:
            self.metrics.observe(
                answer.model_name, answer.api, answer.signature_name, "REST", answer.code, seconds
            )

    def _observe_grpc(self, model: str, api: str, signature: str, code: str, seconds: float):
        self.metrics.observe(model, api, signature, "GRPC", code, seconds)


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
      **options: other `ModelServer` arguments (``max_body_bytes``, ``monitoring``, ...).
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
    server = ModelServer(
        models,
        model_config_file=model_config_file or None,
        host=host,
        grpc_port=port,
        rest_port=rest_api_port or None,
        poll_seconds=poll_seconds,
        batching=bool(batching),
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
