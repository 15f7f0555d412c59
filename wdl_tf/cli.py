"""absl flags of the training entry point (scripts/train.py, the ``wdl-train`` command).

This is the only module that reads FLAGS: it turns them into one `TrainConfig`, which the
library validates before any data is read.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging

from wdl_tf import config as config_lib
from wdl_tf import distribute, metrics, train_lib
from wdl_tf.config import DATASETS, LR_DECAYS, MODEL_TYPES

FLAGS = flags.FLAGS

_D = config_lib.DataConfig()
_M = config_lib.ModelConfig()
_T = config_lib.TrainConfig()
_E = config_lib.ExportOptions()


def define_train_flags(fv: flags.FlagValues = FLAGS) -> None:
    """Defines the training flags in ``fv`` (defaults come from the config dataclasses)."""
    flags.DEFINE_enum("dataset", _D.dataset, list(DATASETS), "Dataset to train on.", flag_values=fv)
    flags.DEFINE_string(
        "feature_spec",
        _D.feature_spec,
        "Feature spec preset name or JSON file (empty: the dataset's preset).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "train_files", _D.train_files, "Comma-separated training files/globs.", flag_values=fv
    )
    flags.DEFINE_string(
        "eval_files", _D.eval_files, "Comma-separated evaluation files/globs.", flag_values=fv
    )
    flags.DEFINE_enum(
        "model_type", _M.model_type, list(MODEL_TYPES), "Which parts to train.", flag_values=fv
    )
    flags.DEFINE_string(
        "model_dir", _T.model_dir, "Checkpoints, logs, config, metrics.", flag_values=fv
    )
    flags.DEFINE_string(
        "export_base",
        _T.export_base,
        "Publish SavedModels to <export_base>/<version>/ (empty: no export).",
        flag_values=fv,
    )
    flags.DEFINE_integer("epochs", _T.epochs, "Passes over the training data.", flag_values=fv)
    flags.DEFINE_integer(
        "steps_per_epoch", None, "Batches per epoch (default: one pass).", flag_values=fv
    )
    flags.DEFINE_integer(
        "eval_steps", None, "Evaluate on at most this many batches.", flag_values=fv
    )
    flags.DEFINE_integer(
        "batch_size",
        _D.batch_size,
        "Global training batch size: split evenly over all replicas of all workers.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "eval_batch_size", _D.eval_batch_size, "Evaluation batch size.", flag_values=fv
    )
    flags.DEFINE_integer(
        "shuffle_buffer", _D.shuffle_buffer, "Rows in the shuffle buffer.", flag_values=fv
    )
    flags.DEFINE_list(
        "hidden_units",
        [str(u) for u in _M.hidden_units],
        "Deep part ReLU layer sizes.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "embedding_dim",
        None,
        "Embedding size of every feature (default: the spec's, 32).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "dropout", _M.dropout, "Dropout rate after each hidden layer.", flag_values=fv
    )
    flags.DEFINE_boolean(
        "batch_norm", _M.batch_norm, "Batch normalization in the deep part.", flag_values=fv
    )
    flags.DEFINE_float(
        "linear_learning_rate", _M.linear_learning_rate, "FTRL learning rate.", flag_values=fv
    )
    flags.DEFINE_float(
        "linear_l1", _M.linear_l1, "FTRL L1 regularization strength.", flag_values=fv
    )
    flags.DEFINE_float(
        "linear_l2", _M.linear_l2, "FTRL L2 regularization strength.", flag_values=fv
    )
    flags.DEFINE_float(
        "dnn_learning_rate", _M.dnn_learning_rate, "AdaGrad learning rate.", flag_values=fv
    )
    flags.DEFINE_enum(
        "lr_decay",
        _M.lr_decay,
        list(LR_DECAYS),
        "Learning-rate schedule of both optimizers (cosine: decay to 10% over the run).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "ema_momentum",
        _M.ema_momentum,
        "Average the dense weights over the last ~1/(1-m) steps (0: off).",
        flag_values=fv,
    )
    flags.DEFINE_integer("seed", _T.seed, "Seed of shuffles and initializers.", flag_values=fv)
    flags.DEFINE_float(
        "negative_sampling_rate",
        _M.negative_sampling_rate,
        "Share of negatives the training data kept (1: all). Below 1, evaluation and the export "
        "correct the probabilities to the unsampled rate: p / (p + (1 - p) / rate).",
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "skip_bad_rows",
        _D.skip_bad_rows,
        "Drop and count malformed rows instead of failing.",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "validation_fraction",
        _D.validation_fraction,
        "Hold out this share of the training rows for validation (the latest by time, per "
        "user, when the feature spec names a split time column; else random): it selects "
        "the kept epoch and tuning; 0: none.",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "early_stopping_metric",
        _T.early_stopping_metric,
        list(config_lib.EARLY_STOPPING_METRICS),
        "Validation metric that selects the kept epoch.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "early_stopping_patience",
        _T.early_stopping_patience,
        "Stop after this many epochs without a better validation metric and keep the best "
        "epoch (0: off; needs validation_fraction > 0).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "adapt_max_rows",
        _D.adapt_max_rows,
        "Rows read to learn vocabularies and quantiles.",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "synthetic_rows",
        _D.synthetic_rows,
        "Rows of a synthetic dataset (0: the dataset's default).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "keep_versions",
        _E.keep_versions,
        "Keep only this many newest exported versions (0: keep all).",
        flag_values=fv,
    )
    flags.DEFINE_float(
        "max_auc_drop",
        None,
        "Refuse to publish when eval AUC is below the published version's by more than this "
        "(default: no gate).",
        flag_values=fv,
    )
    flags.DEFINE_string(
        "model_name", _E.model_name, "Model name in the warmup requests.", flag_values=fv
    )
    flags.DEFINE_string(
        "warm_start_from",
        _T.warm_start_from,
        "Initialize from this previous model dir (rows copied by token).",
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "warm_start_optimizer",
        _T.warm_start_optimizer,
        "Also copy optimizer slots when warm starting.",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "distribution",
        _T.distribution,
        list(distribute.DISTRIBUTIONS),
        "tf.distribute strategy; auto: multi_worker_mirrored when TF_CONFIG is set, else none.",
        flag_values=fv,
    )
    flags.DEFINE_enum(
        "shard_policy",
        _D.shard_policy,
        list(distribute.SHARD_POLICIES),
        "How workers split the training data: by file, by row, or auto (file when there are "
        "at least as many files as workers).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "checkpoint_every_steps",
        _T.checkpoint_every_steps,
        "Also checkpoint every this many steps and resume mid-epoch (0: after every epoch).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "verbose", _T.verbose, "1: progress bar, 2: a line per epoch, 0: none.", flag_values=fv
    )


def config_from_flags() -> config_lib.TrainConfig:
    """One validated TrainConfig from the parsed flags."""
    try:
        hidden = tuple(int(u) for u in FLAGS.hidden_units)
    except ValueError:
        raise ValueError(
            f"hidden_units: expected comma-separated integers, got {FLAGS.hidden_units}"
        ) from None
    config = config_lib.TrainConfig(
        data=config_lib.DataConfig(
            dataset=FLAGS.dataset,
            feature_spec=FLAGS.feature_spec,
            train_files=FLAGS.train_files,
            eval_files=FLAGS.eval_files,
            batch_size=FLAGS.batch_size,
            eval_batch_size=FLAGS.eval_batch_size,
            shuffle_buffer=FLAGS.shuffle_buffer,
            skip_bad_rows=FLAGS.skip_bad_rows,
            validation_fraction=FLAGS.validation_fraction,
            adapt_max_rows=FLAGS.adapt_max_rows,
            synthetic_rows=FLAGS.synthetic_rows,
            shard_policy=FLAGS.shard_policy,
        ),
        model=config_lib.ModelConfig(
            model_type=FLAGS.model_type,
            hidden_units=hidden,
            dropout=FLAGS.dropout,
            batch_norm=FLAGS.batch_norm,
            embedding_dim=FLAGS.embedding_dim,
            linear_learning_rate=FLAGS.linear_learning_rate,
            linear_l1=FLAGS.linear_l1,
            linear_l2=FLAGS.linear_l2,
            dnn_learning_rate=FLAGS.dnn_learning_rate,
            lr_decay=FLAGS.lr_decay,
            ema_momentum=FLAGS.ema_momentum,
            seed=FLAGS.seed,
            negative_sampling_rate=FLAGS.negative_sampling_rate,
        ),
        export=config_lib.ExportOptions(
            model_name=FLAGS.model_name,
            keep_versions=FLAGS.keep_versions,
            max_auc_drop=FLAGS.max_auc_drop,
        ),
        model_dir=FLAGS.model_dir,
        export_base=FLAGS.export_base,
        epochs=FLAGS.epochs,
        steps_per_epoch=FLAGS.steps_per_epoch,
        eval_steps=FLAGS.eval_steps,
        seed=FLAGS.seed,
        verbose=FLAGS.verbose,
        warm_start_from=FLAGS.warm_start_from,
        warm_start_optimizer=FLAGS.warm_start_optimizer,
        distribution=FLAGS.distribution,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps,
        early_stopping_metric=FLAGS.early_stopping_metric,
        early_stopping_patience=FLAGS.early_stopping_patience,
    )
    config.validate()
    return config


def _print_result(result: train_lib.TrainResult) -> None:
    print("eval metrics: " + json.dumps(result.metrics, indent=2))
    m = result.metrics
    if "validation_auc" in m:
        print(
            f"kept epoch {m['best_epoch']} of {m['epochs_trained']} trained: validation AUC "
            f"{m['validation_auc']:.4f}, log loss {m['validation_log_loss']:.4f}"
        )
    parts = metrics.format_logit_parts(m)
    if parts:
        print(parts)
    if result.bad_rows:
        print(f"skipped malformed rows: {result.bad_rows}")
    if result.export_path:
        print(f"exported SavedModel: {result.export_path}")


def _train(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        config = config_from_flags()
        result = train_lib.train_and_evaluate(config)
    except ValueError as e:  # also FeatureSpecError and DataError: bad input, named
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except train_lib.ExportFailed as e:  # trained and evaluated; only the export failed
        _print_result(e.result)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if not result.metrics:  # a non-chief worker: the chief evaluates and exports
        print("worker finished training (the chief writes metrics and the export)")
        return
    _print_result(result)


def run_train() -> None:
    define_train_flags()
    logging.set_verbosity(logging.WARNING)
    app.run(_train)


def train_main() -> None:
    """Console entry point ``wdl-train``."""
    run_train()
