"""Serving benchmark: ``rank`` latency in-process vs gRPC/REST, concurrency, soak, hot reload.

    python scripts/benchmark_serving.py --output_json=/tmp/serve.json --output_md=/tmp/serve.md
    python scripts/benchmark_serving.py --quick --output_json=/tmp/quick.json   # < 60 s, tiny

Flag wiring only: what is measured and how is `wdl_tf.benchmarks.serving_bench` (its eight
sections listed there), the Markdown `wdl_tf.benchmarks.serving_report`. Without
``--saved_model_base`` a paper-sized census model (ReLU 1024-512-256; ``--quick``: (16, 8)) is
trained for one epoch and exported first. The Markdown is printed too.
"""

from __future__ import annotations

import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from wdl_tf.benchmarks import serving_bench, serving_report  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("saved_model_base", None, "Export base (versions as subdirs); else train.")
flags.DEFINE_string("work_dir", None, "Scratch directory (default: a temporary one, removed).")
flags.DEFINE_integer("candidates", 200, "Candidates per rank request.")
flags.DEFINE_float("seconds", 10.0, "Seconds per (protocol, concurrency) point.")
flags.DEFINE_float("soak_seconds", 30.0, "Seconds of the 16-client gRPC soak.")
flags.DEFINE_list("concurrency", ["1", "4", "16"], "Concurrent clients per point.")
flags.DEFINE_integer("in_process_iters", 200, "Timed in-process calls (after warm-up).")
flags.DEFINE_float("startup_timeout", 300.0, "Seconds to wait for the server / version 2.")
flags.DEFINE_bool("quick", False, "Tiny model (16, 8) and short points: < 60 s in all.")
flags.DEFINE_integer("keepalive_clients", 200, "Concurrent keep-alive REST clients.")
flags.DEFINE_float("keepalive_seconds", 10.0, "Seconds of the keep-alive REST point.")
flags.DEFINE_integer("body_limit_mib", 64, "The server's --max_body_bytes, in MiB.")
flags.DEFINE_integer("profile_iters", 200, "Timed iterations per step of the gRPC profile.")
flags.DEFINE_string("output_json", None, "Write the report here as JSON.")
flags.DEFINE_string("output_md", None, "Write the Markdown table here.")


def main(argv: list[str]) -> None:
    del argv
    try:
        concurrency = tuple(int(c) for c in FLAGS.concurrency)
    except ValueError:
        raise app.UsageError(f"--concurrency: expected integers, got {FLAGS.concurrency}") from None
    options = serving_bench.ServingOptions(
        saved_model_base=FLAGS.saved_model_base,
        candidates=FLAGS.candidates,
        seconds=FLAGS.seconds,
        soak_seconds=FLAGS.soak_seconds,
        concurrency=concurrency,
        in_process_iters=FLAGS.in_process_iters,
        startup_timeout=FLAGS.startup_timeout,
        quick=FLAGS.quick,
        keepalive_clients=FLAGS.keepalive_clients,
        keepalive_seconds=FLAGS.keepalive_seconds,
        body_limit_mib=FLAGS.body_limit_mib,
        profile_iters=FLAGS.profile_iters,
    )
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_serving_")
    os.makedirs(work_dir, exist_ok=True)
    try:
        report = serving_bench.run_benchmark(work_dir, options)
    finally:
        if FLAGS.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    serving_report.write_report(report, FLAGS.output_json, FLAGS.output_md)


if __name__ == "__main__":
    app.run(main)
