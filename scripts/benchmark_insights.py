"""Does importance find what the app-store generator planted? (issue 11's figure)

    python scripts/benchmark_insights.py --work_dir=/tmp/insights

Trains Wide & Deep on the synthetic app store (`wdl_tf.datasets.apps`), whose planted model is
known, then runs `wdl_tf.importance` on its evaluation rows and holds the answers to it:

* **Memorized pairs**: the planted (installed app, impression app) pairs add
  `apps.PAIR_WEIGHT` to the logit and nothing else predicts them, so the largest positive
  weights of the wide cross ``installed_apps × impression_app`` should be planted pairs. The
  figure is the share of the cross's top tokens that are planted, against the share of
  planted pairs among all pairs seen in the evaluation rows (what a random pick would get).
* **Strong features**: the planted logit (`apps.logit`, `apps.planted_model`) has two large
  terms that one feature carries alone: ``rating`` (1.2 × (rating − 4), std ≈ 0.54 over apps)
  and ``price`` (−1.0 if paid − 0.25 × log1p(price), std ≈ 0.4); the others are smaller
  (app age 0.28, hour 0.21, slot) or spread over many features (the affinity, the pairs).
  ``language`` enters no term. Permutation importance should rank ``rating`` and ``price``
  first and second, and give ``language`` no AUC drop beyond its noise.

Writes ``<work_dir>/insights.json``; exit status 1 when a check fails. ``--quick`` trains a
tiny model for one epoch (a smoke check of the script, not the figure). The work is
`wdl_tf.benchmarks.insights`; this is its flag wiring.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from wdl_tf.benchmarks import insights

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
