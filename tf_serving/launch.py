"""Launch plans for scripts/serve.py: which server runs an export, with which files.

`make_plan` chooses between the real ``tensorflow_model_server`` (config files written with
`tf_serving.config`, the binary exec'ed), its Docker image, and the local server
(`tf_serving.server`), and checks the options against the choice: a local-server limit with
the real server is an error, not a silent no-op. It runs nothing, so tests and
``--dry_run`` see exactly what would run.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

from tf_serving import config as cfg

# Limits and options of the local server (tf_serving/server/) that tensorflow_model_server
# has no flag for: name -> (flag type, help).
LOCAL_LIMITS = {
    "max_body_bytes": (int, "largest REST request body, in bytes (default 64 MiB; 413 above)."),
    "max_in_flight_requests": (int, "REST requests handled at once (default 256; 503 above)."),
    "grpc_workers": (int, "threads serving gRPC requests (default 16)."),
    "max_decoded_bytes": (
        int,
        "a Predict request whose tensors would take more bytes decoded is refused "
        "(default 4 GiB; a few bytes of TensorProto can claim billions of elements).",
    ),
    "rest_backlog": (int, "listen backlog of the REST port (default 1024)."),
    "rest_keepalive_timeout_s": (
        float,
        "idle REST keep-alive connections close after this (60 s).",
    ),
    "request_log_dir": (
        str,
        "log a sample of the requests served as TF Serving PredictionLog TFRecords here "
        "(read by scripts/skew_report.py --request_log); off by default.",
    ),
    "request_log_sampling_rate": (
        float,
        "share of requests logged, in (0, 1] (default 0.01 when --request_log_dir is set).",
    ),
}


@dataclasses.dataclass
class Plan:
    """What to run: ``real`` / ``docker`` (``command``) or ``local`` (``local_kwargs``)."""

    kind: str
    command: list[str] | None = None
    local_kwargs: dict[str, Any] | None = None
    files: cfg.ServerFiles | None = None


def make_plan(
    *,
    model_base_path: str | None = None,
    model_name: str = "census",
    model_config_file: str | None = None,
    port: int = 8500,
    rest_api_port: int = 8501,
    host: str = "127.0.0.1",
    batching: cfg.BatchingParameters | None = None,
    monitoring: bool = True,
    config_dir: str | None = None,
    docker: bool = False,
    local: bool = False,
    docker_image: str = cfg.DOCKER_IMAGE,
    binary: str | None = None,
    model_config_file_poll_wait_seconds: int | None = None,
    allow_version_labels_for_unavailable_models: bool = False,
    local_limits: dict[str, Any] | None = None,
) -> Plan:
    """Chooses the server and writes its config files; runs nothing.

    Args:
      batching: batching parameters (None = no batching).
      binary: path of ``tensorflow_model_server`` (None = not available → local server).
      local_limits: `LOCAL_LIMITS` values for the local server (None values = defaults);
        any of them with the real server or Docker is a ValueError.

    Raises:
      ValueError (a `tf_serving.config.ConfigError` for bad config values).
    """
    if bool(model_base_path) == bool(model_config_file):
        raise ValueError("give exactly one of --model_base_path and --model_config_file")
    if docker and local:
        raise ValueError("--docker and --local exclude each other")
    if batching is not None:
        batching.validate()
    if model_config_file:
        model_config_file = os.path.abspath(model_config_file)
        with open(model_config_file) as f:
            models = cfg.parse_models_config(f.read())
    else:
        models = [cfg.ServedModel(model_name, os.path.abspath(model_base_path))]
        for m in models:
            m.validate()

    limits = {k: v for k, v in (local_limits or {}).items() if v is not None}
    unknown = sorted(set(limits) - set(LOCAL_LIMITS))
    if unknown:
        raise ValueError(f"unknown local server limits {unknown}; known: {sorted(LOCAL_LIMITS)}")
    if local or (not docker and not binary):
        kwargs = dict(
            model_name=model_name if model_base_path else None,
            model_base_path=os.path.abspath(model_base_path) if model_base_path else None,
            model_config_file=model_config_file,
            port=port,
            rest_api_port=rest_api_port,
            host=host,
            batching=batching,
            monitoring=monitoring,
            allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
            **limits,
        )
        if model_config_file_poll_wait_seconds is not None:
            kwargs["model_config_file_poll_wait_seconds"] = model_config_file_poll_wait_seconds
        return Plan("local", local_kwargs=kwargs)
    if limits:
        where = "Docker" if docker else f"the real server ({binary})"
        raise ValueError(
            f"{', '.join('--' + k for k in sorted(limits))}: only the local server has these "
            f"limits; {where} does not (use --local, or drop them)"
        )

    config_dir = config_dir or tempfile.mkdtemp(prefix="tf_serving_config_")
    if docker:
        files = cfg.write_server_files(
            config_dir, cfg.for_container(models), batching=batching, monitoring=monitoring
        )
        command = cfg.docker_command(
            models,
            config_dir,
            port=port,
            rest_api_port=rest_api_port,
            host=host,
            batching=batching is not None,
            monitoring=monitoring,
            image=docker_image,
            model_config_file_poll_wait_seconds=model_config_file_poll_wait_seconds,
            allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
        )
        return Plan("docker", command=command, files=files)
    files = cfg.write_server_files(
        config_dir,
        models,
        batching=batching,
        monitoring=monitoring,
        model_config_file=model_config_file,
    )
    command = cfg.server_command(
        files,
        binary=binary,
        port=port,
        rest_api_port=rest_api_port,
        model_config_file_poll_wait_seconds=model_config_file_poll_wait_seconds,
        allow_version_labels_for_unavailable_models=allow_version_labels_for_unavailable_models,
    )
    return Plan("real", command=command, files=files)


def run_local(kwargs: dict[str, Any]) -> None:
    """Calls ``tf_serving.server.serve`` (blocks until SIGINT/SIGTERM)."""
    from tf_serving import server

    server.serve(**kwargs)
