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
* Otherwise (or --local): tf_serving/server/, the TF-Serving-compatible local server, with
  the same models, batching, monitoring and label flags, and its own limits
  (--max_body_bytes, --max_in_flight_requests, --grpc_workers, --max_decoded_bytes,
  --rest_backlog, --rest_keepalive_timeout_s), which the real server does not have: giving
  one of those with the real server or Docker is an error, not a silent no-op.

The command is printed first; --dry_run prints it without running anything.
"""

from __future__ import annotations

import os
import shutil
import sys

from absl import app, flags

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from tf_serving import config as cfg  # noqa: E402
from tf_serving.launch import LOCAL_LIMITS, make_plan, run_local  # noqa: E402

FLAGS = flags.FLAGS
_B = cfg.BatchingParameters()
_DEFINE = {int: flags.DEFINE_integer, float: flags.DEFINE_float, str: flags.DEFINE_string}


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
    flags.DEFINE_integer(
        "model_config_file_poll_wait_seconds",
        None,
        "Re-read --model_config_file this often (TF Serving's flag; unset = once).",
        flag_values=fv,
    )
    flags.DEFINE_bool(
        "allow_version_labels_for_unavailable_models",
        False,
        "Let a new version label point at a version that is not loaded yet (TF Serving's "
        "flag); needed for labels in the initial models.config.",
        flag_values=fv,
    )
    for name, (kind, help_text) in LOCAL_LIMITS.items():
        _DEFINE[kind](name, None, f"Local server only: {help_text}", flag_values=fv)
    flags.DEFINE_string(
        "config_dir", None, "Where to write the config files (default: a temp dir).", flag_values=fv
    )
    flags.DEFINE_bool("docker", False, "Run the tensorflow/serving Docker image.", flag_values=fv)
    flags.DEFINE_string("docker_image", cfg.DOCKER_IMAGE, "Docker image.", flag_values=fv)
    flags.DEFINE_bool(
        "local", False, "Force the local server (tf_serving/server.py).", flag_values=fv
    )
    flags.DEFINE_bool("dry_run", False, "Print the command, do not run it.", flag_values=fv)


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
            model_config_file_poll_wait_seconds=FLAGS.model_config_file_poll_wait_seconds,
            allow_version_labels_for_unavailable_models=(
                FLAGS.allow_version_labels_for_unavailable_models
            ),
            local_limits={name: FLAGS[name].value for name in LOCAL_LIMITS},
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
