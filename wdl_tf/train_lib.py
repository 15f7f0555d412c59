"""train_and_evaluate(config): adapt, fit, checkpoint/resume, evaluate, export.

What a run writes to ``model_dir`` (DESIGN.md §3.3, "save what you ran"):

* ``config.json``: the resolved `TrainConfig`;
* ``feature_spec.json``, ``preprocessing.json`` and ``vocabularies/``: the schema and what
  adapt learned (a resumed run reuses them, so ids never shift under trained weights);
* ``checkpoints/``: model weights, both optimizers' slots and the epoch, after every epoch;
* ``logs/``: TensorBoard;
* ``metrics.json``: exact AUC, log loss, accuracy, mean prediction and label rate.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings

import keras
import numpy as np
import tensorflow as tf

from wdl_tf import datasets, export_lib, input_pipeline, metrics, warm_start
from wdl_tf import features as fs
from wdl_tf import model as model_lib
from wdl_tf import preprocessing as pp
from wdl_tf.config import TrainConfig

log = logging.getLogger("wdl_tf")
# Keras warns at the end of the first epoch of any dataset of unknown length; ours stream.
warnings.filterwarnings("ignore", message="Your input ran out of data")


@dataclasses.dataclass
class TrainResult:
    metrics: dict[str, float]
    export_path: str | None
    bad_rows: int
    initial_epoch: int


class _EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer slots and the finished epoch count after every epoch."""

    def __init__(self, manager: tf.train.CheckpointManager, epoch: tf.Variable):
        super().__init__()
        self.manager = manager
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)
        self.manager.save(checkpoint_number=epoch + 1)


def _resolve_data(config: TrainConfig) -> tuple[fs.FeatureSpec, list[str], list[str]]:
    """The spec and the train/eval files; every file must exist (checked before training)."""
    data = config.data
    ds = datasets.get_dataset(
        data.dataset, config.model_dir, synthetic_rows=data.synthetic_rows, seed=config.seed
    )
    spec = fs.load(data.feature_spec or ds.feature_spec)
    train = input_pipeline.resolve_files(data.train_files or list(ds.train_files))
    if data.validation_fraction > 0:
        eval_files = train
    else:
        if not (data.eval_files or ds.eval_files):
            raise ValueError("eval_files: no evaluation files given (or set validation_fraction)")
        eval_files = input_pipeline.resolve_files(data.eval_files or list(ds.eval_files))
    return spec, train, eval_files


def _read_options(config: TrainConfig, training: bool) -> input_pipeline.ReadOptions:
    data = config.data
    split = None
    if data.validation_fraction > 0:
        split = "train" if training else "validation"
    return input_pipeline.ReadOptions(
        batch_size=data.batch_size if training else data.eval_batch_size,
        shuffle=training,
        shuffle_buffer=data.shuffle_buffer,
        seed=config.seed,
        skip_bad_rows=data.skip_bad_rows,
        split=split,
        validation_fraction=data.validation_fraction,
    )


def load_or_adapt(
    config: TrainConfig, spec: fs.FeatureSpec, train_files: list[str]
) -> pp.PreprocessingState:
    """Reuses model_dir's preprocessing state, or learns it in one bounded pass and saves it."""
    if pp.PreprocessingState.exists(config.model_dir):
        saved = fs.load(os.path.join(config.model_dir, "feature_spec.json"))
        if saved != spec:
            raise ValueError(
                f"model_dir {config.model_dir!r} was trained with another feature spec "
                "(its feature_spec.json differs); use a new model_dir"
            )
        return pp.PreprocessingState.load(config.model_dir)
    opts = dataclasses.replace(
        _read_options(config, training=True),
        shuffle=False,
        batch_size=4096,
        max_rows=config.data.adapt_max_rows,
    )
    raw = input_pipeline.read_raw(spec, train_files, opts)
    try:
        state = pp.adapt(spec, (x for x, _ in raw), max_rows=config.data.adapt_max_rows)
    except tf.errors.InvalidArgumentError as e:
        input_pipeline.raise_data_error(e)
    spec.save(os.path.join(config.model_dir, "feature_spec.json"))
    state.save(config.model_dir)
    return state


@tf.function(reduce_retracing=True)
def _predict_step(model, x):
    return model(x, training=False)


def evaluate(model, dataset: tf.data.Dataset, steps: int | None = None) -> dict[str, float]:
    """Exact metrics (`wdl_tf.metrics`) over the whole dataset (or its first ``steps``)."""
    labels, scores = [], []
    try:
        for i, (x, y) in enumerate(dataset):
            if steps is not None and i >= steps:
                break
            scores.append(_predict_step(model, x).numpy().reshape(-1))
            labels.append(y.numpy().reshape(-1))
    except tf.errors.InvalidArgumentError as e:
        input_pipeline.raise_data_error(e)
    if not labels:
        raise ValueError("evaluation data has no rows")
    return metrics.binary_metrics(np.concatenate(labels), np.concatenate(scores))


def build_for_training(config: TrainConfig, state, spec) -> tuple:
    """Preprocessor, compiled model (optimizer built, so checkpoints can restore its slots)."""
    keras.utils.set_random_seed(config.seed)
    preprocessor = pp.FeaturePreprocessor(spec, state, name="preprocessor")
    model = model_lib.build_model(preprocessor.encoded_features, config.model)
    model_lib.compile_model(model, config.model, _decay_steps(config, state))
    model.optimizer.build(model.trainable_variables)
    return preprocessor, model


def _decay_steps(config: TrainConfig, state: pp.PreprocessingState) -> int | None:
    """Total training steps, for a learning-rate decay (None without one)."""
    if config.model.lr_decay == "none":
        return None
    if config.steps_per_epoch:
        return config.epochs * config.steps_per_epoch
    if state.rows_seen >= config.data.adapt_max_rows:
        raise ValueError(
            "lr_decay needs the run's length: the training data has more rows than "
            f"adapt_max_rows={config.data.adapt_max_rows}, so set steps_per_epoch"
        )
    return config.epochs * -(-state.rows_seen // config.data.batch_size)


def train_and_evaluate(config: TrainConfig) -> TrainResult:
    """Runs (or resumes) training, evaluates, writes metrics.json and exports a SavedModel."""
    config.validate()
    os.makedirs(config.model_dir, exist_ok=True)
    spec, train_files, eval_files = _resolve_data(config)
    state = load_or_adapt(config, spec, train_files)
    with open(os.path.join(config.model_dir, "config.json"), "w") as f:
        f.write(config.to_json() + "\n")

    preprocessor, model = build_for_training(config, state, spec)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    checkpoint = model_lib.make_checkpoint(model, epoch=epoch)
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(config.model_dir, "checkpoints"), max_to_keep=3
    )
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint).assert_consumed()
        log.info("resumed from %s (epoch %d)", manager.latest_checkpoint, int(epoch.numpy()))
    elif config.warm_start_from:
        report = warm_start.warm_start(
            model, spec, state, config.warm_start_from, config.warm_start_optimizer
        )
        with open(os.path.join(config.model_dir, "warm_start.json"), "w") as f:
            json.dump(dataclasses.asdict(report), f, indent=2)
    initial_epoch = int(epoch.numpy())

    counter = input_pipeline.BadRowCounter()
    train_ds = input_pipeline.make_dataset(
        spec, train_files, _read_options(config, training=True), preprocessor, counter
    )
    if config.steps_per_epoch:
        train_ds = train_ds.repeat()
    eval_ds = input_pipeline.make_dataset(
        spec, eval_files, _read_options(config, training=False), preprocessor, counter
    )
    callbacks = [
        _EpochCheckpoint(manager, epoch),
        keras.callbacks.TensorBoard(os.path.join(config.model_dir, "logs"), write_graph=False),
    ]
    if initial_epoch < config.epochs:
        try:
            model.fit(
                train_ds,
                epochs=config.epochs,
                initial_epoch=initial_epoch,
                steps_per_epoch=config.steps_per_epoch,
                callbacks=callbacks,
                verbose=config.verbose,
                shuffle=False,  # the tf.data pipeline shuffles
            )
        except tf.errors.InvalidArgumentError as e:
            input_pipeline.raise_data_error(e)

    results = evaluate(model, eval_ds, config.eval_steps)
    results["epochs"] = config.epochs
    results["model_type"] = config.model.model_type
    results["eval_split"] = "validation" if config.data.validation_fraction else "eval_files"
    with open(os.path.join(config.model_dir, "metrics.json"), "w") as f:
        json.dump(results, f, indent=2)
    if counter.count:
        log.warning("skipped %d malformed rows (skip_bad_rows)", counter.count)

    export_path = None
    if config.export_base:
        sample_opts = dataclasses.replace(
            _read_options(config, training=False), batch_size=64, max_rows=64, skip_bad_rows=True
        )
        sample_raw, _ = next(iter(input_pipeline.read_raw(spec, eval_files, sample_opts)))
        export_path = export_lib.export_model(
            spec, preprocessor, model, config.export_base, sample_raw, results, config.export
        )
    return TrainResult(results, export_path, counter.count, initial_epoch)


def compare_model_types(
    config: TrainConfig, model_types: tuple[str, ...] = model_lib.MODEL_TYPES
) -> dict[str, dict[str, float]]:
    """Trains each model type with the same data, budget and seed (the paper's Table 1).

    Each run gets its own ``<model_dir>/<model_type>`` and no export.
    """
    results = {}
    for model_type in model_types:
        run = dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, model_type=model_type),
            model_dir=os.path.join(config.model_dir, model_type),
            export_base="",
        )
        results[model_type] = train_and_evaluate(run).metrics
    return results


def format_comparison(results: dict[str, dict[str, float]]) -> str:
    """A Markdown table of AUC, log loss and accuracy per model type."""
    lines = ["| model | AUC | log loss | accuracy |", "|---|---|---|---|"]
    for model_type, m in results.items():
        lines.append(
            f"| {model_type} | {m['auc']:.4f} | {m['log_loss']:.4f} | {m['accuracy']:.4f} |"
        )
    return "\n".join(lines)
