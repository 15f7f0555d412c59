"""Evaluates a trained model offline: AUC, log loss, calibration, and per-user ranking metrics.

    python scripts/evaluate.py --model_dir=models/census_train            # its own eval data
    python scripts/evaluate.py --saved_model=models/census/3 --eval_files=data/test.csv
    python scripts/evaluate.py --model_dir=models/m --user_feature=user_id --k=20 \
        --output=eval/metrics.json

Give exactly one of --model_dir (rebuilt from its config and latest checkpoint) or
--saved_model (scored through its ``serving_default`` signature). With --user_feature, the
examples sharing that feature's value form one user's candidate list, and GAUC and
NDCG/HitRate/MAP@k are reported under ``ranking``. The metrics JSON is printed and written
(atomically) to --output. A bad flag value exits with status 2 and a message naming it.

All the work is in `wdl_tf.evaluate_lib`.
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


def define_flags(fv: flags.FlagValues = FLAGS) -> None:
    flags.DEFINE_string("model_dir", None, "A training run's model dir.", flag_values=fv)
    flags.DEFINE_string(
        "saved_model", None, "An exported SavedModel (<export_base>/<version>).", flag_values=fv
    )
    flags.DEFINE_string(
        "eval_files",
        "",
        "Comma-separated evaluation files/globs (default: the model dir's evaluation data; "
        "required with --saved_model).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "feature_spec",
        "",
        "Feature spec preset or JSON file that reads --eval_files (default: the model dir's "
        "feature_spec.json or the SavedModel's assets.extra/feature_spec.json).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "user_feature",
        None,
        "Feature holding the user id: adds GAUC and NDCG/HitRate/MAP@k per user.",
        flag_values=fv,
    )
    flags.DEFINE_integer("k", 10, "Cut-off of NDCG/HitRate/MAP.", flag_values=fv)
    flags.DEFINE_integer("batch_size", 2048, "Rows per prediction batch.", flag_values=fv)
    flags.DEFINE_string(
        "output", "metrics.json", "Where to write the metrics JSON.", flag_values=fv
    )


def _check_source(model_dir: str | None, saved_model: str | None) -> str | None:
    """The error message for a bad --model_dir/--saved_model pair, or None."""
    if bool(model_dir) == bool(saved_model):
        return (
            f"give exactly one of --model_dir and --saved_model (got "
            f"{'both' if model_dir else 'neither'}: model_dir={model_dir!r}, "
            f"saved_model={saved_model!r})"
        )
    if model_dir and not os.path.isdir(model_dir):
        return f"model_dir: {model_dir!r} does not exist or is not a directory"
    if saved_model and not os.path.isfile(os.path.join(saved_model, "saved_model.pb")):
        return f"saved_model: {saved_model!r} is not a SavedModel directory (no saved_model.pb)"
    return None


def main(argv) -> None:
    if len(argv) > 1:
        print(f"error: unexpected arguments: {argv[1:]}", file=sys.stderr)
        sys.exit(2)
    # The checks that need no TensorFlow first, so a mistyped command fails at once
    # (evaluate_lib.evaluate checks them too, for library callers).
    error = _check_source(FLAGS.model_dir, FLAGS.saved_model)
    if error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    from wdl_tf import evaluate_lib  # imports TensorFlow

    try:
        result = evaluate_lib.evaluate(
            model_dir=FLAGS.model_dir,
            saved_model=FLAGS.saved_model,
            eval_files=FLAGS.eval_files,
            feature_spec=FLAGS.feature_spec,
            user_feature=FLAGS.user_feature,
            k=FLAGS.k,
            batch_size=FLAGS.batch_size,
        )
        evaluate_lib.write_json_atomic(FLAGS.output, result)
    except (ValueError, OSError) as e:  # also FeatureSpecError and DataError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    define_flags()
    logging.set_verbosity(logging.WARNING)
    app.run(main)
