"""Continuous training: one warm-started model per span of data, gated publishing.

    python scripts/continuous_train.py --dataset=apps_synthetic --spans=4 \
        --model_dir=/tmp/cont --export_base=/tmp/cont_export
    python scripts/continuous_train.py --dataset=files --feature_spec=my_spec.json \
        --span_files='data/day-{span}/*.csv' --spans=7 --model_dir=... --export_base=...

Takes every flag of scripts/train.py (``--epochs`` is per span, ``--synthetic_rows`` the rows
of a generated span, ``--max_auc_drop`` the publish gate) plus the flags below. Writes
``<model_dir>/continuous.json``; a rerun resumes after the last finished span. All the work
is in `wdl_tf.continuous`.
"""

import json
import sys

from absl import app, flags, logging

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from wdl_tf import cli  # noqa: E402
from wdl_tf import config as config_lib  # noqa: E402

_C = config_lib.ContinuousConfig(train=None)  # the defaults


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
    """Defines the continuous flags in ``fv`` (after `cli.define_train_flags`, whose
    defaults it changes)."""
    flags.DEFINE_integer(
        "spans", _C.spans, "Spans of data (the last one only evaluates).", flag_values=fv
    )
    flags.DEFINE_integer("first_span", _C.first_span, "Number of the first span.", flag_values=fv)
    flags.DEFINE_string(
        "span_files",
        _C.span_files,
        "--dataset=files: a pattern with {span} (data/day-{span}/*.csv) or one glob per span, "
        "comma-separated.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "vocab_window",
        _C.vocab_window,
        "Admit a token seen min_count times in this many spans.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "evict_after_spans",
        _C.evict_after_spans,
        "Evict a token unseen for this many spans (its id is reused).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "eval_every_steps",
        _C.eval_every_steps,
        "Evaluate warm and cold models every this many steps (0: ~20 times per span).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "curve_eval_rows",
        _C.curve_eval_rows,
        "Rows of the next span those evaluations read.",
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "measure_cold",
        _C.measure_cold,
        "Also train a cold model per span (for steps_to_reach_cold).",
        flag_values=fv,
    )
    # Continuous training's own defaults for shared flags: one pass per span, the gate on,
    # optimizer slots copied (FTRL's wide weights live in them), its own directories.
    fv.set_default("epochs", 1)
    fv.set_default("max_auc_drop", 0.0)
    fv.set_default("warm_start_optimizer", _C.warm_start_optimizer)
    fv.set_default("model_dir", "./models/continuous")
    fv.set_default("export_base", "./models/continuous_export")
    fv.set_default("verbose", 0)


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    FLAGS = flags.FLAGS
    try:
        if FLAGS.dataset == "files" and not FLAGS.train_files:
            FLAGS.train_files = FLAGS.span_files  # the spans are the training files
        train = cli.config_from_flags()
        config = config_lib.ContinuousConfig(
            train=train,
            spans=FLAGS.spans,
            first_span=FLAGS.first_span,
            span_files=FLAGS.span_files,
            vocab_window=FLAGS.vocab_window,
            evict_after_spans=FLAGS.evict_after_spans,
            warm_start_optimizer=FLAGS.warm_start_optimizer,
            eval_every_steps=FLAGS.eval_every_steps,
            curve_eval_rows=FLAGS.curve_eval_rows,
            measure_cold=FLAGS.measure_cold,
        )
        config.validate()  # bad settings are named before TensorFlow loads
        from wdl_tf import continuous

        records = continuous.run(config, progress=lambda line: print(line, flush=True))
    except ValueError as e:  # also FeatureSpecError and DataError: bad input, named
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    keys = ("span", "auc", "published_version", "steps_to_reach_warm", "steps_to_reach_cold")
    print(json.dumps([{k: r[k] for k in keys} for r in records], indent=1))


if __name__ == "__main__":
    cli.define_train_flags()
    define_flags()
    logging.set_verbosity(logging.WARNING)
    app.run(main)
