"""Trains wide-only, deep-only and Wide & Deep with the same flags; prints one table.

    python scripts/compare_models.py --model_dir=/tmp/compare --verbose=0

Takes every flag of scripts/train.py (``--model_type`` and ``--export_base`` are ignored).
"""

import json
import os

from absl import app, logging

from wdl_tf import startup

startup.skip_keras_extras()  # before anything loads TensorFlow

from wdl_tf import cli  # noqa: E402


def main(argv):
    del argv
    from wdl_tf import train_lib

    config = cli.config_from_flags()
    results = train_lib.compare_model_types(config)
    print(train_lib.format_comparison(results))
    os.makedirs(config.model_dir, exist_ok=True)
    with open(os.path.join(config.model_dir, "comparison.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    cli.define_train_flags()
    logging.set_verbosity(logging.WARNING)
    app.run(main)
