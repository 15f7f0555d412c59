"""train_and_evaluate(config): adapt, fit, checkpoint/resume, evaluate, export.

What a run writes to ``model_dir`` (docs/design.md §3.3, "save what you ran"):

* ``config.json``: the resolved `TrainConfig`;
* ``feature_spec.json``, ``preprocessing.json`` and ``vocabularies/``: the schema and what
  adapt learned (a resumed run reuses them, so ids never shift under trained weights);
* ``checkpoints/``: model weights, both optimizers' slots and the epoch, after every epoch
  (and every ``checkpoint_every_steps`` steps; then ``ckpt-<N>.position.json`` beside each
  says where in the epoch it was taken);
* ``logs/``: TensorBoard;
* ``validation_split.npz``: the per-user time thresholds of the validation split, when the
  spec names a time column (`input_pipeline.TimeSplit`);
* ``best_epoch.json`` and ``best/ckpt-<epoch>``: with a validation split and early stopping,
  every epoch's validation AUC and log loss and the kept (best) epoch's weights: the final
  metrics, the export and `evaluate_lib` use that epoch, not the last;
* ``metrics.json``: exact AUC, log loss, accuracy, mean prediction and label rate on the
  eval files (else the validation split), ``best_epoch`` and its ``validation_auc`` /
  ``validation_log_loss``, and for a joint model which part dominates
  (`metrics.logit_parts`);
* ``warm_start.json``: what was copied, when the run started from ``warm_start_from``.

In single-process training the dense weights end as their moving average over the last
steps (``ModelConfig.ema_momentum``, `model.WeightAverage`): the last epoch's checkpoint,
the metrics and the export all hold the averaged model.

Under a `tf.distribute` strategy (`wdl_tf.distribute`) the preprocessor, model, optimizers,
metrics and checkpoint are built in the strategy's scope and every worker trains on its shard
of the data; only the chief (worker 0) writes config.json, the preprocessing state,
metrics.json and the export. Every worker checkpoints (a save may run collective ops), the
others to a temporary directory; all of them resume from the chief's checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import shutil
import warnings

import keras
import numpy as np
import tensorflow as tf

from wdl_tf import (
    atomic,
    checkpoints,
    cluster,
    datasets,
    distribute,
    encoded_cache,
    evaluate_lib,
    export_lib,
    export_versions,
    input_pipeline,
    metrics,
    run_dir,
    skew,
    warm_start,
)
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
    # The encoded cache's directory and its size on disk (None: no cache this run).
    encoded_cache: tuple[str, int] | None = None


class ExportFailed(export_lib.ExportError):
    """Training and evaluation finished (``result``, metrics.json written) but the export
    failed; nothing was published."""

    def __init__(self, message: str, result: TrainResult):
        super().__init__(message)
        self.result = result


# The kept epoch: ``<model_dir>/best/ckpt-<epoch>`` (weights only) and best_epoch.json.
HIGHER_IS_BETTER = {"auc": True, "log_loss": False}


def choose_epoch(
    history: list[dict[str, float]], metric: str, patience: int
) -> tuple[int | None, bool]:
    """(the kept epoch, whether to stop) after the epochs of ``history``.

    ``history``: one entry per finished epoch, in order, ``{"epoch": e, metric: value}``.
    The kept epoch has the best value (the earliest of equal ones; NaN is never best);
    training stops once ``patience`` epochs in a row after it were no better. None when no
    epoch has a number yet.
    """
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    best, best_value = None, -math.inf
    for entry in history:
        value = entry[metric]
        if value == value and sign * value > best_value:  # value == value: not NaN
            best, best_value = entry["epoch"], sign * value
    if not history:
        return None, False
    since = history[-1]["epoch"] - (best if best is not None else 0)
    return best, patience > 0 and since >= patience


@contextlib.contextmanager
def _averaged_weights(average: model_lib.WeightAverage | None):
    """Swaps the weight average in for the block (what an end of training here would
    keep), then the training weights back."""
    if average is None or int(average.steps.numpy()) == 0:
        yield
        return
    current = [v.numpy() for v in average.variables]
    average.apply()
    try:
        yield
    finally:
        for v, value in zip(average.variables, current):
            v.assign(value)


class BestEpoch(keras.callbacks.Callback):
    """Early stopping with the best epoch kept (DESIGN: selection on validation only).

    After every epoch: the validation metrics of the weights an end of training would keep
    (the weight average, when on); when they are the best so far, those weights are saved
    to ``save_dir`` as ``ckpt-<epoch>``; after ``patience`` epochs without a better one,
    training stops. ``state_path`` (the chief's best_epoch.json) records the history, so a
    resumed run knows the best so far. Place it before the epoch checkpoint callback: a
    checkpointed epoch is then always in the history.
    """

    def __init__(
        self,
        validate,
        metric: str,
        patience: int,
        save_dir: str,
        state_path: str | None,
        average: model_lib.WeightAverage | None = None,
        history: list[dict] | None = None,
    ):
        super().__init__()
        self.validate = validate
        self.metric = metric
        self.patience = patience
        self.save_dir = save_dir
        self.state_path = state_path
        self.average = average
        self.history = list(history or [])
        self.manager = None

    @property
    def best_epoch(self) -> int | None:
        return choose_epoch(self.history, self.metric, self.patience)[0]

    @property
    def stopped(self) -> bool:
        return choose_epoch(self.history, self.metric, self.patience)[1]

    def best_entry(self) -> dict | None:
        best = self.best_epoch
        return next((e for e in self.history if e["epoch"] == best), None)

    def on_epoch_end(self, epoch, logs=None):
        if self.manager is None:
            self.manager = checkpoints.weights_manager(self.model, self.save_dir, max_to_keep=2)
        self.history = [e for e in self.history if e["epoch"] < epoch + 1]
        with _averaged_weights(self.average):
            m = self.validate()
            self.history.append({"epoch": epoch + 1, "auc": m["auc"], "log_loss": m["log_loss"]})
            if self.best_epoch == epoch + 1:
                self.manager.save(checkpoint_number=epoch + 1)
        self.write()
        if self.stopped:
            self.model.stop_training = True
            log.info(
                "early stopping after epoch %d: best validation %s at epoch %d",
                epoch + 1,
                self.metric,
                self.best_epoch,
            )

    def write(self) -> None:
        if self.state_path is None:
            return
        state = {
            "metric": self.metric,
            "patience": self.patience,
            "best_epoch": self.best_epoch,
            "stopped": self.stopped,
            "history": self.history,
        }
        atomic.write_json(self.state_path, state, indent=1)


def _resumed_history(model_dir: str, metric: str, completed_epochs: int) -> list[dict]:
    """The validation history of a previous run of this model dir, up to the epochs its
    checkpoint holds (a later entry was never checkpointed: that epoch is trained again);
    empty when there is none, it was for another metric, or its best weights are gone."""
    path = run_dir.best_file(model_dir)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        state = json.load(f)
    if state.get("metric") != metric:
        log.warning("best_epoch.json was for metric %r: starting a new history", state["metric"])
        return []
    history = [e for e in state["history"] if e["epoch"] <= completed_epochs]
    best = choose_epoch(history, metric, 1)[0]
    if best is not None and not checkpoints.exists(run_dir.best_checkpoint(model_dir, best)):
        log.warning("the weights of best epoch %d are missing: starting a new history", best)
        return []
    return history


def _data_files(config: TrainConfig) -> tuple[fs.FeatureSpec, list[str], list[str], str]:
    """The spec, the train files, the files of the final evaluation and which split that is:
    ``eval_files`` (the test files, when there are any) or ``validation`` (the validation
    split of the train files, when there are no test files). Every file must exist; the
    files come from `datasets.resolve`, the one resolver."""
    source = datasets.resolve(config.data, config.model_dir, config.seed)
    spec = fs.load(source.feature_spec)
    train = source.train_files()
    eval_files = source.eval_files()
    if eval_files:
        return spec, train, eval_files, "eval_files"
    if config.data.validation_fraction > 0:
        return spec, train, train, "validation"
    raise ValueError("eval_files: no evaluation files given (or set validation_fraction)")


def _resolve_data(config: TrainConfig) -> tuple[fs.FeatureSpec, list[str], list[str]]:
    """The spec and the train/eval files; every file must exist (checked before training)."""
    return _data_files(config)[:3]


def _read_options(
    config: TrainConfig, training: bool, time_split: input_pipeline.TimeSplit | None = None
) -> input_pipeline.ReadOptions:
    """Options of the train split (training) or of the validation split (not training);
    without a validation split, all rows of the files."""
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
        split_seed=config.seed,
        time_split=time_split if split else None,
    )


def _eval_options(config: TrainConfig) -> input_pipeline.ReadOptions:
    """Options of the evaluation files (the test split): every row."""
    return dataclasses.replace(_read_options(config, training=False), split=None)


def validation_split(
    config: TrainConfig, spec: fs.FeatureSpec, train_files: list[str], compute: bool = True
) -> input_pipeline.TimeSplit | None:
    """The run's time split (None: no validation split, or a random one), checked non-empty.

    With a validation fraction and a spec that names ``split.time_column``, the thresholds
    come from ``<model_dir>/validation_split.npz`` when it was made for the same columns and
    fraction (a resumed run keeps its split), else from one bounded pass over the training
    files (``adapt_max_rows`` rows), saved there. ``compute=False`` only loads (a non-chief
    worker reads the chief's).

    Raises:
      ValueError: the validation split has no row (the fraction and the files named); a
        time that is not a number (`DataError`: file, line and value named).
    """
    data = config.data
    if data.validation_fraction <= 0:
        return None
    ts = None
    if spec.split is not None:
        ts = input_pipeline.TimeSplit.load(config.model_dir)
        if ts is None or not ts.matches(spec, data.validation_fraction):
            if not compute:
                raise ValueError(f"model_dir {config.model_dir!r} has no matching time split")
            ts = input_pipeline.time_split(
                spec,
                train_files,
                data.validation_fraction,
                max_rows=data.adapt_max_rows,
                skip_bad_rows=data.skip_bad_rows,
            )
            if ts.validation_rows:
                ts.save(config.model_dir)
        empty = ts.validation_rows == 0
        how = (
            f"the latest rows by {ts.time_column!r}"
            + (f" of each {ts.user_column!r}" if ts.user_column else "")
            + f", of {ts.rows_seen} rows read"
        )
    else:
        if not compute:
            return None
        opts = _read_options(config, training=False)
        empty = not input_pipeline.first_validation_row(spec, train_files, opts)
        how = "a random share of the rows"
    if empty:
        raise ValueError(
            f"validation split is empty: validation_fraction={data.validation_fraction} "
            f"({how}) leaves no row of the training files {train_files} for validation; "
            "raise validation_fraction, or set it to 0 and give eval_files"
        )
    return ts


def load_or_adapt(
    config: TrainConfig,
    spec: fs.FeatureSpec,
    train_files: list[str],
    time_split: input_pipeline.TimeSplit | None = None,
) -> pp.PreprocessingState:
    """Reuses model_dir's preprocessing state, or learns it in one bounded pass over the
    train split (never the validation rows) and saves it."""
    if pp.PreprocessingState.exists(config.model_dir):
        saved = run_dir.load_spec(config.model_dir)
        if saved != spec:
            raise ValueError(
                f"model_dir {config.model_dir!r} was trained with another feature spec "
                "(its feature_spec.json differs); use a new model_dir"
            )
        return pp.PreprocessingState.load(config.model_dir)
    opts = dataclasses.replace(
        _read_options(config, training=True, time_split=time_split),
        shuffle=False,
        batch_size=4096,
        max_rows=config.data.adapt_max_rows,
    )
    raw = input_pipeline.read_raw(spec, train_files, opts)
    try:
        state = pp.adapt(spec, (x for x, _ in raw), max_rows=config.data.adapt_max_rows)
    except tf.errors.InvalidArgumentError as e:
        input_pipeline.raise_data_error(e)
    spec.save(run_dir.spec_path(config.model_dir))
    state.save(config.model_dir)
    return state


@tf.function(reduce_retracing=True, autograph=False)
def _predict_step(model, x):
    return model(x, training=False)


def _parts_model(model) -> keras.Model | None:
    """For a joint model: the same inputs → (wide logit + bias, deep logit, probability)."""
    names = {layer.name for layer in model.layers}
    if not {"wide", "deep"} <= names:
        return None
    wide, deep = model.get_layer("wide"), model.get_layer("deep")
    return keras.Model(model.inputs, [wide.output, deep.output, model.output])


def evaluate(
    model, dataset: tf.data.Dataset, steps: int | None = None, parts: bool = False
) -> dict[str, float]:
    """Exact metrics (`wdl_tf.metrics`) over the whole dataset (or its first ``steps``).

    With ``parts``, a wide & deep model's report also says which part dominates
    (`metrics.logit_parts`: each part's logit spread, their correlation, each one's AUC).
    """
    split = _parts_model(model) if parts else None

    def outputs(x):
        if split is None:
            return {"p": _predict_step(model, x).numpy()}
        wide, deep, p = (t.numpy() for t in _predict_step(split, x))
        return {"wide": wide, "deep": deep, "p": p}

    labels, out = evaluate_lib.collect(dataset, outputs, steps)
    results = metrics.binary_metrics(labels, out["p"])
    if split is not None:
        bias = float(np.asarray(model.get_layer("wide").bias).reshape(-1)[0])
        wide_logit = out["wide"].astype(np.float64) - bias
        results.update(metrics.logit_parts(labels, wide_logit, out["deep"], bias))
    return results


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


def _train_input(
    config, runtime, spec, files, preprocessor, counter, shards, time_split=None, cache=None
):
    """``make(epoch=None, skip_steps=0)``: what fit trains on, this worker's shard only.

    ``epoch=None``: the run's stream, shuffled with ``seed`` and reshuffled on each pass (and
    repeated with steps_per_epoch). ``epoch=e``: one pass shuffled with a seed of (seed, e)
    only, so any process rebuilds epoch e's order (step checkpoints without
    steps_per_epoch). The first ``skip_steps`` steps are skipped (a resumed run). Each new
    dataset is iterated once (fit keeps one iterator for a steps_per_epoch run, and
    `distribute.prepare_for_fit` stops fit's extra build pass), so its order depends only on
    the seed. Under a strategy each element is one replica's batch (global batch / replicas).
    With ``cache`` (an `encoded_cache.EncodedCache`) the rows go through the encoded cache:
    the same rows, shuffles and batch sizes, parsed and preprocessed on the first pass only.
    """

    def make(epoch=None, skip_steps=0):
        def dataset(ctx):
            opts = dataclasses.replace(
                _read_options(config, training=True, time_split=time_split),
                num_shards=shards.num_shards,
                shard_index=shards.index,
                shard_files=shards.by == "file",
            )
            if ctx is not None:
                opts = dataclasses.replace(
                    opts, batch_size=ctx.get_per_replica_batch_size(config.data.batch_size)
                )
            if cache is not None:
                if epoch is not None:
                    opts = dataclasses.replace(opts, seed=config.seed * 1_000_003 + epoch)
                ds = encoded_cache.training_dataset(spec, files, opts, preprocessor, cache, counter)
                if config.steps_per_epoch:
                    ds = ds.repeat()
                return ds.skip(skip_steps * runtime.local_replicas) if skip_steps else ds
            if not config.checkpoint_every_steps:
                ds = input_pipeline.make_dataset(spec, files, opts, preprocessor, counter)
                return ds.repeat() if config.steps_per_epoch else ds
            if epoch is not None:
                opts = dataclasses.replace(opts, seed=config.seed * 1_000_003 + epoch)
            ds = input_pipeline.read_raw(spec, files, opts, counter)
            if config.steps_per_epoch:
                ds = ds.repeat()
            if skip_steps:
                ds = ds.skip(skip_steps * runtime.local_replicas)
            ds = ds.map(
                input_pipeline.encoding(preprocessor),
                num_parallel_calls=input_pipeline.AUTOTUNE,
                deterministic=True,
            )
            return ds.prefetch(input_pipeline.AUTOTUNE)

        return runtime.distribute(dataset)

    return make


def _encoded_cache(config, runtime, spec, files, state, shards, time_split):
    """The run's `encoded_cache.EncodedCache`, or None: off by flag, or across workers
    (each would cache its own shard; not supported yet)."""
    if not config.data.encoded_cache:
        return None
    if runtime.multi_worker:
        log.info("encoded cache: off in multi-worker training")
        return None
    opts = dataclasses.replace(
        _read_options(config, training=True, time_split=time_split),
        num_shards=shards.num_shards,
        shard_index=shards.index,
        shard_files=shards.by == "file",
    )
    return encoded_cache.for_run(config.model_dir, files, spec, state, opts)


def _fit(
    model, config: TrainConfig, make_input, callbacks, saver, epoch0: int, step0: int, stop=None
):
    """Trains epochs epoch0..epochs-1, the first of them resumed after its step0 batches.

    Without step checkpoints: one fit call, as ever. With them and steps_per_epoch, one
    stream skipped to global step epoch0 * steps_per_epoch + step0; without
    steps_per_epoch, one fit call per epoch over that epoch's (seed, epoch)-shuffled pass.
    ``stop()``: whether early stopping ended training (between fit calls).
    """
    stop = stop or (lambda: False)

    def run(data, first, last, steps):
        model.fit(
            data,
            epochs=last,
            initial_epoch=first,
            steps_per_epoch=steps,
            callbacks=callbacks,
            verbose=config.verbose,
            shuffle=False,  # the tf.data pipeline shuffles
        )

    spe = config.steps_per_epoch
    if not config.checkpoint_every_steps:
        run(make_input(), epoch0, config.epochs, spe)
        return
    if spe:
        if step0:
            saver.first_batch = step0
            if step0 < spe:
                run(make_input(skip_steps=epoch0 * spe + step0), epoch0, epoch0 + 1, spe - step0)
            epoch0 += 1
        if epoch0 < config.epochs and not stop():
            run(make_input(skip_steps=epoch0 * spe), epoch0, config.epochs, spe)
        return
    for e in range(epoch0, config.epochs):
        if stop():
            return
        skip = step0 if e == epoch0 else 0
        saver.first_batch = skip
        run(make_input(epoch=e, skip_steps=skip), e, e + 1, None)


def _undistributed_copy(config: TrainConfig, state, spec, model) -> tuple:
    """A plain (no strategy) preprocessor and model with the trained weights, to evaluate
    and export a model trained under a strategy without distributed variables."""
    preprocessor = pp.FeaturePreprocessor(spec, state, name="preprocessor")
    copy = model_lib.build_model(preprocessor.encoded_features, config.model)
    copy.set_weights(model.get_weights())
    return preprocessor, copy


def train_and_evaluate(config: TrainConfig) -> TrainResult:
    """Runs (or resumes) training, evaluates, writes metrics.json and exports a SavedModel.

    Bad input (config, TF_CONFIG, files, sharding, an export_base where nothing can be
    written) is a ValueError before training. A failed export raises `ExportFailed`, which
    carries the metrics. Under a multi-worker strategy a non-chief worker returns empty
    metrics and no export.
    """
    config.validate()
    kind, task = cluster.resolve(config.distribution)
    os.makedirs(config.model_dir, exist_ok=True)
    spec, train_files, eval_files, eval_split = _data_files(config)
    shards = cluster.plan_shards(config.data.shard_policy, train_files, task)
    # MultiWorkerMirroredStrategy must be created before the process's first TensorFlow op.
    runtime = distribute.make_runtime(kind, task)
    if runtime.is_chief and config.export_base:
        export_versions.check_export_base(config.export_base)  # fail now, not after training
    runtime.per_replica_batch(config.data.batch_size)  # divisible, or ValueError
    work_dir = runtime.work_dir(config.model_dir)
    if not runtime.is_chief:
        shutil.rmtree(work_dir, ignore_errors=True)
        os.makedirs(work_dir)
    if runtime.is_chief:
        time_split = validation_split(config, spec, train_files)
        state = load_or_adapt(config, spec, train_files, time_split)
        skew.save_training_stats(
            config.model_dir, spec, state, train_files, config.data.adapt_max_rows
        )
        atomic.write_text(run_dir.config_path(config.model_dir), config.to_json() + "\n")
    runtime.barrier()  # the chief's preprocessing state is complete on disk
    if not runtime.is_chief:  # the chief's split and preprocessing state: reads only
        time_split = validation_split(config, spec, train_files, compute=False)
        state = load_or_adapt(config, spec, train_files, time_split)

    with runtime.strategy.scope():
        preprocessor, model = build_for_training(config, state, spec)
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        checkpoint = checkpoints.make_checkpoint(model, epoch=epoch)
    manager = tf.train.CheckpointManager(
        checkpoint, run_dir.checkpoints_dir(work_dir), max_to_keep=3
    )
    resumed, position = checkpoints.restore_latest(
        model, epoch, run_dir.checkpoints_dir(config.model_dir)
    )
    if resumed:
        log.info(
            "resumed from %s (epoch %d, step %d)",
            resumed,
            int(epoch.numpy()),
            position["step_in_epoch"],
        )
    elif config.warm_start_from:
        report = warm_start.warm_start(
            model, spec, state, config.warm_start_from, config.warm_start_optimizer
        )
        if runtime.is_chief:
            with open(os.path.join(config.model_dir, "warm_start.json"), "w") as f:
                json.dump(dataclasses.asdict(report), f, indent=2)
    initial_epoch, initial_step = int(epoch.numpy()), position["step_in_epoch"]

    counter = input_pipeline.BadRowCounter()
    cache = _encoded_cache(config, runtime, spec, train_files, state, shards, time_split)
    make_input = _train_input(
        config, runtime, spec, train_files, preprocessor, counter, shards, time_split, cache
    )

    def final_eval_data(preprocessor):
        opts = (
            _read_options(config, training=False, time_split=time_split)
            if eval_split == "validation"
            else _eval_options(config)
        )
        return input_pipeline.make_dataset(spec, eval_files, opts, preprocessor, counter)

    eval_ds = final_eval_data(preprocessor)

    def validation_data(preprocessor):
        opts = _read_options(config, training=False, time_split=time_split)
        return input_pipeline.make_dataset(spec, train_files, opts, preprocessor, counter)

    has_validation = config.data.validation_fraction > 0
    val_ds = validation_data(preprocessor) if has_validation else None
    saver = checkpoints.EpochCheckpoint(
        manager, epoch, config.checkpoint_every_steps, global_step=position["global_step"]
    )
    callbacks = [
        saver,
        keras.callbacks.TensorBoard(os.path.join(work_dir, "logs"), write_graph=False),
    ]
    average = None
    if config.model.ema_momentum and not runtime.distributed:
        average = model_lib.WeightAverage(model, config.model.ema_momentum)
    best = None
    if config.early_stopping:
        metric = config.early_stopping_metric
        best = BestEpoch(
            lambda: evaluate(model, val_ds, config.eval_steps),
            metric,
            config.early_stopping_patience,
            save_dir=run_dir.best_dir(work_dir),
            state_path=run_dir.best_file(config.model_dir) if runtime.is_chief else None,
            average=average,
            history=_resumed_history(config.model_dir, metric, initial_epoch) if resumed else [],
        )
        callbacks.insert(0, best)  # before the saver: a checkpointed epoch is in the history
    if average is not None:
        # Before the saver: the last epoch's checkpoint holds the averaged weights. (The
        # average is not checkpointed; a resumed run starts it again from the restored
        # weights, which costs nothing after ~1/(1 - momentum) steps.)
        callbacks.insert(0, model_lib.WeightAverageCallback(average, config.epochs))
    stopped_before = best is not None and best.stopped
    if stopped_before:
        log.info("early stopping: %s already ended this run", run_dir.BEST_FILE)
    if initial_epoch < config.epochs and not stopped_before:
        if runtime.distributed:
            distribute.prepare_for_fit(model, runtime, next(iter(eval_ds)))
        try:
            _fit(
                model,
                config,
                make_input,
                callbacks,
                saver,
                initial_epoch,
                initial_step,
                stop=lambda: best is not None and best.stopped,
            )
        except tf.errors.InvalidArgumentError as e:
            input_pipeline.raise_data_error(e)
    if not runtime.is_chief:
        runtime.cleanup(config.model_dir)
        return TrainResult({}, None, counter.count, initial_epoch)
    if runtime.distributed:
        preprocessor, model = _undistributed_copy(config, state, spec, model)
        eval_ds = final_eval_data(preprocessor)
        val_ds = validation_data(preprocessor) if has_validation else None
    kept = best.best_epoch if best is not None else None
    if kept is not None:  # the export, the metrics and evaluate_lib all see this epoch
        checkpoints.restore_weights(model, run_dir.best_checkpoint(config.model_dir, kept))

    results = evaluate(model, eval_ds, config.eval_steps, parts=True)
    results["epochs"] = config.epochs
    results["epochs_trained"] = int(epoch.numpy())
    results["best_epoch"] = kept if kept is not None else int(epoch.numpy())
    if has_validation:
        if eval_split == "validation":
            kept_validation = results
        elif kept is not None:
            kept_validation = best.best_entry()
        else:
            kept_validation = evaluate(model, val_ds, config.eval_steps)
        results["validation_auc"] = kept_validation["auc"]
        results["validation_log_loss"] = kept_validation["log_loss"]
    results["model_type"] = config.model.model_type
    results["eval_split"] = eval_split
    atomic.write_json(run_dir.metrics_path(config.model_dir), results)
    if counter.count:
        log.warning("skipped %d malformed rows (skip_bad_rows)", counter.count)
    cache_info = (cache.path, cache.disk_bytes()) if cache is not None else None

    export_path = None
    if config.export_base:
        sample_opts = dataclasses.replace(
            _eval_options(config), batch_size=64, max_rows=64, skip_bad_rows=True
        )
        sample_raw, _ = next(iter(input_pipeline.read_raw(spec, eval_files, sample_opts)))
        assets = skew.export_assets(config.model_dir)  # training_stats.json
        try:
            export_path = export_lib.export_model(
                spec,
                preprocessor,
                model,
                config.export_base,
                sample_raw,
                results,
                config.export,
                assets,
            )
        except export_lib.ExportError as e:
            failed = TrainResult(results, None, counter.count, initial_epoch, cache_info)
            raise ExportFailed(str(e), failed) from e
    return TrainResult(results, export_path, counter.count, initial_epoch, cache_info)


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
    """A Markdown table per model type: test AUC, log loss, accuracy, the kept epoch and its
    validation AUC, and for the joint model which part dominates (`metrics.logit_parts`)."""
    lines = [
        "| model | AUC | log loss | accuracy | best epoch | validation AUC |",
        "|---|---|---|---|---|---|",
    ]
    for model_type, m in results.items():
        validation = f"{m['validation_auc']:.4f}" if "validation_auc" in m else "—"
        lines.append(
            f"| {model_type} | {m['auc']:.4f} | {m['log_loss']:.4f} | {m['accuracy']:.4f} "
            f"| {m.get('best_epoch', '—')} | {validation} |"
        )
    parts = [metrics.format_logit_parts(m) for m in results.values()]
    return "\n".join(lines + [p for p in parts if p])
