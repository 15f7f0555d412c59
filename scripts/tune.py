"""Searches training settings with KerasTuner on the validation split; writes best.flags.

    pip install -e ".[tune]"
    python scripts/tune.py --dataset=apps_synthetic --model_type=wide_deep \
        --tune_dir=/tmp/tune_wd --algorithm=bayesian --max_trials=20 --epochs=10
    python scripts/train.py --flagfile=/tmp/tune_wd/best.flags --model_dir=/tmp/wd

Takes every flag of scripts/train.py as the base of each trial (``--model_dir`` and
``--export_base`` are ignored: each trial trains into ``<tune_dir>/trials/<id>/model``, with no
export). ``--epochs`` is each trial's epoch budget (Hyperband's largest). Every trial holds
out ``--validation_fraction`` of the training rows and is scored on them only; the test files
are never read. Rerunning with the same ``--tune_dir`` resumes the search. All the work is in
`wdl_tf.tune_lib`.
"""

import sys

from absl import app, flags, logging

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from wdl_tf import cli, tune_lib  # noqa: E402

FLAGS = flags.FLAGS

flags.DEFINE_string("tune_dir", None, "The search's state and outputs; a rerun resumes it.")
flags.DEFINE_enum("algorithm", "bayesian", list(tune_lib.ALGORITHMS), "KerasTuner oracle.")
flags.DEFINE_integer(
    "max_trials", 20, "Trials in all, counting those of a resumed search (Hyperband: a cap)."
)
flags.DEFINE_string(
    "search_space",
    "",
    'JSON file {name: {"min", "max", "log"} | {"values": [...]}} naming exactly the settings '
    "to search (empty: the default space for the model type).",
)
flags.DEFINE_list("tune_params", [], "Search only these settings of the space.")
flags.DEFINE_integer("hyperband_factor", 3, "Hyperband keeps 1/factor of each round.")
flags.DEFINE_integer(
    "initial_points",
    0,
    "Random trials before the Bayesian model is used (0: 3 x the number of settings).",
)
flags.DEFINE_integer("tuner_seed", 1, "Seed of the oracle's sampling (>= 1).")
flags.DEFINE_boolean("overwrite", False, "Delete a previous search in --tune_dir first.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        options = tune_lib.TuneOptions(
            tune_dir=FLAGS.tune_dir,
            algorithm=FLAGS.algorithm,
            max_trials=FLAGS.max_trials,
            search_space=FLAGS.search_space,
            tune_params=tuple(FLAGS.tune_params),
            hyperband_factor=FLAGS.hyperband_factor,
            initial_points=FLAGS.initial_points,
            tuner_seed=FLAGS.tuner_seed,
            overwrite=FLAGS.overwrite,
        )
        summary = tune_lib.tune(cli.config_from_flags(), options, lambda s: print(s, flush=True))
    except ValueError as e:  # bad flags, search space or data: named, before training
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    with open(summary.results_md) as f:
        print(f.read())


if __name__ == "__main__":
    cli.define_train_flags()
    FLAGS.set_default("validation_fraction", 0.2)
    FLAGS.set_default("verbose", 0)
    flags.mark_flag_as_required("tune_dir")
    logging.set_verbosity(logging.WARNING)
    app.run(main)
