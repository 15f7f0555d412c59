"""Checks serving inputs against the training data: skew and drift per feature, as a gate.

    python scripts/skew_report.py --training_stats=models/census/3 \
        --request_log='logs/requests-*.tfrecord'
    python scripts/skew_report.py --training_stats=models/census_train --rows=today.csv \
        --metric=js --max_js=0.15 --output=skew.json

``--training_stats`` is a model dir, an exported SavedModel (its ``assets.extra/``) or a
``training_stats.json``. The sample is TF Serving request logs (TFRecord of PredictionLog, as
the local server's request logging writes) or rows (CSV or tf.Example TFRecord). Per feature it
prints PSI and Jensen–Shannon distance, the missing and OOV rates (training → sample) and the
share of values outside the training range, then the flagged features.

Exit status: 0 when every feature is within the thresholds, 1 when one is flagged (so it can
gate a pipeline), 2 on bad input (named). All the work is in `wdl_tf.skew`.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

FLAGS = flags.FLAGS
flags.DEFINE_string("training_stats", None, "Model dir, SavedModel or training_stats.json.")
flags.DEFINE_string("request_log", "", "TFRecord files/globs of PredictionLog (request logs).")
flags.DEFINE_string("rows", "", "CSV or tf.Example TFRecord files/globs of rows.")
flags.DEFINE_string(
    "feature_spec", "", "Spec of the sample (default: the one beside the statistics)."
)
flags.DEFINE_integer("max_rows", 100_000, "Read at most this many sample rows.")
flags.DEFINE_enum("metric", "psi", ["psi", "js"], "The distance that gates (both are shown).")
flags.DEFINE_float("max_psi", 0.25, "Largest allowed population stability index.")
flags.DEFINE_float("max_js", 0.2, "Largest allowed Jensen-Shannon distance (base 2).")
flags.DEFINE_float("max_missing_increase", 0.05, "Largest allowed rise of the missing rate.")
flags.DEFINE_float("max_oov_increase", 0.05, "Largest allowed rise of the OOV rate.")
flags.DEFINE_float(
    "max_out_of_range", 0.05, "Largest allowed share of values outside the training range."
)
flags.DEFINE_string("output", "", "Also write the report as JSON here.")


def main(argv) -> None:
    if len(argv) > 1:
        print(f"error: unexpected arguments: {argv[1:]}", file=sys.stderr)
        sys.exit(2)
    if not FLAGS.training_stats:
        print("error: --training_stats is required", file=sys.stderr)
        sys.exit(2)
    from wdl_tf import evaluate_lib, skew

    thresholds = skew.SkewThresholds(
        metric=FLAGS.metric,
        max_psi=FLAGS.max_psi,
        max_js=FLAGS.max_js,
        max_missing_increase=FLAGS.max_missing_increase,
        max_oov_increase=FLAGS.max_oov_increase,
        max_out_of_range=FLAGS.max_out_of_range,
    )
    try:
        report = skew.skew_report(
            FLAGS.training_stats,
            request_log=FLAGS.request_log,
            rows=FLAGS.rows,
            feature_spec=FLAGS.feature_spec,
            max_rows=FLAGS.max_rows,
            thresholds=thresholds,
        )
        if FLAGS.output:
            evaluate_lib.write_json_atomic(FLAGS.output, report)
    except (ValueError, OSError) as e:  # SampleError, FeatureSpecError: named bad input
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(skew.format_report(report))
    if FLAGS.output:
        print(json.dumps({"written": FLAGS.output}))
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main)
