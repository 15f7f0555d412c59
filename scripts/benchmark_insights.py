"""Does importance find what the app-store generator planted? (issue 11's figure)

    python scripts/benchmark_insights.py --work_dir=/tmp/insights

Trains Wide & Deep on the synthetic app store and checks that importance finds the
planted pairs and features; what is checked, and why, is `wdl_tf.benchmarks.insights`'s
docstring.

Writes ``<work_dir>/insights.json``; exit status 1 when a check fails. ``--quick`` trains a
tiny model for one epoch (a smoke check of the script, not the figure). The work is
`wdl_tf.benchmarks.insights`; this is its flag wiring.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from wdl_tf.benchmarks import insights  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined by the main only: importing this file defines no flags."""
    flags.DEFINE_string("work_dir", "/tmp/wdl_insights", "Where the run and the JSON go.")
    flags.DEFINE_integer("rows", 100_000, "Training rows of the app store.")
    flags.DEFINE_integer("epochs", 5, "Epochs.")
    flags.DEFINE_integer("seed", 0, "Seed of the planted model and of training.")
    flags.DEFINE_integer("top", 20, "Top cross tokens checked.")
    flags.DEFINE_bool("quick", False, "Tiny and one epoch: a smoke check only.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    figure = insights.measure(
        FLAGS.work_dir, FLAGS.rows, FLAGS.epochs, FLAGS.seed, FLAGS.top, FLAGS.quick
    )
    if not all(figure["checks"].values()) and not FLAGS.quick:
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    logging.set_verbosity(logging.WARNING)
    app.run(main)
