"""Converts CSV files to sharded, optionally gzipped TFRecord files of tf.Examples.

    python scripts/convert_to_tfrecord.py --feature_spec=criteo \
        --input='data/day_*.tsv.gz' --output_prefix=data/tfrecord/train --num_shards=64

Rows are parsed and checked by the feature spec exactly as training reads CSV, and the shards
read back (``--train_files='data/tfrecord/train-*'``) to the same values. All the work is in
`wdl_tf.tfrecord`.
"""

import sys

from absl import app, flags

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

FLAGS = flags.FLAGS

flags.DEFINE_string("feature_spec", None, "Feature spec preset name or JSON file.", required=True)
flags.DEFINE_string("input", None, "Comma-separated CSV files/globs.", required=True)
flags.DEFINE_string(
    "output_prefix", None, "Shards are <prefix>-00000-of-0000N.tfrecord[.gz].", required=True
)
flags.DEFINE_integer("num_shards", 8, "Number of output shards.", lower_bound=1)
flags.DEFINE_boolean("compress", True, "GZIP the shards (.tfrecord.gz).")
flags.DEFINE_boolean("skip_bad_rows", False, "Drop (and count) malformed rows instead of failing.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from wdl_tf import features, tfrecord

    try:
        spec = features.load(FLAGS.feature_spec)
        result = tfrecord.convert(
            spec,
            FLAGS.input,
            FLAGS.output_prefix,
            num_shards=FLAGS.num_shards,
            compress=FLAGS.compress,
            skip_bad_rows=FLAGS.skip_bad_rows,
        )
    except ValueError as e:  # also FeatureSpecError and DataError: bad input, named
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for path in result.files:
        print(path)
    print(
        f"wrote {result.rows} rows to {len(result.files)} shards in {result.seconds:.1f}s "
        f"({result.rows_per_second:.0f} rows/s)"
    )
    if result.bad_rows:
        print(f"skipped malformed rows: {result.bad_rows}")


if __name__ == "__main__":
    app.run(main)
