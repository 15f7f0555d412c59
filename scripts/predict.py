"""Scores rows with a served model (TF Serving or tf_serving/server/): one score per row.

    python scripts/predict.py --input=rows.json                       # gRPC, localhost:8500
    python scripts/predict.py --rest=http://localhost:8501 --input=rows.csv --signature=regression
    python scripts/predict.py --input=adult.test --feature_spec=census --label=stable

Input: a JSON list of row objects, a CSV (optionally .gz) whose header names the features,
or (with --feature_spec) headerless CSV in the spec's layout, the label column optional. Without a
spec, feature dtypes come from the model's ``serving_default`` metadata.

Prints, per row: the ``probabilities`` (serving_default/predict), the score of class "1"
(classification) or the value (regression). A server error is printed and exits with 1.
The work is in `tf_serving.rows`.
"""

from __future__ import annotations

import sys

from absl import app, flags

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from tf_serving.rows import SIGNATURES, run  # noqa: E402

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    flags.DEFINE_string("server", "localhost:8500", "gRPC address of the server.", flag_values=fv)
    flags.DEFINE_string(
        "rest", None, "REST base URL (http://localhost:8501); overrides --server.", flag_values=fv
    )
    flags.DEFINE_string("model_name", "census", "Served model name.", flag_values=fv)
    flags.DEFINE_enum(
        "signature", "serving_default", list(SIGNATURES), "Signature to call.", flag_values=fv
    )
    flags.DEFINE_string("input", None, "rows.csv or rows.json.", flag_values=fv)
    flags.DEFINE_string(
        "feature_spec",
        None,
        "Feature spec preset or JSON file: types the columns, and allows headerless CSV in "
        "the spec's layout.",
        flag_values=fv,
    )
    flags.DEFINE_integer("version", None, "Model version (default: the latest).", flag_values=fv)
    flags.DEFINE_string(
        "label", None, "Model version label (instead of --version).", flag_values=fv
    )
    flags.DEFINE_float("timeout", 10.0, "Seconds per request.", flag_values=fv)
    flags.DEFINE_integer("retries", 3, "Retries while the server is unavailable.", flag_values=fv)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS.input:
        raise app.UsageError("--input is required")
    sys.exit(
        run(
            input_path=FLAGS.input,
            server=FLAGS.server,
            rest=FLAGS.rest,
            model_name=FLAGS.model_name,
            signature=FLAGS.signature,
            feature_spec=FLAGS.feature_spec,
            version=FLAGS.version,
            label=FLAGS.label,
            timeout=FLAGS.timeout,
            retries=FLAGS.retries,
        )
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
