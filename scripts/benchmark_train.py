"""Training-speed benchmark: optimizers, end-to-end examples/s, input pipeline, roofline, memory,
training from files (uncached and with the encoded cache).

    python scripts/benchmark_train.py --output_json=/tmp/bench.json --output_md=/tmp/bench.md
    python scripts/benchmark_train.py --sections=from_files   # one part only
    python scripts/benchmark_train.py --quick --output_json=/tmp/quick.json   # ~1 min, tiny

Flag wiring only: what is measured and how is `wdl_tf.benchmarks.train_bench` (its sections
listed there), the Markdown `wdl_tf.benchmarks.train_report`. The Markdown is printed too.

Synthetic Criteo files, their TFRecord shards, the adapted preprocessing state and the encoded
batches are cached in ``--data_dir`` and reused by later runs (delete it after changing the
parsing or preprocessing code, or the encoded batches are stale).
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from wdl_tf.benchmarks import train_bench, train_report  # noqa: E402
from wdl_tf.benchmarks.train_settings import (  # noqa: E402
    FIELDS,
    IMPLEMENTATIONS,
    SECTIONS,
    resolve_settings,
)

FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("output_json", None, "Write the report as JSON here.")
    flags.DEFINE_string("output_md", None, "Write the report as Markdown here (also printed).")
    flags.DEFINE_string(
        "data_dir",
        os.path.join(tempfile.gettempdir(), "wdl_tf_benchmark_data"),
        "Cache of synthetic files, TFRecord shards, preprocessing state and encoded batches.",
    )
    flags.DEFINE_bool("quick", False, "Tiny sizes, in-process (a smoke run, ~1 min on 2 cores).")
    flags.DEFINE_string("device_name", None, "Label of this machine in the report.")
    flags.DEFINE_integer("rows", 200_000, "Synthetic Criteo rows written (and trained on).")
    flags.DEFINE_integer("batch_size", 1024, "Training and input pipeline batch size.")
    flags.DEFINE_list("hash_buckets", ["10000", "1000000"], "Hash buckets per categorical.")
    flags.DEFINE_list(
        "implementations", list(IMPLEMENTATIONS), f"End-to-end configurations: {IMPLEMENTATIONS}."
    )
    flags.DEFINE_enum(
        "tf_keras_optimizers",
        "legacy",
        ["legacy", "new"],
        "tf_keras optimizers for (c): tf_keras.optimizers.legacy (fused sparse kernels) or "
        "tf_keras.optimizers (the 2.11+ ones; their Ftrl updates densely).",
    )
    flags.DEFINE_string("hidden_units", "1024,512,256", "Deep part's ReLU layer sizes.")
    flags.DEFINE_integer("embedding_dim", 32, "Embedding size of every categorical.")
    flags.DEFINE_integer("numeric_features", 13, "Numeric features used: I1..In (at most 13).")
    flags.DEFINE_integer(
        "categorical_features",
        26,
        "Categoricals used: C1..Cn (at most 26); crosses of unused ones are dropped.",
    )
    flags.DEFINE_list("optimizer_rows", ["10000", "1000000", "4000000"], "Table sizes, section 1.")
    flags.DEFINE_integer("optimizer_ids", 1024, "Ids per sparse gradient (section 1).")
    flags.DEFINE_integer("optimizer_steps", 30, "Timed optimizer steps per case.")
    flags.DEFINE_integer("optimizer_warmup", 5, "Untimed optimizer steps per case.")
    flags.DEFINE_integer("warmup_steps", 4, "Untimed training steps (the first one traces).")
    flags.DEFINE_float("warmup_seconds", 20.0, "Warm-up ends early after this (>= 2 steps).")
    flags.DEFINE_integer("window_steps", 20, "Steps per timed window (fewer for slow steps).")
    flags.DEFINE_integer("min_windows", 3, "Timed windows per configuration, at least.")
    flags.DEFINE_integer("max_windows", 10, "Timed windows per configuration, at most.")
    flags.DEFINE_float("train_seconds", 25.0, "Target timed seconds per configuration.")
    flags.DEFINE_integer("pipeline_batches", 60, "Timed batches per input pipeline source.")
    flags.DEFINE_float("pipeline_seconds", 10.0, "Time cap per input pipeline source.")
    flags.DEFINE_list("matmul_sizes", ["1024", "2048", "4096"], "Square float32 matmul sizes.")
    flags.DEFINE_float("matmul_seconds", 3.0, "Timed seconds per matmul size (>= 3 products).")
    flags.DEFINE_integer("csv_files", 4, "Synthetic CSV files.")
    flags.DEFINE_integer("tfrecord_shards", 8, "TFRecord shards (uncompressed).")
    flags.DEFINE_list(
        "sections",
        list(SECTIONS),
        f"Parts to run: {SECTIONS}. from_files: train.py's path (files → parse → preprocess "
        "→ train) per format, uncached and with the encoded cache.",
    )
    flags.DEFINE_integer(
        "files_epochs", 3, "from_files: cached epochs (1 writes, 2+ read); uncached: 2."
    )
    flags.DEFINE_bool("isolate", True, "Run each end-to-end configuration in a subprocess.")
    flags.DEFINE_integer("config_timeout", 420, "Seconds before a configuration is abandoned.")


def main(argv):
    del argv
    try:
        settings = resolve_settings(
            {name: FLAGS[name].value for name in FIELDS},
            {name for name in FIELDS if FLAGS[name].present},
        )
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    report = train_bench.run_benchmark(settings)
    train_report.write_report(report, FLAGS.output_json, FLAGS.output_md)


if __name__ == "__main__":
    define_flags()
    app.run(main)
