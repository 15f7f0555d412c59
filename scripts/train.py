"""Trains a Wide & Deep model, evaluates it and exports a servable SavedModel.

    python scripts/train.py                                  # census, the defaults
    python scripts/train.py --model_type=wide                # the wide-only baseline
    python scripts/train.py --dataset=files --feature_spec=my_spec.json \
        --train_files='data/train-*.csv' --eval_files=data/test.csv

Flags become one validated `TrainConfig`; all the work is in `wdl_tf.train_lib`.
"""

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from wdl_tf import cli  # noqa: E402

if __name__ == "__main__":
    cli.run_train()
