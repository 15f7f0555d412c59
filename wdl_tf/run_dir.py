"""The model dir of a training run: its layout, and loading what a run left there.

Training writes a model dir; evaluation, warm start, importance, the report and continuous
training read it. This module is the one place that names its files and reads them back
(the checkpoints' format, saving and restoring are `wdl_tf.checkpoints`')::

    <model_dir>/
      config.json            the TrainConfig of the run (written atomically)
      feature_spec.json      the feature spec it read the data with
      preprocessing.json     vocabularies and quantiles (+ vocabularies/ for large ones)
      checkpoints/ckpt-N     model and optimizer state, the latest few (resume)
      best/ckpt-E            the kept epoch's weights when early stopping ran
      best_epoch.json        which epoch was kept and the validation history
      metrics.json           the final evaluation

`load_for_inference` rebuilds the model with the weights the run kept and no optimizer:
what evaluation and importance need, without importing training.
"""

from __future__ import annotations

import json
import os
from typing import Any

import keras

from wdl_tf import checkpoints
from wdl_tf import features as fs
from wdl_tf import model as model_lib
from wdl_tf import preprocessing as pp

CONFIG_FILE = "config.json"
SPEC_FILE = "feature_spec.json"
CHECKPOINTS_DIR = "checkpoints"
BEST_DIR = "best"
BEST_FILE = "best_epoch.json"
METRICS_FILE = "metrics.json"


def config_path(model_dir: str) -> str:
    return os.path.join(model_dir, CONFIG_FILE)


def spec_path(model_dir: str) -> str:
    return os.path.join(model_dir, SPEC_FILE)


def checkpoints_dir(model_dir: str) -> str:
    return os.path.join(model_dir, CHECKPOINTS_DIR)


def best_dir(model_dir: str) -> str:
    return os.path.join(model_dir, BEST_DIR)


def best_file(model_dir: str) -> str:
    return os.path.join(model_dir, BEST_FILE)


def best_checkpoint(model_dir: str, epoch: int) -> str:
    """The prefix of the kept epoch's weights (``best/ckpt-<epoch>``)."""
    return os.path.join(model_dir, BEST_DIR, f"ckpt-{epoch}")


def metrics_path(model_dir: str) -> str:
    return os.path.join(model_dir, METRICS_FILE)


def is_run(path: str) -> bool:
    """Whether ``path`` is a training run's model dir (it has a config.json)."""
    return os.path.isfile(config_path(path))


def load_config_dict(model_dir: str) -> dict[str, Any]:
    """The run's config.json as a dict; a ValueError naming the dir when there is none."""
    path = config_path(model_dir)
    if not os.path.isfile(path):
        raise ValueError(f"model_dir: {model_dir!r} has no {CONFIG_FILE} (not a training run)")
    with open(path) as f:
        return json.load(f)


def load_spec(model_dir: str) -> fs.FeatureSpec:
    return fs.load(spec_path(model_dir))


def load_state(model_dir: str) -> pp.PreprocessingState:
    if not pp.PreprocessingState.exists(model_dir):
        raise ValueError(f"model_dir: {model_dir!r} has no {pp.PreprocessingState.FILENAME}")
    return pp.PreprocessingState.load(model_dir)


def latest_checkpoint(model_dir: str) -> str | None:
    """The newest ``checkpoints/ckpt-N`` prefix, or None."""
    return checkpoints.latest(checkpoints_dir(model_dir))


def kept_epoch(model_dir: str) -> int | None:
    """The epoch early stopping kept, or None when the run kept its last one."""
    path = best_file(model_dir)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        best = json.load(f).get("best_epoch")
    return None if best is None else int(best)


def restore_kept_weights(model: keras.Model, model_dir: str) -> int | None:
    """Loads the kept (best validation) epoch's weights into ``model``; returns the epoch,
    or None when the run kept its last epoch (the latest checkpoint then holds the model)."""
    best = kept_epoch(model_dir)
    if best is not None:
        checkpoints.restore_weights(model, best_checkpoint(model_dir, best))
    return best


def load_for_inference(
    model_dir: str, model_config: model_lib.ModelConfig
) -> tuple[fs.FeatureSpec, pp.FeaturePreprocessor, keras.Model]:
    """(spec, preprocessor, model) of a run with the weights it kept, and no optimizer.

    The weights come from ``best/ckpt-<kept epoch>`` when early stopping kept one, else
    from the latest checkpoint (whose optimizer slots are left unread). Every model
    variable must be found: a checkpoint of another model is an error, not a silent
    partial load.
    """
    spec = load_spec(model_dir)
    state = load_state(model_dir)
    preprocessor = pp.FeaturePreprocessor(spec, state, name="preprocessor")
    model = model_lib.build_model(preprocessor.encoded_features, model_config)
    if restore_kept_weights(model, model_dir) is None:
        checkpoint = latest_checkpoint(model_dir)
        if checkpoint is None:
            raise ValueError(f"model_dir: {model_dir!r} has no checkpoint under {CHECKPOINTS_DIR}/")
        checkpoints.restore_weights(model, checkpoint, partial=True)
    return spec, preprocessor, model
