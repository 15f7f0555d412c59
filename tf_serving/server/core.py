"""The serving core: models, versions, load/unload, warmup, labels and inference.

It speaks TF Serving's request and response protos and raises `ServingError`; the REST
and gRPC fronts (tf_serving/server/rest_api.py, http_front.py, grpc_front.py) translate
to and from it, and nothing here imports them. What it follows from TF Serving's
server_core.cc, model_service_impl.cc, get_model_status_impl.cc and
saved_model_warmup_util.cc is listed in tf_serving/README.md.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from tf_serving import config as cfg
from tf_serving.request_log import RequestLogWriter
from tf_serving.server import inference as inf
from tf_serving.server.batching import Batcher
from tf_serving.server.runner import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_ROWS_PER_CALL, Runner
from tf_serving.server.servables import (
    AVAILABLE,
    END,
    LOADING,
    STATE_ENUM,
    UNLOADING,
    Model,
    Servable,
    Spec,
    VersionRecord,
    dir_id,
    scan_versions,
)
from tf_serving.server.status import (
    ServingError,
    error_from_exception,
    failed_precondition,
    invalid,
    not_found,
)

log = logging.getLogger("tf_serving")

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_WARMUP_RECORDS = 1000
RELOAD_UNSUPPORTED = (
    "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList "
    "is currently supported"
)


def parse_config(config: model_server_config_pb2.ModelServerConfig | str):
    """A ModelServerConfig from its proto or text (``ConfigError`` naming a parse error)."""
    if isinstance(config, str):
        return cfg.parse_model_server_config(config)
    return config


def models_from_config(
    config: model_server_config_pb2.ModelServerConfig | str, allow_empty: bool = False
) -> list[cfg.ServedModel]:
    """The `ServedModel` entries of a ModelServerConfig (proto or text); only TensorFlow ones.

    Raises:
      ConfigError (a ValueError): a parse error, an invalid entry, another platform.
    """
    models = cfg.served_models_from_proto(parse_config(config), allow_empty=allow_empty)
    for m in models:
        if m.platform != "tensorflow":
            raise cfg.ConfigError(
                f"model {m.name!r}: model_platform {m.platform!r} is not supported "
                "(only 'tensorflow')"
            )
    return models


class ServingCore:
    """Serves the versions of configured models (see the module doc).

    Args:
      models: the served models (`tf_serving.config.ServedModel`, the models.config entry).
      poll_seconds: ``--file_system_poll_wait_seconds``; <= 0 = list base paths once.
      enable_model_warmup: replay ``assets.extra/tf_serving_warmup_requests`` on load.
      max_num_load_retries / load_retry_interval_s: retries of a version that failed.
      allow_version_labels_for_unavailable_models: TF Serving's flag of that name: a new
        label may point at a version that is not (yet) AVAILABLE; without it every label
        must point at an AVAILABLE version, so labels in the initial config are refused.
      batcher, batching_signatures, max_rows_per_call, max_decoded_bytes: see `Runner`.
      request_log: logs a sample of the Predict/Classify/Regress/MultiInference requests
        served (not the warmup replays) in TF Serving's PredictionLog format; closed by
        `stop`. None = no logging.
    """

    def __init__(
        self,
        models: Iterable[cfg.ServedModel],
        *,
        poll_seconds: float = 1.0,
        enable_model_warmup: bool = True,
        max_num_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
        allow_version_labels_for_unavailable_models: bool = False,
        batcher: Batcher | None = None,
        batching_signatures: Iterable[str] = (),
        max_rows_per_call: int = DEFAULT_MAX_ROWS_PER_CALL,
        max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
        request_log: RequestLogWriter | None = None,
    ):
        models = list(models)
        names = [m.name for m in models]
        for m in models:
            m.validate()
            if names.count(m.name) > 1:
                raise ValueError(f"model {m.name!r} is configured more than once")
        self.poll_seconds = poll_seconds
        self.enable_model_warmup = enable_model_warmup
        self.max_num_load_retries = max_num_load_retries
        self.load_retry_interval_s = load_retry_interval_s
        self.allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self.runner = Runner(batcher, batching_signatures, max_rows_per_call, max_decoded_bytes)
        self.request_log = request_log
        self._lock = threading.Lock()  # guards _models and every VersionRecord
        self._poll_lock = threading.RLock()  # one reconcile at a time
        self._models: dict[str, Model] = {}
        try:
            self._check_labels(models, {})  # as TF Serving's startup (ServerCore::Create) does
        except ServingError as e:
            raise ValueError(
                f"{e.message} (labels in the initial config need "
                "allow_version_labels_for_unavailable_models, TF Serving's "
                "--allow_version_labels_for_unavailable_models)"
            ) from None
        self._models = {m.name: Model(m) for m in models}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._applied_config: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        thread = threading.Thread(target=self._poll_loop, name="model-poller", daemon=True)
        thread.start()
        self._threads.append(thread)

    def watch_config_file(self, path: str, seconds: float) -> None:
        """Re-reads ``path`` every ``seconds`` and applies it when it changed.

        TF Serving's ``--model_config_file_poll_wait_seconds`` (server.cc): a file that
        cannot be read or parsed, or a config that cannot be applied, is logged and the
        served models stay as they are; the next poll tries again.
        """
        self._applied_config = cfg.parse_model_server_config(_read(path))
        thread = threading.Thread(
            target=self._config_loop, args=(path, seconds), name="config-poller", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.runner.batcher is not None:
            self.runner.batcher.stop()
        for thread in self._threads:
            thread.join()
        with self._lock:
            for model in self._models.values():
                for record in model.versions.values():
                    if record.state == AVAILABLE:
                        record.state = END
                    record.servable = None
        if self.request_log is not None:
            self.request_log.close()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Waits until every model has an AVAILABLE version; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                ready = all(m.latest_available() for m in self._models.values())
            if ready:
                return True
            if self._stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return False
            time.sleep(0.05)

    def loaded_versions(self) -> dict[str, list[int]]:
        """Model name → its AVAILABLE versions (for the metrics)."""
        with self._lock:
            return {
                name: sorted(v for v, r in m.versions.items() if r.state == AVAILABLE)
                for name, m in self._models.items()
            }

    def known_labels(self, model: str, signature: str) -> tuple[str, str]:
        """(model, signature) if served, each replaced by "" otherwise (metric labels)."""
        with self._lock:
            entry = self._models.get(model)
            if entry is None:
                return "", ""
            for record in entry.versions.values():
                if record.servable is not None and signature in record.servable.signature_defs:
                    return model, signature
        return model, ""

    # -- configuration and versions -------------------------------------------------------

    def _check_labels(self, models: list[cfg.ServedModel], current: Mapping[str, Model]) -> None:
        """server_core.cc UpdateModelVersionLabelMap: labels must point at AVAILABLE versions.

        With ``allow_version_labels_for_unavailable_models`` a label that is new, or keeps
        its version, may point anywhere; moving a label needs an AVAILABLE target.
        """
        with self._lock:
            for m in models:
                model = current.get(m.name)
                old = model.settings.version_labels if model else {}
                for label, version in m.version_labels.items():
                    if self.allow_unavailable_labels and old.get(label, version) == version:
                        continue
                    if model is None or not model.available(version):
                        raise failed_precondition(
                            f"Request to assign label to version {version} of model {m.name}, "
                            "which is not currently available for inference"
                        )

    def reload_config(self, config: model_server_config_pb2.ModelServerConfig | str) -> None:
        """Replaces the served model set (TF Serving's HandleReloadConfigRequest).

        Models absent from ``config`` are unloaded; new ones are loaded before this returns.
        A config that cannot be applied changes nothing.

        Raises:
          ServingError: INVALID_ARGUMENT (no model_config_list, a bad entry),
            FAILED_PRECONDITION (a label pointing at a version that is not AVAILABLE).
        """
        try:
            config = parse_config(config)
        except ValueError as e:
            raise invalid(str(e)) from None
        if config.WhichOneof("config") != "model_config_list":
            raise invalid(RELOAD_UNSUPPORTED)
        try:
            models = models_from_config(config, allow_empty=True)
        except ValueError as e:
            raise invalid(str(e)) from None
        with self._poll_lock:
            self._check_labels(models, self._models)
            with self._lock:
                names = {m.name for m in models}
                removed = [m for n, m in self._models.items() if n not in names]
                updated = {}
                for m in models:
                    model = self._models.get(m.name) or Model(m)
                    model.settings = m
                    updated[m.name] = model
                self._models = updated
            for model in removed:
                for version in list(model.versions):
                    self._unload(model, version)
            self.poll_once()

    def handle_reload_config(
        self, request: model_management_pb2.ReloadConfigRequest
    ) -> model_management_pb2.ReloadConfigResponse:
        if not request.HasField("config"):
            raise invalid(RELOAD_UNSUPPORTED)
        self.reload_config(request.config)
        self._applied_config = request.config
        return model_management_pb2.ReloadConfigResponse()

    def _config_loop(self, path: str, seconds: float) -> None:
        last_error = ""
        while not self._stop.wait(seconds):
            try:
                config = cfg.parse_model_server_config(_read(path))
                if config != self._applied_config:
                    self.reload_config(config)
                    self._applied_config = config
                    log.info("applied the model config of %s", path)
                last_error = ""
            except (OSError, ValueError, ServingError) as e:
                message = getattr(e, "message", str(e))
                if message != last_error:
                    log.error("cannot apply the model config of %s: %s", path, message)
                    last_error = message

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

    def _reconcile(self, model: Model) -> None:
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
                        and record.dir_id == dir_id(path)
                        and (record.attempts > self.max_num_load_retries or now < record.retry_at)
                    ):
                        continue
                    if record.dir_id != dir_id(path) or record.path != path:
                        record.attempts = 0
                    record.path = path
                else:
                    record = model.versions[version] = VersionRecord(version, path)
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

    def _warn_once(self, model: Model, message: str) -> None:
        if model.warned != message:
            log.warning(message)
            model.warned = message

    def _load(self, model: Model, record: VersionRecord) -> None:
        name = model.settings.name
        log.info("loading %s version %d from %s", name, record.version, record.path)
        directory = dir_id(record.path)
        start = time.monotonic()
        try:
            servable = Servable(name, record.version, record.path)
            if self.enable_model_warmup:
                self._warmup(servable)
        except Exception as e:
            error = error_from_exception(e)
            if error.code == grpc.StatusCode.INTERNAL:
                log.exception("internal error loading %s version %d", name, record.version)
            with self._lock:
                record.state = END
                record.error = error
                record.failed = True
                record.attempts += 1
                record.retry_at = time.monotonic() + self.load_retry_interval_s
                record.dir_id = directory
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
            record.dir_id = directory
        log.info("%s version %d AVAILABLE (%.1f s)", name, record.version, time.monotonic() - start)

    def _unload(self, model: Model, version: int) -> None:
        with self._lock:
            record = model.versions.get(version)
            if record is None or record.state != AVAILABLE:
                return
            record.state = UNLOADING
            record.servable = None  # in-flight requests keep their own reference
            record.state = END
        log.info("unloaded %s version %d", model.settings.name, version)

    def _warmup(self, servable: Servable) -> None:
        """Replays the version's warmup records; one failing fails the load (TF Serving)."""
        path = os.path.join(servable.path, WARMUP_FILE)
        if not os.path.exists(path):
            return
        records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
        if len(records) > MAX_WARMUP_RECORDS:
            raise invalid(
                f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) at {path}"
            )
        for raw in records:
            entry = prediction_log_pb2.PredictionLog.FromString(raw)
            kind = entry.WhichOneof("log_type")
            if kind == "predict_log":
                self.runner.predict_on(servable, entry.predict_log.request)
            elif kind == "classify_log":
                request = entry.classify_log.request
                self.runner.classify_on(servable, request.model_spec.signature_name, request.input)
            elif kind == "regress_log":
                request = entry.regress_log.request
                self.runner.regress_on(servable, request.model_spec.signature_name, request.input)
            elif kind == "multi_inference_log":
                self.runner.multi_inference_on(servable, entry.multi_inference_log.request)
            else:
                raise invalid(f"Unsupported log_type for warmup: {kind}")
        log.info(
            "%s version %d: replayed %d warmup requests",
            servable.name,
            servable.version,
            len(records),
        )

    # -- resolution and status ------------------------------------------------------------

    def resolve(self, spec: Spec) -> Servable:
        """The servable a model_spec names (server_core.cc ServableRequestFromModelSpec)."""
        with self._lock:
            model = self._models.get(spec.name)
            version = spec.version
            if spec.label is not None:
                labels = model.settings.version_labels if model else {}
                if spec.label not in labels:
                    raise invalid(f"Unrecognized servable version label: {spec.label}")
                version = labels[spec.label]
            if model is not None:
                record = (
                    model.latest_available() if version is None else model.versions.get(version)
                )
                if record is not None and record.state == AVAILABLE and record.servable:
                    return record.servable
        request = f"Latest({spec.name})" if version is None else f"Specific({spec.name}, {version})"
        raise not_found(f"Servable not found for request: {request}")

    def model_status(self, spec: Spec) -> get_model_status_pb2.GetModelStatusResponse:
        """get_model_status_impl.cc: one version if given, else all; a label is ignored."""
        response = get_model_status_pb2.GetModelStatusResponse()
        with self._lock:
            model = self._models.get(spec.name)
            records = sorted(model.versions.values() if model else [], key=lambda r: -r.version)
            if spec.version is not None:
                records = [r for r in records if r.version == spec.version]
                if not records:
                    raise not_found(f"Could not find version {spec.version} of model {spec.name}")
            elif not records:
                raise not_found(f"Could not find any versions of model {spec.name}")
            for r in records:
                status = response.model_version_status.add()
                status.version = r.version
                status.state = STATE_ENUM.Value(r.state)
                status.status.SetInParent()  # printed as {"error_code": "OK", ...} when OK
                if r.error is not None:
                    status.status.error_code = r.error.code.value[0]
                    status.status.error_message = r.error.message
        return response

    # -- the API (protos in and out; raise ServingError) ----------------------------------

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        response = self.runner.predict_on(
            self.resolve(Spec.from_proto(request.model_spec)), request
        )
        self._log(request, response, "predict")
        return response

    def classify(
        self, request: classification_pb2.ClassificationRequest
    ) -> classification_pb2.ClassificationResponse:
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        spec = Spec.from_proto(request.model_spec)
        servable = self.resolve(spec)
        classes, scores = self.runner.classify_on(servable, spec.signature_name, request.input)
        response = classification_response(spec, servable.version, classes, scores)
        self._log(request, response, "classify")
        return response

    def regress(
        self, request: regression_pb2.RegressionRequest
    ) -> regression_pb2.RegressionResponse:
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        spec = Spec.from_proto(request.model_spec)
        servable = self.resolve(spec)
        values = self.runner.regress_on(servable, spec.signature_name, request.input)
        response = regression_response(spec, servable.version, values)
        self._log(request, response, "regress")
        return response

    def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest
    ) -> inference_pb2.MultiInferenceResponse:
        if not request.tasks:
            raise invalid("Expected at least one task")
        first = request.tasks[0].model_spec
        for task in request.tasks:
            if task.model_spec.name != first.name:
                raise invalid(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            if task.model_spec.WhichOneof("version_choice") != first.WhichOneof(
                "version_choice"
            ) or (
                task.model_spec.version.value != first.version.value
                or task.model_spec.version_label != first.version_label
            ):
                raise invalid(
                    "ModelSpec version must be the same for all tasks in a MultiInferenceRequest."
                )
        response = self.runner.multi_inference_on(self.resolve(Spec.from_proto(first)), request)
        self._log(request, response, "multi_inference")
        return response

    def _log(self, request, response, kind: str) -> None:
        if self.sample_request_log():
            self.log_rest(request, response, kind)

    def sample_request_log(self) -> bool:
        """Whether a request served outside the proto API (REST) is to be logged; it then
        calls `log_rest` with the protos TF Serving's REST handler would have built."""
        return self.request_log is not None and self.request_log.sample()

    def log_rest(self, request, response, kind: str) -> None:
        """Writes a sampled request (`sample_request_log` said so) and its response."""
        assert self.request_log is not None
        self.request_log.write(request, response, kind)

    def get_model_metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        servable = self.resolve(Spec.from_proto(request.model_spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = request.model_spec.name
        response.model_spec.version.value = servable.version
        response.metadata["signature_def"].Pack(servable.signature_def_map())
        return response

    def get_model_status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        if not request.HasField("model_spec"):
            raise invalid("Missing ModelSpec")
        if not request.model_spec.name:
            raise invalid("Missing model name in request.")
        return self.model_status(Spec.from_proto(request.model_spec))


def classification_response(
    spec: Spec, version: int, classes, scores
) -> classification_pb2.ClassificationResponse:
    response = classification_pb2.ClassificationResponse()
    _fill_spec(response.model_spec, spec, version)
    inf.fill_classifications(classes, scores, response.result)
    return response


def regression_response(spec: Spec, version: int, values) -> regression_pb2.RegressionResponse:
    response = regression_pb2.RegressionResponse()
    _fill_spec(response.model_spec, spec, version)
    response.result.regressions.extend(regression_pb2.Regression(value=float(v)) for v in values)
    return response


def request_spec(out, spec: Spec) -> None:
    """Fills a request's model_spec as a client naming ``spec`` would have."""
    out.name = spec.name
    if spec.version is not None:
        out.version.value = spec.version
    elif spec.label is not None:
        out.version_label = spec.label
    out.signature_name = spec.signature_name


def _fill_spec(out, spec: Spec, version: int) -> None:
    out.name = spec.name
    out.version.value = version
    out.signature_name = spec.signature


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()
