"""Serves exported models: the real TF Serving binary, its Docker image, or the local server.

    python scripts/serve.py --model_base_path=./models/census            # best available
    python scripts/serve.py --model_base_path=./models/census --enable_batching
    python scripts/serve.py --model_base_path=./models/census --docker --dry_run
    python scripts/serve.py --model_config_file=models.config --local

* ``tensorflow_model_server`` on PATH (and no --local/--docker): models.config,
  batching_parameters.txt and monitoring.config are written to --config_dir (default: a
  temp dir) with tf_serving/config.py, and the binary is exec'ed with them.
* --docker: the same files, with the container's paths, and ``docker run tensorflow/serving``
  with the model directories and the config dir mounted read-only.
* Otherwise (or --local): tf_serving/server.py, the TF-Serving-compatible local server.

The command is printed first; --dry_run prints it without running anything.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import shutil
import sys
import tempfile
from typing import Any

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tf_serving import config as cfg  # noqa: E402

FLAGS = flags.FLAGS
_B = cfg.BatchingParameters()


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    flags.DEFINE_string(
        "model_base_path",
        None,
        "Directory of integer version dirs (not a version dir).",
        flag_values=fv,
    )
    flags.DEFINE_string("model_name", "census", "Name clients use.", flag_values=fv)
    flags.DEFINE_string(
        "model_config_file",
        None,
        "A models.config to use instead of --model_base_path.",
        flag_values=fv,
    )
    flags.DEFINE_integer("port", 8500, "gRPC port.", flag_values=fv)
    flags.DEFINE_integer("rest_api_port", 8501, "REST port.", flag_values=fv)
    flags.DEFINE_string(
        "host",
        "127.0.0.1",
        "Address to listen on (local server; Docker's published ports). The real binary "
        "listens on all interfaces.",
        flag_values=fv,
    )
    flags.DEFINE_bool("enable_batching", False, "Batch requests on the server.", flag_values=fv)
    flags.DEFINE_integer(
        "max_batch_size", _B.max_batch_size, "Batching: max batch.", flag_values=fv
    )
    flags.DEFINE_integer(
        "batch_timeout_micros",
        _B.batch_timeout_micros,
        "Batching: wait for a batch.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "max_enqueued_batches", _B.max_enqueued_batches, "Batching: queue length.", flag_values=fv
    )
    flags.DEFINE_integer(
        "num_batch_threads", _B.num_batch_threads, "Batching: threads.", flag_values=fv
    )
    flags.DEFINE_list(
        "allowed_batch_sizes", [], "Batching: padded sizes, the last = max.", flag_values=fv
    )
    flags.DEFINE_bool("monitoring", True, "Prometheus metrics on the REST port.", flag_values=fv)
    flags.DEFINE_string(
        "config_dir", None, "Where to write the config files (default: a temp dir).", flag_values=fv
    )
    flags.DEFINE_bool("docker", False, "Run the tensorflow/serving Docker image.", flag_values=fv)
    flags.DEFINE_string("docker_image", cfg.DOCKER_IMAGE, "Docker image.", flag_values=fv)
    flags.DEFINE_bool(
        "local", False, "Force the local server (tf_serving/server.py).", flag_values=fv
    )
    flags.DEFINE_bool("dry_run", False, "Print the command, do not run it.", flag_values=fv)


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
) -> Plan:
    """Chooses the server and writes its config files; runs nothing.

    Args:
      batching: batching parameters (None = no batching).
      binary: path of ``tensorflow_model_server`` (None = not available → local server).

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

    if local or (not docker and not binary):
        kwargs = dict(
            model_name=model_name if model_base_path else None,
            model_base_path=os.path.abspath(model_base_path) if model_base_path else None,
            model_config_file=model_config_file,
            port=port,
            rest_api_port=rest_api_port,
            host=host,
            batching=batching,
        )
        return Plan("local", local_kwargs=kwargs)

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
        )
        return Plan("docker", command=command, files=files)
    files = cfg.write_server_files(
        config_dir,
        models,
        batching=batching,
        monitoring=monitoring,
        model_config_file=model_config_file,
    )
    command = cfg.server_command(files, binary=binary, port=port, rest_api_port=rest_api_port)
    return Plan("real", command=command, files=files)


def run_local(kwargs: dict[str, Any]) -> None:
    """Calls ``tf_serving.server.serve`` (blocks) with the arguments it accepts."""
    from tf_serving import server

    params = inspect.signature(server.serve).parameters
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    server.serve(**kwargs)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    batching = None
    try:
        if FLAGS.enable_batching:
            batching = cfg.BatchingParameters(
                max_batch_size=FLAGS.max_batch_size,
                batch_timeout_micros=FLAGS.batch_timeout_micros,
                max_enqueued_batches=FLAGS.max_enqueued_batches,
                num_batch_threads=FLAGS.num_batch_threads,
                allowed_batch_sizes=tuple(int(s) for s in FLAGS.allowed_batch_sizes),
            )
        plan = make_plan(
            model_base_path=FLAGS.model_base_path,
            model_name=FLAGS.model_name,
            model_config_file=FLAGS.model_config_file,
            port=FLAGS.port,
            rest_api_port=FLAGS.rest_api_port,
            host=FLAGS.host,
            batching=batching,
            monitoring=FLAGS.monitoring,
            config_dir=FLAGS.config_dir,
            docker=FLAGS.docker,
            local=FLAGS.local,
            docker_image=FLAGS.docker_image,
            binary=shutil.which(cfg.SERVER_BINARY),
        )
    except (ValueError, OSError) as e:
        raise app.UsageError(str(e)) from None

    if plan.kind == "local":
        print(f"local server: {plan.local_kwargs}", flush=True)
        if not FLAGS.dry_run:
            run_local(plan.local_kwargs)
        return
    print(" ".join(plan.command), flush=True)
    if FLAGS.dry_run:
        return
    if plan.kind == "docker" and shutil.which("docker") is None:
        print("error: docker is not on PATH; run the command above where it is", file=sys.stderr)
        sys.exit(1)
    os.execvp(plan.command[0], plan.command)


if __name__ == "__main__":
    define_flags()
    app.run(main)
