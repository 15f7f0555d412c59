"""Checkpoints: the one module that saves and restores a model's variables.

Everything that writes or reads a checkpoint goes through here: training's epoch and step
checkpoints and its resume (`train_lib`), the kept epoch's weights (`train_lib.BestEpoch`,
`run_dir.restore_kept_weights`), loading for inference (`run_dir.load_for_inference`),
warm start's reads by variable path (`warm_start`) and continuous training's span
checkpoints (`continuous`). Where the files live is `wdl_tf.run_dir`'s business; this
module knows their format:

* variables are keyed by their Keras path (`make_checkpoint`), the model's under
  ``model/`` and every optimizer variable under ``optimizer/``, so a MultiOptimizer's FTRL
  and AdaGrad slots are all saved and a checkpoint can be read by path (`variable_key`);
* a full checkpoint also holds the epoch counter; a weights-only one (the kept epoch,
  `weights_checkpoint`) only ``model/``;
* a step checkpoint ``ckpt-<N>`` has ``ckpt-<N>.position.json`` beside it (`POSITION_SUFFIX`:
  the epoch under way, its finished batches and the global step).

It imports nothing from `wdl_tf` but `atomic`, so the layout owner (`run_dir`) and every
reader can use it without cycles.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from wdl_tf import atomic

# Beside ``ckpt-<N>`` in step-checkpoint runs: {"epoch", "step_in_epoch", "global_step"}.
POSITION_SUFFIX = ".position.json"
MODEL, OPTIMIZER = "model", "optimizer"


def make_checkpoint(model: keras.Model, **extra) -> tf.train.Checkpoint:
    """A checkpoint of the model's variables and all its optimizers' state, keyed by path.

    ``tf.train.Checkpoint(model=..., optimizer=...)`` is not enough with Keras 3: it does not
    track the sub-optimizers of a MultiOptimizer, so FTRL and AdaGrad slots would silently
    be left out and start from scratch on resume. Keying every variable by its Keras path
    (``wide/education``, ``wide_ftrl/wide_education_accumulator``) saves all of them and
    keeps checkpoints readable by path (for warm start and inspection).

    Args:
      model: a model; when compiled, its optimizer must be built.
      extra: more trackables to save (e.g. an epoch counter variable).
    """

    def by_path(variables) -> dict[str, tf.Variable]:
        out = {}
        for v in variables:
            key = v.path.replace("/", ".")
            if key in out:
                raise ValueError(f"two variables share the path {v.path!r}")
            out[key] = v.value if hasattr(v, "value") else v
        return out

    state = {MODEL: by_path(model.variables)}
    if getattr(model, "optimizer", None) is not None:  # an uncompiled model has none
        state[OPTIMIZER] = by_path(model.optimizer.variables)
    return tf.train.Checkpoint(**state, **extra)


def weights_checkpoint(model: keras.Model) -> tf.train.Checkpoint:
    """The model's variables only, under the keys of `make_checkpoint`."""
    return tf.train.Checkpoint(**{MODEL: make_checkpoint(model).model})


def variable_key(group: str, path: str) -> str:
    """The key of variable ``path`` (a Keras path) of ``group`` (`MODEL`, `OPTIMIZER`) in a
    checkpoint file: `make_checkpoint` writes "/" as "."; the format then escapes "." as
    ".."."""
    return f"{group}/{path.replace('/', '.').replace('.', '..')}/.ATTRIBUTES/VARIABLE_VALUE"


def latest(directory: str) -> str | None:
    """The newest ``ckpt-N`` prefix in ``directory``, or None."""
    return tf.train.latest_checkpoint(directory)


def exists(prefix: str) -> bool:
    """Whether the checkpoint ``prefix`` was written completely (its index exists)."""
    return tf.io.gfile.exists(prefix + ".index")


def reader(prefix: str) -> tf.train.CheckpointReader:
    """Reads the tensors of checkpoint ``prefix`` by key (`variable_key`)."""
    return tf.train.load_checkpoint(prefix)


def restore_weights(model: keras.Model, prefix: str, *, partial: bool = False) -> None:
    """Loads the model variables of checkpoint ``prefix`` into ``model``.

    Every model variable must be found (a checkpoint of another model is an error, not a
    silent partial load). ``partial``: the checkpoint may hold more (the optimizer slots
    and the epoch of a full checkpoint, left unread); else it must hold nothing else.
    """
    status = weights_checkpoint(model).restore(prefix)
    if partial:
        status.expect_partial().assert_existing_objects_matched()
    else:
        status.assert_consumed()


def weights_manager(
    model: keras.Model, directory: str, max_to_keep: int
) -> tf.train.CheckpointManager:
    """Saves weights-only checkpoints of ``model`` (`weights_checkpoint`) as
    ``<directory>/ckpt-<N>``."""
    return tf.train.CheckpointManager(weights_checkpoint(model), directory, max_to_keep)


def save(model: keras.Model, directory: str, max_to_keep: int = 1, **extra) -> str:
    """Saves a full checkpoint (`make_checkpoint`) under ``directory``; returns its prefix."""
    manager = tf.train.CheckpointManager(make_checkpoint(model, **extra), directory, max_to_keep)
    return manager.save()


def restore_latest(
    model: keras.Model, epoch: tf.Variable, directory: str
) -> tuple[str | None, dict]:
    """Restores the latest checkpoint of ``directory`` (model, optimizer slots, epoch);
    returns it and its position (``step_in_epoch``, ``global_step``; 0 for an epoch-only
    checkpoint). A position file, when there is one, says which epoch is under way."""
    position = {"step_in_epoch": 0, "global_step": 0}
    prefix = latest(directory)
    if not prefix:
        return None, position
    make_checkpoint(model, epoch=epoch).restore(prefix).assert_consumed()
    if os.path.exists(prefix + POSITION_SUFFIX):
        with open(prefix + POSITION_SUFFIX) as f:
            saved = json.load(f)
        position = {k: int(saved[k]) for k in position}
        epoch.assign(int(saved["epoch"]))
    return prefix, position


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer slots and the finished epoch count after every epoch.

    With ``every_steps``, it also saves every that many global steps, as ``ckpt-<global
    step>``, and writes beside it ``ckpt-<global step>.position.json``: the epoch under way,
    how many of its batches are done and the global step, so a killed run resumes mid-epoch.
    (The position stays out of the TensorFlow checkpoint, so readers that restore weights,
    optimizer slots and epoch only still match it exactly.) ``first_batch``: batches of the
    current epoch trained before this fit call (a resumed epoch).
    """

    def __init__(
        self,
        manager: tf.train.CheckpointManager,
        epoch: tf.Variable,
        every_steps: int = 0,
        global_step: int = 0,
    ):
        super().__init__()
        self.manager = manager
        self.epoch = epoch
        self.every_steps = every_steps
        self.steps_done = global_step
        self.first_batch = 0
        self._current_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if not self.every_steps:
            return
        self.steps_done += 1
        if self.steps_done % self.every_steps == 0:
            self._save(self._current_epoch, self.first_batch + batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        self.first_batch = 0
        if self.every_steps:
            self._save(epoch + 1, 0)
        else:
            self.epoch.assign(epoch + 1)
            self.manager.save(checkpoint_number=epoch + 1)

    def _save(self, epoch: int, step_in_epoch: int) -> None:
        self.epoch.assign(epoch)
        prefix = os.path.join(self.manager.directory, f"ckpt-{self.steps_done}")
        position = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": self.steps_done}
        os.makedirs(self.manager.directory, exist_ok=True)
        # Written before the checkpoint: a kill in between leaves either no ckpt-N (the
        # previous one stays the latest) or, at an epoch end just after a step save, the
        # same weights under the new position.
        atomic.write_json(prefix + POSITION_SUFFIX, position, indent=None)
        self.manager.save(checkpoint_number=self.steps_done)
        kept = {os.path.basename(p) + POSITION_SUFFIX for p in self.manager.checkpoints}
        for name in os.listdir(self.manager.directory):
            if name.endswith(POSITION_SUFFIX) and name not in kept:
                os.remove(os.path.join(self.manager.directory, name))
