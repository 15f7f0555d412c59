"""Turns a GroupLens MovieLens directory into Wide & Deep train/test files.

    python scripts/prepare_movielens.py --data_dir=ml-latest-small --out_dir=data/movielens
    python scripts/train.py --dataset=files --feature_spec=movielens \
        --train_files=data/movielens/train.csv --eval_files=data/movielens/test.csv

``--data_dir`` holds ratings.csv and movies.csv (the CSV layout of ml-latest-small, ml-25m,
...; download it yourself: its license forbids redistribution). Each user's last 20% of
ratings by time is the test split; see `wdl_tf.datasets.movielens` for the exact rules.
"""

import sys

from absl import app, flags

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

FLAGS = flags.FLAGS

flags.DEFINE_string(
    "data_dir", None, "GroupLens MovieLens directory (ratings.csv, movies.csv).", required=True
)
flags.DEFINE_string("out_dir", None, "Where train.csv and test.csv are written.", required=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from wdl_tf.datasets import movielens

    try:
        train, test = movielens.prepare(FLAGS.data_dir, FLAGS.out_dir)
    except (OSError, ValueError) as e:  # a missing path or a malformed line, named
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    for path in (train, test):
        print(f"{path}: {movielens.count_rows(path)} rows")
    print(
        "train with: python scripts/train.py --dataset=files --feature_spec=movielens "
        f"--train_files={train} --eval_files={test}"
    )


if __name__ == "__main__":
    app.run(main)
