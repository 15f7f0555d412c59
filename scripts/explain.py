"""Explains predictions of an exported model row by row: the wide part's exact contributions.

    python scripts/explain.py --saved_model=models/census/3 --input=rows.csv
    python scripts/explain.py --saved_model=models/apps/1 --input=rows.tfrecord --top=5 \
        --output=explained.json

For each row it prints the probability, the logit split into bias + wide + deep, and every wide
feature and cross ranked by |contribution| with the row's value(s). The numbers come from the
SavedModel's ``explain`` signature (what a TF Serving client gets with ``"signature_name":
"explain"``). ``--input`` is CSV in the spec's layout or with a header naming the columns (the
label may be left out), or TFRecord of tf.Examples. A deep-only model has no wide part: that is
reported (exit status 2), not explained with zeros.

All the work is in `wdl_tf.explain`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

FLAGS = flags.FLAGS
flags.DEFINE_string("saved_model", None, "An exported SavedModel (<export_base>/<version>).")
flags.DEFINE_string("input", None, "Rows to explain: CSV or TFRecord files/globs.")
flags.DEFINE_string(
    "feature_spec", "", "Feature spec of --input (default: the export's assets.extra one)."
)
flags.DEFINE_integer("max_rows", 10, "Explain at most this many rows.")
flags.DEFINE_integer("top", None, "Print only the largest contributions of each row.")
flags.DEFINE_string("output", "", "Also write the explanations as JSON here.")


def main(argv) -> None:
    if len(argv) > 1:
        print(f"error: unexpected arguments: {argv[1:]}", file=sys.stderr)
        sys.exit(2)
    if not FLAGS.saved_model or not FLAGS.input:
        print("error: --saved_model and --input are required", file=sys.stderr)
        sys.exit(2)
    if not os.path.isfile(os.path.join(FLAGS.saved_model, "saved_model.pb")):
        print(
            f"error: saved_model: {FLAGS.saved_model!r} is not a SavedModel directory "
            "(no saved_model.pb)",
            file=sys.stderr,
        )
        sys.exit(2)
    if FLAGS.max_rows < 1:
        print(f"error: max_rows: must be >= 1, got {FLAGS.max_rows}", file=sys.stderr)
        sys.exit(2)
    from wdl_tf import evaluate_lib, explain, samples
    from wdl_tf import features as fs

    try:
        spec_path = FLAGS.feature_spec or evaluate_lib.saved_model_spec(FLAGS.saved_model)
        spec = fs.load(spec_path)
        sample = samples.read_rows(spec, FLAGS.input, FLAGS.max_rows)
        explanations = explain.explain_sample(FLAGS.saved_model, sample)
        if FLAGS.output:
            evaluate_lib.write_json_atomic(
                FLAGS.output, [dataclasses.asdict(e) for e in explanations]
            )
    except (ValueError, OSError) as e:  # NoWidePartError, SampleError, FeatureSpecError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(explain.format_explanations(explanations, FLAGS.top))
    if FLAGS.output:
        print(json.dumps({"written": FLAGS.output}))


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main)
