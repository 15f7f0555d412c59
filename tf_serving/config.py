"""TensorFlow Serving config files and command lines (tf_serving/README.md, "The real server").

Pure generators return text; the ``write_*`` helpers write it atomically (a temp file in the
same directory, then ``os.replace``), so a server polling the file never reads half of it.

* ``models.config``: a ``ModelServerConfig`` text proto (``model_config_list``), built with
  ``tensorflow_serving.config.model_server_config_pb2`` and ``text_format`` so it round-trips.
* ``batching_parameters.txt``: ``BatchingParameters`` text (``max_batch_size { value: 128 }``...).
  The proto is not in the tensorflow-serving-api wheel; it is rebuilt here from
  ``session_bundle_config.proto`` in a private descriptor pool to parse files back.
* ``monitoring.config``:
  ``prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }``.

`server_command` and `docker_command` build the argv of the real ``tensorflow_model_server``
and of ``docker run tensorflow/serving`` from those files, without running anything.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Iterable, Mapping, Sequence

from google.protobuf import text_format

from wdl_tf import atomic

VERSION_POLICIES = ("latest", "all", "specific")
DEFAULT_PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
DOCKER_IMAGE = "tensorflow/serving"
SERVER_BINARY = "tensorflow_model_server"
MODELS_CONFIG = "models.config"
BATCHING_PARAMETERS = "batching_parameters.txt"
MONITORING_CONFIG = "monitoring.config"
# Where docker_command mounts things inside the container (the image's MODEL_BASE_PATH).
CONTAINER_MODELS_DIR = "/models"
CONTAINER_CONFIG_DIR = "/models/_config"
CONTAINER_GRPC_PORT = 8500
CONTAINER_REST_PORT = 8501

_MODEL_NAME_RE = re.compile(r"[^/:\s]+")  # the REST URL regex stops at '/' and ':'
_LABEL_RE = re.compile(r"[a-zA-Z0-9_]+")  # serving_config.md "REST Usage"


class ConfigError(ValueError):
    """A serving config that TF Serving would reject; the message names the bad value."""


# ----------------------------------------------------------------------------------------
# models.config


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """One entry of ``model_config_list``.

    Attributes:
      name: the model name clients use (no '/' or ':', which the REST URLs cannot carry).
      base_path: the directory holding integer version subdirectories (not a version dir).
      platform: ``model_platform``; ``tensorflow`` for SavedModels.
      version_policy: ``latest`` (the ``num_versions`` newest), ``all`` or ``specific``.
      num_versions: for ``latest``.
      versions: for ``specific``: exactly these versions.
      version_labels: label → version (e.g. ``{"stable": 1, "canary": 2}``); with a
        ``specific`` policy every labelled version must be one of ``versions``.
    """

    name: str
    base_path: str
    platform: str = "tensorflow"
    version_policy: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()
    version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def aspired(self, on_disk: Iterable[int]) -> set[int]:
        """The versions this policy wants served, among the integer versions on disk."""
        present = sorted(on_disk)
        if self.version_policy == "latest":
            return set(present[-self.num_versions :])
        if self.version_policy == "all":
            return set(present)
        return set(present) & set(self.versions)

    def validate(self) -> None:
        if not isinstance(self.name, str) or not _MODEL_NAME_RE.fullmatch(self.name):
            raise ConfigError(
                f"model name {self.name!r}: must be non-empty, without '/', ':' or spaces"
            )
        where = f"model {self.name!r}"
        if not self.base_path:
            raise ConfigError(f"{where}: base_path must not be empty")
        if not self.platform:
            raise ConfigError(f"{where}: platform must not be empty")
        if self.version_policy not in VERSION_POLICIES:
            raise ConfigError(
                f"{where}: unknown version_policy {self.version_policy!r}; "
                f"allowed values are {list(VERSION_POLICIES)}"
            )
        if self.version_policy == "latest" and not (
            isinstance(self.num_versions, int) and 1 <= self.num_versions < 2**32
        ):
            raise ConfigError(f"{where}: num_versions must be >= 1, got {self.num_versions!r}")
        if self.version_policy == "specific":
            if not self.versions:
                raise ConfigError(f"{where}: version_policy 'specific' needs versions")
            for v in self.versions:
                if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    raise ConfigError(f"{where}: version {v!r} must be an integer >= 0")
            if len(set(self.versions)) != len(self.versions):
                raise ConfigError(f"{where}: duplicate versions in {list(self.versions)}")
        elif self.versions:
            raise ConfigError(
                f"{where}: versions={list(self.versions)} only apply to version_policy "
                f"'specific', not {self.version_policy!r}"
            )
        for label, version in self.version_labels.items():
            if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
                raise ConfigError(f"{where}: version label {label!r} must match [a-zA-Z0-9_]+")
            if not isinstance(version, int) or isinstance(version, bool) or version < 0:
                raise ConfigError(
                    f"{where}: version_labels[{label!r}] = {version!r} must be an integer >= 0"
                )
            if self.version_policy == "specific" and version not in self.versions:
                raise ConfigError(
                    f"{where}: version_labels[{label!r}] = {version} is not one of the "
                    f"specific policy's versions {sorted(self.versions)}"
                )


def _as_models(models: ServedModel | Iterable[ServedModel]) -> list[ServedModel]:
    models = [models] if isinstance(models, ServedModel) else list(models)
    if not models:
        raise ConfigError("model_config_list: needs at least one model")
    names = [m.name for m in models]
    for m in models:
        m.validate()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"model_config_list: duplicate model names {duplicates}")
    return models


def model_server_config(models: ServedModel | Iterable[ServedModel]):
    """The ``tensorflow.serving.ModelServerConfig`` proto of ``models`` (validated)."""
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for m in _as_models(models):
        entry = config.model_config_list.config.add(
            name=m.name, base_path=m.base_path, model_platform=m.platform
        )
        policy = entry.model_version_policy
        if m.version_policy == "latest":
            policy.latest.num_versions = m.num_versions
        elif m.version_policy == "all":
            policy.all.SetInParent()
        else:
            policy.specific.versions.extend(m.versions)
        for label, version in sorted(m.version_labels.items()):
            entry.version_labels[label] = version
    return config


def models_config_text(models: ServedModel | Iterable[ServedModel]) -> str:
    """``models.config`` text (for ``--model_config_file``)."""
    return text_format.MessageToString(model_server_config(models))


def parse_model_server_config(text: str):
    """A ``models.config`` text as a ModelServerConfig proto (TF Serving's own message).

    Raises:
      ConfigError: ``Error parsing text-format tensorflow.serving.ModelServerConfig: ...``,
        TF Serving's own wording.
    """
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as e:
        raise ConfigError(
            f"Error parsing text-format tensorflow.serving.ModelServerConfig: {e}"
        ) from None
    return config


def served_models_from_proto(config, allow_empty: bool = False) -> list[ServedModel]:
    """The `ServedModel` entries of a ModelServerConfig proto, validated.

    Args:
      allow_empty: accept a ``model_config_list`` without models (a config reload that
        unloads every model, which TF Serving allows); a config without
        ``model_config_list`` is always refused.

    Raises:
      ConfigError: ``custom_model_config`` or no config at all, a bad entry (named),
        duplicate names.
    """
    if config.WhichOneof("config") != "model_config_list":
        raise ConfigError(
            "models.config: only model_config_list is supported, got "
            f"{config.WhichOneof('config') or 'no config'}"
        )
    models = []
    for entry in config.model_config_list.config:
        policy = entry.model_version_policy
        kind = policy.WhichOneof("policy_choice") or "latest"
        model = ServedModel(
            name=entry.name,
            base_path=entry.base_path,
            platform=entry.model_platform or "tensorflow",
            version_policy=kind,
            num_versions=(policy.latest.num_versions or 1) if kind == "latest" else 1,
            versions=tuple(policy.specific.versions) if kind == "specific" else (),
            version_labels=dict(entry.version_labels),
        )
        models.append(model)
    if models or not allow_empty:
        _as_models(models)
    return models


def parse_models_config(text: str) -> list[ServedModel]:
    """The models of a ``models.config`` text (the inverse of `models_config_text`)."""
    return served_models_from_proto(parse_model_server_config(text))


# ----------------------------------------------------------------------------------------
# batching_parameters.txt


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
    """Server-side batching (``--enable_batching --batching_parameters_file``).

    Attributes:
      max_batch_size: the largest batch the scheduler forms.
      batch_timeout_micros: how long a partial batch waits for more requests.
      max_enqueued_batches: queue length in batches (more → UNAVAILABLE to clients).
      num_batch_threads: threads running batches (the paper's Table 2 splits a request's
        candidates across threads).
      allowed_batch_sizes: optional; batches are padded up to one of these; increasing, and
        the last one must equal ``max_batch_size``.
      pad_variable_length_inputs: pad inputs of different lengths when batching.
      thread_pool_name: optional name of the batch thread pool.
    """

    max_batch_size: int = 128
    batch_timeout_micros: int = 1000
    max_enqueued_batches: int = 1000
    num_batch_threads: int = 4
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    thread_pool_name: str = ""

    def validate(self) -> None:
        for name, minimum in (
            ("max_batch_size", 1),
            ("batch_timeout_micros", 0),
            ("max_enqueued_batches", 1),
            ("num_batch_threads", 1),
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(
                    f"batching {name}: must be an integer >= {minimum}, got {value!r}"
                )
        sizes = list(self.allowed_batch_sizes)
        if sizes:
            for s in sizes:
                if not isinstance(s, int) or isinstance(s, bool) or s < 1:
                    raise ConfigError(
                        f"batching allowed_batch_sizes: {s!r} must be an integer >= 1"
                    )
            for a, b in zip(sizes, sizes[1:]):
                if b <= a:
                    raise ConfigError(
                        f"batching allowed_batch_sizes {sizes}: must be increasing, "
                        f"but {b} follows {a}"
                    )
            if sizes[-1] != self.max_batch_size:
                raise ConfigError(
                    f"batching allowed_batch_sizes {sizes}: the last one ({sizes[-1]}) must "
                    f"equal max_batch_size ({self.max_batch_size})"
                )
        if self.thread_pool_name and not re.fullmatch(r"[\w.-]+", self.thread_pool_name):
            raise ConfigError(
                f"batching thread_pool_name {self.thread_pool_name!r}: use letters, digits, _.-"
            )


def batching_parameters_text(params: BatchingParameters | None = None) -> str:
    """``batching_parameters.txt`` text (``BatchingParameters`` text proto)."""
    params = params or BatchingParameters()
    params.validate()
    lines = [
        f"max_batch_size {{ value: {params.max_batch_size} }}",
        f"batch_timeout_micros {{ value: {params.batch_timeout_micros} }}",
        f"max_enqueued_batches {{ value: {params.max_enqueued_batches} }}",
        f"num_batch_threads {{ value: {params.num_batch_threads} }}",
    ]
    if params.thread_pool_name:
        lines.append(f'thread_pool_name {{ value: "{params.thread_pool_name}" }}')
    lines.extend(f"allowed_batch_sizes: {s}" for s in params.allowed_batch_sizes)
    if params.pad_variable_length_inputs:
        lines.append("pad_variable_length_inputs: true")
    return "\n".join(lines) + "\n"


@functools.lru_cache(maxsize=1)
def _private_messages() -> dict[str, type]:
    """BatchingParameters, MonitoringConfig and PrometheusConfig message classes.

    Field names and numbers follow tensorflow_serving's session_bundle_config.proto and
    monitoring_config.proto; they live in a private pool, so they never clash with a copy
    another library registers.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="wdl_tf/tf_serving/private_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    F = descriptor_pb2.FieldDescriptorProto
    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED

    def message(name, fields):
        msg = fdp.message_type.add(name=name)
        for field_name, number, label, ftype, type_name in fields:
            field = msg.field.add(name=field_name, number=number, label=label, type=ftype)
            if type_name:
                field.type_name = type_name

    int64_value, string_value = ".google.protobuf.Int64Value", ".google.protobuf.StringValue"
    message(
        "BatchingParameters",
        [
            ("max_batch_size", 1, opt, F.TYPE_MESSAGE, int64_value),
            ("batch_timeout_micros", 2, opt, F.TYPE_MESSAGE, int64_value),
            ("max_enqueued_batches", 3, opt, F.TYPE_MESSAGE, int64_value),
            ("num_batch_threads", 4, opt, F.TYPE_MESSAGE, int64_value),
            ("thread_pool_name", 5, opt, F.TYPE_MESSAGE, string_value),
            ("allowed_batch_sizes", 6, rep, F.TYPE_INT64, None),
            ("pad_variable_length_inputs", 7, opt, F.TYPE_BOOL, None),
        ],
    )
    message(
        "PrometheusConfig",
        [("enable", 1, opt, F.TYPE_BOOL, None), ("path", 2, opt, F.TYPE_STRING, None)],
    )
    message(
        "MonitoringConfig",
        [("prometheus_config", 1, opt, F.TYPE_MESSAGE, ".tensorflow.serving.PrometheusConfig")],
    )
    pool.Add(fdp)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in ("BatchingParameters", "MonitoringConfig", "PrometheusConfig")
    }


def _parse_private(kind: str, text: str):
    msg = _private_messages()[kind]()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise ConfigError(f"Error parsing text-format tensorflow.serving.{kind}: {e}") from None
    return msg


def parse_batching_parameters(text: str) -> BatchingParameters:
    """A ``batching_parameters.txt`` text as `BatchingParameters` (unset fields: defaults)."""
    msg = _parse_private("BatchingParameters", text)
    defaults = BatchingParameters()

    def wrapped(name):
        return getattr(msg, name).value if msg.HasField(name) else getattr(defaults, name)

    params = BatchingParameters(
        max_batch_size=wrapped("max_batch_size"),
        batch_timeout_micros=wrapped("batch_timeout_micros"),
        max_enqueued_batches=wrapped("max_enqueued_batches"),
        num_batch_threads=wrapped("num_batch_threads"),
        allowed_batch_sizes=tuple(msg.allowed_batch_sizes),
        pad_variable_length_inputs=msg.pad_variable_length_inputs,
        thread_pool_name=wrapped("thread_pool_name"),
    )
    params.validate()
    return params


# ----------------------------------------------------------------------------------------
# monitoring.config


def monitoring_config_text(path: str = DEFAULT_PROMETHEUS_PATH, enable: bool = True) -> str:
    """``monitoring.config`` text: the Prometheus endpoint on the REST port."""
    if not isinstance(path, str) or not re.fullmatch(r"/[\w./-]*", path):
        raise ConfigError(
            f"monitoring path {path!r}: must start with '/' and use only letters, digits, _./-"
        )
    return f'prometheus_config {{ enable: {str(bool(enable)).lower()}, path: "{path}" }}\n'


def parse_monitoring_config(text: str) -> tuple[bool, str]:
    """(enable, path) of a ``monitoring.config`` text (path defaults as in TF Serving)."""
    msg = _parse_private("MonitoringConfig", text)
    prometheus = msg.prometheus_config
    return prometheus.enable, prometheus.path or DEFAULT_PROMETHEUS_PATH


# ----------------------------------------------------------------------------------------
# Writing files.


def write_text_atomic(path: str, text: str) -> str:
    """Writes ``text`` to ``path`` via a temp file and a rename; returns ``path``."""
    return atomic.write_text(path, text)


def write_models_config(path: str, models: ServedModel | Iterable[ServedModel]) -> str:
    return write_text_atomic(path, models_config_text(models))


def write_batching_parameters(path: str, params: BatchingParameters | None = None) -> str:
    return write_text_atomic(path, batching_parameters_text(params))


def write_monitoring_config(
    path: str, prometheus_path: str = DEFAULT_PROMETHEUS_PATH, enable: bool = True
) -> str:
    return write_text_atomic(path, monitoring_config_text(prometheus_path, enable))


@dataclasses.dataclass(frozen=True)
class ServerFiles:
    """Paths of the config files a server is started with (None = not used)."""

    model_config_file: str
    batching_parameters_file: str | None = None
    monitoring_config_file: str | None = None


def write_server_files(
    config_dir: str,
    models: ServedModel | Iterable[ServedModel] | None,
    batching: BatchingParameters | None = None,
    monitoring: bool = True,
    model_config_file: str | None = None,
) -> ServerFiles:
    """Writes models.config (unless ``model_config_file`` is given), batching and monitoring.

    Args:
      models: the models to serve; ignored when ``model_config_file`` names an existing file.
      batching: write ``batching_parameters.txt`` (server started with --enable_batching).
      monitoring: write ``monitoring.config`` (Prometheus metrics on the REST port).
    """
    if model_config_file is None:
        if models is None:
            raise ConfigError("write_server_files: give models or model_config_file")
        model_config_file = write_models_config(os.path.join(config_dir, MODELS_CONFIG), models)
    elif not os.path.isfile(model_config_file):
        raise ConfigError(f"model_config_file {model_config_file!r} does not exist")
    batching_file = None
    if batching is not None:
        batching_file = write_batching_parameters(
            os.path.join(config_dir, BATCHING_PARAMETERS), batching
        )
    monitoring_file = None
    if monitoring:
        monitoring_file = write_monitoring_config(os.path.join(config_dir, MONITORING_CONFIG))
    return ServerFiles(model_config_file, batching_file, monitoring_file)


# ----------------------------------------------------------------------------------------
# Command lines.


def _check_port(name: str, port: int) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"{name}: must be a port number in 1..65535, got {port!r}")


def server_args(
    files: ServerFiles,
    *,
    port: int | None = 8500,
    rest_api_port: int | None = 8501,
    file_system_poll_wait_seconds: int = 1,
    model_config_file_poll_wait_seconds: int | None = None,
    allow_version_labels_for_unavailable_models: bool = False,
) -> list[str]:
    """The ``tensorflow_model_server`` flags for ``files`` (None port = leave the default)."""
    args = []
    if port is not None:
        _check_port("port", port)
        args.append(f"--port={port}")
    if rest_api_port is not None:
        _check_port("rest_api_port", rest_api_port)
        args.append(f"--rest_api_port={rest_api_port}")
    args.append(f"--model_config_file={files.model_config_file}")
    if files.batching_parameters_file:
        args += [
            "--enable_batching",
            f"--batching_parameters_file={files.batching_parameters_file}",
        ]
    if files.monitoring_config_file:
        args.append(f"--monitoring_config_file={files.monitoring_config_file}")
    args.append(f"--file_system_poll_wait_seconds={file_system_poll_wait_seconds}")
    if model_config_file_poll_wait_seconds is not None:
        args.append(f"--model_config_file_poll_wait_seconds={model_config_file_poll_wait_seconds}")
    if allow_version_labels_for_unavailable_models:
        args.append("--allow_version_labels_for_unavailable_models=true")
    return args


def server_command(
    files: ServerFiles,
    *,
    binary: str = SERVER_BINARY,
    port: int = 8500,
    rest_api_port: int = 8501,
    file_system_poll_wait_seconds: int = 1,
    model_config_file_poll_wait_seconds: int | None = None,
    allow_version_labels_for_unavailable_models: bool = False,
) -> list[str]:
    """argv of the real server (the apt package's ``tensorflow_model_server``)."""
    return [binary] + server_args(
        files,
        port=port,
        rest_api_port=rest_api_port,
        file_system_poll_wait_seconds=file_system_poll_wait_seconds,
        model_config_file_poll_wait_seconds=model_config_file_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
    )


def for_container(models: Iterable[ServedModel]) -> list[ServedModel]:
    """``models`` with base paths as `docker_command` mounts them (``/models/<name>``)."""
    return [
        dataclasses.replace(m, base_path=f"{CONTAINER_MODELS_DIR}/{m.name}")
        for m in _as_models(models)
    ]


def docker_command(
    models: Sequence[ServedModel],
    config_dir: str,
    *,
    port: int = 8500,
    rest_api_port: int = 8501,
    host: str = "127.0.0.1",
    batching: bool = False,
    monitoring: bool = True,
    image: str = DOCKER_IMAGE,
    file_system_poll_wait_seconds: int = 1,
    container_name: str | None = None,
    model_config_file_poll_wait_seconds: int | None = None,
    allow_version_labels_for_unavailable_models: bool = False,
) -> list[str]:
    """argv of ``docker run`` serving ``models`` (host base paths) with the official image.

    Each model's base path is mounted read-only at ``/models/<name>`` and ``config_dir`` at
    ``/models/_config``; ``config_dir`` must hold the files `write_server_files` wrote for
    `for_container(models)` (their base paths are the container's). The image's entrypoint
    already passes ``--port=8500 --rest_api_port=8501``; the host ports map onto those.
    """
    models = _as_models(models)
    _check_port("port", port)
    _check_port("rest_api_port", rest_api_port)
    bind = f"{host}:" if host and host not in ("0.0.0.0", "::") else ""
    cmd = ["docker", "run", "--rm"]
    if container_name:
        cmd += ["--name", container_name]
    cmd += [
        "-p",
        f"{bind}{port}:{CONTAINER_GRPC_PORT}",
        "-p",
        f"{bind}{rest_api_port}:{CONTAINER_REST_PORT}",
    ]
    for m in models:
        cmd += [
            "--mount",
            f"type=bind,source={os.path.abspath(m.base_path)},"
            f"target={CONTAINER_MODELS_DIR}/{m.name},readonly",
        ]
    cmd += [
        "--mount",
        f"type=bind,source={os.path.abspath(config_dir)},target={CONTAINER_CONFIG_DIR},readonly",
        "-t",
        image,
    ]
    files = ServerFiles(
        f"{CONTAINER_CONFIG_DIR}/{MODELS_CONFIG}",
        f"{CONTAINER_CONFIG_DIR}/{BATCHING_PARAMETERS}" if batching else None,
        f"{CONTAINER_CONFIG_DIR}/{MONITORING_CONFIG}" if monitoring else None,
    )
    return cmd + server_args(
        files,
        port=None,
        rest_api_port=None,
        file_system_poll_wait_seconds=file_system_poll_wait_seconds,
        model_config_file_poll_wait_seconds=model_config_file_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
    )
