"""Writes one self-contained HTML report of a trained model, or of several side by side.

    python scripts/report.py --model_dir=models/census_train --output=report.html
    python scripts/report.py --model_dir=/tmp/cmp             # compare_models.py's output
    python scripts/report.py --model_dir=runs/a,runs/b --eval_files=data/test.csv

The report holds the metrics table, ROC curves (with the wide and deep parts of a Wide & Deep
model), the reliability diagram, the score distribution by label, permutation importance and the
training curves from the TensorBoard logs; the charts are PNGs embedded in the HTML. Needs the
``report`` extra (matplotlib). A bad flag exits with status 2 and names it.

All the work is in `wdl_tf.report`.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

FLAGS = flags.FLAGS
flags.DEFINE_list("model_dir", None, "Model dirs (or a compare_models.py dir), comma-separated.")
flags.DEFINE_string("eval_files", "", "Evaluation files/globs (default: each run's own).")
flags.DEFINE_integer("max_rows", 20_000, "Evaluation rows scored per run.")
flags.DEFINE_integer("importance_repeats", 3, "Shuffles per feature (0: no importance).")
flags.DEFINE_string("title", "wdl_tf model report", "Title of the report.")
flags.DEFINE_string("output", "report.html", "Where to write the HTML.")


def main(argv) -> None:
    if len(argv) > 1:
        print(f"error: unexpected arguments: {argv[1:]}", file=sys.stderr)
        sys.exit(2)
    if not FLAGS.model_dir:
        print("error: --model_dir is required", file=sys.stderr)
        sys.exit(2)
    from wdl_tf import report

    try:
        document = report.build_report(
            FLAGS.model_dir,
            eval_files=FLAGS.eval_files,
            max_rows=FLAGS.max_rows,
            importance_repeats=FLAGS.importance_repeats,
            title=FLAGS.title,
        )
        report.write_report(FLAGS.output, document)
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {FLAGS.output} ({len(document) // 1024} KiB)")


if __name__ == "__main__":
    logging.set_verbosity(logging.WARNING)
    app.run(main)
