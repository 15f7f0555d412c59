"""Do the defaults hold across datasets? Wide, deep and joint with train.py's defaults.

    python scripts/benchmark_quality.py --work_dir=/tmp/quality \\
        --datasets=census,apps_synthetic,drifting_synthetic --seeds=0,1

For each dataset and seed, `train_lib.compare_model_types` trains wide-only, deep-only and
Wide & Deep with the same defaults (early stopping on the validation split carved from the
training files; the test files are only evaluated), and the table says whether the joint
model's test AUC is at least the better part's: the paper's ordering, the quality target of
BENCHMARKS.md. The seed seeds the synthetic data and the model alike. Writes
``<work_dir>/quality.json`` and ``quality.md``; exit status 1 when the ordering fails
anywhere (so it can gate a change of defaults).

``--tune_trials=N`` compares the *tuned* models instead (issue 10's second figure): for each
model type, `tune_lib.tune` runs N trials on the validation split, the first half random and
the rest Bayesian (the same budget for each type: N trials of at most ``--tune_epochs``
epochs, early stopping inside each, the default search space less
the settings of a part the type does not have), then the best settings are trained on all
training rows for the best trial's epoch count, as ``train.py --flagfile=best.flags`` does,
and evaluated once on the test files.

The work is `wdl_tf.benchmarks.quality`; this is its flag wiring.

``--quick`` runs a tiny census twin for one epoch: a smoke check of this script, not a figure.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from wdl_tf.benchmarks import quality  # noqa: E402

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined by the main only: importing this file defines no flags."""
    flags.DEFINE_string("work_dir", "/tmp/wdl_quality", "Where the runs and the tables go.")
    flags.DEFINE_list("datasets", ["census", "apps_synthetic", "drifting_synthetic"], "Datasets.")
    flags.DEFINE_list("seeds", ["0", "1"], "Seeds (of the synthetic data and of the model).")
    flags.DEFINE_bool("quick", False, "A tiny census twin for one epoch (smoke check only).")
    flags.DEFINE_integer(
        "tune_trials", 0, "When > 0: compare tuned models, this many trials per model type."
    )
    flags.DEFINE_integer("tune_epochs", 10, "Epoch budget of each tuning trial.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        plans = quality.plan(FLAGS.datasets, FLAGS.seeds, FLAGS.work_dir, FLAGS.quick)
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    runs = quality.measure(plans, FLAGS.tune_trials, FLAGS.tune_epochs)
    if not quality.write_report(runs, FLAGS.work_dir):
        print("the joint model is below one of its parts somewhere (✗)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    logging.set_verbosity(logging.WARNING)
    app.run(main)
