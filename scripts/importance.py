"""Global feature importance of a trained model: permutation importance and top wide tokens.

    python scripts/importance.py --model_dir=models/census_train        # its own eval data
    python scripts/importance.py --saved_model=models/census/3 --eval_files=data/test.csv \
        --repeats=10 --output=importance.json --chart=importance.png

Every feature's column is shuffled ``--repeats`` times across the evaluation rows; the AUC drop
(mean ± std) is reported for the model and, for Wide & Deep, for each part's own logit. With
--model_dir and a wide part, the ids with the largest and most negative wide weights are listed
per feature and cross, with their tokens. Writes the JSON (--output) and a bar chart (--chart,
needs the ``report`` extra: matplotlib). A bad flag exits with status 2 and names it.

All the work is in `wdl_tf.importance`.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from wdl_tf import atomic  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A training run's model dir.")
flags.DEFINE_string("saved_model", None, "An exported SavedModel (serving_default is scored).")
flags.DEFINE_string(
    "eval_files", "", "Evaluation files/globs (default: the model dir's; needed with a SavedModel)."
)
flags.DEFINE_string("feature_spec", "", "Spec of --eval_files (default: the model's).")
flags.DEFINE_integer("repeats", 5, "Shuffles per feature.")
flags.DEFINE_integer("max_rows", 20_000, "Evaluation rows used.")
flags.DEFINE_integer("top_tokens", 20, "Wide tokens listed per feature and direction.")
flags.DEFINE_integer("seed", 0, "Seed of the shuffles.")
flags.DEFINE_string("output", "importance.json", "Where to write the JSON.")
flags.DEFINE_string("chart", None, "Bar chart PNG (default: --output with .png; '' for none).")


def main(argv) -> None:
    if len(argv) > 1:
        print(f"error: unexpected arguments: {argv[1:]}", file=sys.stderr)
        sys.exit(2)
    from wdl_tf import evaluate_lib, importance, plots

    chart = os.path.splitext(FLAGS.output)[0] + ".png" if FLAGS.chart is None else FLAGS.chart
    options = importance.ImportanceOptions(
        repeats=FLAGS.repeats,
        max_rows=FLAGS.max_rows,
        seed=FLAGS.seed,
        top_tokens=FLAGS.top_tokens,
    )
    try:
        if chart:
            plots.pyplot()  # fail before the work when matplotlib is missing
        result = importance.importance(
            model_dir=FLAGS.model_dir,
            saved_model=FLAGS.saved_model,
            eval_files=FLAGS.eval_files,
            feature_spec=FLAGS.feature_spec,
            options=options,
        )
        evaluate_lib.write_json_atomic(FLAGS.output, result)
        if chart:
            png = plots.importance_chart(result)
            atomic.write_bytes(chart, png)
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(importance.format_importance(result))
    print(f"wrote {FLAGS.output}" + (f" and {chart}" if chart else ""))


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main)
