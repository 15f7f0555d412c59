"""Typed, validated configuration of a training run, and named presets.

`scripts/train.py` turns its absl flags into one `TrainConfig` and calls
`train_lib.train_and_evaluate(config)`; library code never reads flags (docs/design.md §3.1).
`ContinuousConfig` wraps a `TrainConfig` for `scripts/continuous_train.py`.
This module is a leaf: it imports nothing from `wdl_tf` (and no TensorFlow), so reading or
validating a config is cheap, and every module that acts on a setting imports it from here.
The resolved config is written to ``<model_dir>/config.json`` so a model dir says how it was
made.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Collection
from typing import Any

# The allowed values of the settings below (the modules that act on them import these).
DATASETS = (
    "census",
    "census_synthetic",
    "criteo",
    "criteo_synthetic",
    "apps_synthetic",
    "drifting_synthetic",
    "files",
)
DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker_mirrored")
SHARD_POLICIES = ("auto", "file", "data")
EARLY_STOPPING_METRICS = ("auc", "log_loss")


def setting(default: Any, help: str = "", *, choices: tuple[str, ...] = (), flag: str | None = ""):
    """A config field that is also a training flag: its help text and allowed values live
    here, once; `wdl_tf.cli` defines the absl flag from them.

    ``flag``: the flag's name ("" = the field's own name), None when the field is not a flag,
    or another field's flag that sets it too (ModelConfig.seed follows ``--seed``).
    """
    return dataclasses.field(
        default=default, metadata={"help": help, "choices": choices, "flag": flag}
    )


def flag_name(field: dataclasses.Field) -> str | None:
    """The training flag that sets ``field``: its own name, another field's flag, or None."""
    flag = field.metadata.get("flag")
    return None if flag is None else (flag or field.name)


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass that are flags of their own (in definition order);
    a field set by another field's flag (ModelConfig.seed) is not one, even when the names
    match."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag") == ""]


def check_choice(name: str, value: Any, allowed: Collection) -> None:
    """ValueError naming the setting, the value and the allowed values, unless allowed."""
    if value not in allowed:
        raise ValueError(f"{name}: unknown value {value!r}; allowed values are {list(allowed)}")


MODEL_TYPES = ("wide", "deep", "wide_deep")
LR_DECAYS = ("none", "cosine")
HIDDEN_DTYPES = ("float32", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture and optimizer settings.

    Attributes:
      model_type: ``wide`` (linear only), ``deep`` (DNN only) or ``wide_deep`` (joint).
      hidden_units: sizes of the deep part's ReLU layers.
      dropout: dropout rate after each hidden layer (0 = none).
      batch_norm: batch normalization before each hidden layer's ReLU.
      embedding_dim: overrides every feature's embedding size when set.
      linear_learning_rate: FTRL learning rate of the wide part.
      linear_l1: FTRL L1 regularization strength (sparsity of the wide weights).
      linear_l2: FTRL L2 regularization strength.
      dnn_learning_rate: AdaGrad learning rate of the deep part.
      lr_decay: ``none``, or ``cosine``: both learning rates decay to 10% over the run.
      ema_momentum: when > 0, the dense weights (deep layers, the bias; not the id tables)
        end as their exponential moving average over the last ~1/(1 - momentum) steps (see
        `WeightAverage`); 0 turns it off. Single-process training only.
      hidden_dtype: the Keras dtype policy of the deep part's hidden layers. ``float32`` (the
        default), or ``mixed_bfloat16``: their matmuls take bfloat16 inputs and weights while
        the weights stay float32 variables, so checkpoints, warm start and the export's
        float32 inputs and outputs are the same either way. The dense tower is most of a
        training step: on this project's CPU (AVX512_BF16) its pass took half the time and
        a Criteo-shaped step 1.45× less (BENCHMARKS.md); where bfloat16 is emulated it is
        slower. The embeddings, the wide part and the logit stay float32. An option, not the
        default: it changes the model's numerics (the export's check allows
        `export_lib.BFLOAT16_ATOL`).
      seed: seed of the weight initializers.
      negative_sampling_rate: the share of negatives the training data kept (1 = all). Below
        1, the model's inference output (``training=False``: evaluation, the export) is
        corrected to the unsampled rate, p / (p + (1 - p) / rate) (see `SamplingCorrection`).
    """

    model_type: str = setting("wide_deep", "Which parts to train.", choices=MODEL_TYPES)
    hidden_units: tuple[int, ...] = setting((1024, 512, 256), "Deep part ReLU layer sizes.")
    dropout: float = setting(0.0, "Dropout rate after each hidden layer.")
    batch_norm: bool = setting(False, "Batch normalization in the deep part.")
    embedding_dim: int | None = setting(
        None,
        "Embedding size of every feature (default: the spec's, 32).",
    )
    linear_learning_rate: float = setting(0.2, "FTRL learning rate.")
    linear_l1: float = setting(0.001, "FTRL L1 regularization strength.")
    linear_l2: float = setting(0.001, "FTRL L2 regularization strength.")
    dnn_learning_rate: float = setting(0.05, "AdaGrad learning rate.")
    lr_decay: str = setting(
        "none",
        "Learning-rate schedule of both optimizers (cosine: decay to 10% over the run).",
        choices=LR_DECAYS,
    )
    ema_momentum: float = setting(
        0.99,
        "Average the dense weights over the last ~1/(1-m) steps (0: off).",
    )
    hidden_dtype: str = setting(
        "float32",
        "Dtype policy of the deep part's hidden layers (mixed_bfloat16: bfloat16 matmuls, "
        "float32 weights).",
        choices=HIDDEN_DTYPES,
    )
    seed: int = setting(0, flag="seed")  # TrainConfig's --seed
    negative_sampling_rate: float = setting(
        1.0,
        "Share of negatives the training data kept (1: all). Below 1, evaluation and the export "
        "correct the probabilities to the unsampled rate: p / (p + (1 - p) / rate).",
    )

    def validate(self) -> None:
        check_choice("model_type", self.model_type, MODEL_TYPES)
        check_choice("lr_decay", self.lr_decay, LR_DECAYS)
        check_choice("hidden_dtype", self.hidden_dtype, HIDDEN_DTYPES)
        if not self.hidden_units or any(u < 1 for u in self.hidden_units):
            raise ValueError(
                f"hidden_units: expected positive layer sizes, got {list(self.hidden_units)}"
            )
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(f"ema_momentum: must be in [0, 1), got {self.ema_momentum}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.negative_sampling_rate <= 1.0:
            raise ValueError(
                f"negative_sampling_rate: must be in (0, 1], got {self.negative_sampling_rate}"
            )
        if self.embedding_dim is not None and self.embedding_dim < 1:
            raise ValueError(f"embedding_dim: must be >= 1, got {self.embedding_dim}")
        for name in ("linear_learning_rate", "dnn_learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be > 0, got {getattr(self, name)}")
        for name in ("linear_l1", "linear_l2"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")

    @property
    def has_wide(self) -> bool:
        return self.model_type in ("wide", "wide_deep")

    @property
    def has_deep(self) -> bool:
        return self.model_type in ("deep", "wide_deep")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How to publish.

    Attributes:
      model_name: the name warmup requests carry (TF Serving ignores it during warmup).
      keep_versions: keep only this many newest integer versions (0 = keep all).
      max_auc_drop: refuse to publish when the eval AUC is lower than the latest published
        version's by more than this (None = no gate).
      atol: largest allowed difference between reloaded and in-memory predictions.
    """

    model_name: str = setting("census", "Model name in the warmup requests.")
    keep_versions: int = setting(0, "Keep only this many newest exported versions (0: keep all).")
    max_auc_drop: float | None = setting(
        None,
        "Refuse to publish when eval AUC is below the published version's by more than this "
        "(default: no gate).",
    )
    atol: float = setting(1e-5, flag=None)  # not a flag

    def validate(self) -> None:
        if self.keep_versions < 0:
            raise ValueError(f"keep_versions: must be >= 0, got {self.keep_versions}")
        if self.max_auc_drop is not None and self.max_auc_drop < 0:
            raise ValueError(f"max_auc_drop: must be >= 0, got {self.max_auc_drop}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data to read and how.

    Attributes:
      dataset: ``census`` (embedded UCI Adult, through its TFDS builder),
        ``census_synthetic`` (generated twin),
        ``criteo`` (the user's Criteo TSV files), ``criteo_synthetic`` (generated), or
        ``files`` (``train_files``/``eval_files`` and ``feature_spec`` given by the user).
      feature_spec: a preset name or a JSON file; empty = the dataset's preset.
      train_files: comma-separated files or globs (CSV, optionally .gz, or .tfrecord[.gz]);
        empty = the dataset's.
      eval_files: the same for the evaluation split.
      batch_size: global training batch size: split evenly over all replicas (devices of all
        workers), so it must be divisible by their number.
      eval_batch_size: batch size of evaluation and export checks.
      shuffle_buffer: rows in the shuffle buffer.
      skip_bad_rows: drop (and count) malformed rows instead of failing.
      validation_fraction: when > 0, hold out this share of the training rows as the
        validation split: the latest rows by time (per user) when the feature spec names a
        ``split`` time column, else a random share (by a hash of seed, file and line). It
        selects the kept epoch (early stopping) and is what tuning compares, so the test
        split (``eval_files``) is never used to choose anything; without eval files, the
        final metrics are on it.
      adapt_max_rows: rows read by the one bounded pass that learns vocabularies/quantiles.
      synthetic_rows: training rows of a synthetic dataset; 0 = the dataset's default
        (`wdl_tf.datasets.DEFAULT_ROWS`).
      shard_policy: how workers split the training files in multi-worker training: ``auto``
        (by file when there are at least as many files as workers, else by row), ``file``
        (fails before training with fewer files than workers) or ``data`` (by row).
      tfds_data_dir: where the TFDS builders of ``census`` and ``apps_synthetic`` are
        prepared (once; later runs reuse them); empty = ``$TFDS_DATA_DIR``, else
        ``~/tensorflow_datasets``.
      encoded_cache: the first epoch writes the parsed and preprocessed training rows under
        ``model_dir/encoded_cache`` and later epochs read them instead of the files
        (`wdl_tf.encoded_cache`); off for data too big to keep a second, encoded copy of
        on disk.
    """

    dataset: str = setting("census", "Dataset to train on.", choices=DATASETS)
    feature_spec: str = setting(
        "",
        "Feature spec preset name or JSON file (empty: the dataset's preset).",
    )
    train_files: str = setting("", "Comma-separated training files/globs.")
    eval_files: str = setting("", "Comma-separated evaluation files/globs.")
    batch_size: int = setting(
        256,
        "Global training batch size: split evenly over all replicas of all workers.",
    )
    eval_batch_size: int = setting(2048, "Evaluation batch size.")
    shuffle_buffer: int = setting(10_000, "Rows in the shuffle buffer.")
    skip_bad_rows: bool = setting(False, "Drop and count malformed rows instead of failing.")
    validation_fraction: float = setting(
        0.1,
        "Hold out this share of the training rows for validation (the latest by time, per user, "
        "when the feature spec names a split time column; else random): it selects the kept epoch "
        "and tuning; 0: none.",
    )
    adapt_max_rows: int = setting(1_000_000, "Rows read to learn vocabularies and quantiles.")
    synthetic_rows: int = setting(0, "Rows of a synthetic dataset (0: the dataset's default).")
    shard_policy: str = setting(
        "auto",
        "How workers split the training data: by file, by row, or auto (file when there are at "
        "least as many files as workers).",
        choices=SHARD_POLICIES,
    )
    tfds_data_dir: str = setting(
        "",
        "Where census and apps_synthetic are prepared by their TFDS builders (empty: "
        "$TFDS_DATA_DIR, else ~/tensorflow_datasets).",
    )
    encoded_cache: bool = setting(
        True,
        "Write the parsed and preprocessed training rows on the first epoch (under "
        "model_dir/encoded_cache) and read them on later epochs instead of the files.",
    )

    def validate(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        if self.dataset == "files" and not (self.train_files and self.feature_spec):
            raise ValueError("dataset 'files' needs train_files and feature_spec")
        if self.dataset == "criteo" and not (self.train_files and self.eval_files):
            raise ValueError("dataset 'criteo' needs train_files and eval_files (Criteo TSV)")
        for name in ("batch_size", "eval_batch_size", "shuffle_buffer", "adapt_max_rows"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.synthetic_rows < 0:
            raise ValueError(f"synthetic_rows: must be >= 0, got {self.synthetic_rows}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction: must be in [0, 1), got {self.validation_fraction}"
            )
        check_choice("shard_policy", self.shard_policy, SHARD_POLICIES)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A whole training run: data, model, schedule, where to write.

    Attributes:
      model_dir: checkpoints, TensorBoard logs, config.json, feature_spec.json,
        preprocessing.json, vocabularies/ and metrics.json. Rerunning with the same
        model_dir resumes from its last checkpoint.
      export_base: SavedModels are published to ``<export_base>/<integer version>/``;
        empty = no export.
      export: how versions are verified, gated, named in warmup requests and pruned.
      epochs: passes over the training data.
      steps_per_epoch: when set, an epoch is this many batches (the data repeats).
      eval_steps: when set, evaluate on at most this many batches.
      seed: seed of shuffles and initializers.
      verbose: Keras verbosity (1 = progress bar, 2 = one line per epoch, 0 = silent).
      warm_start_from: a previous model dir whose weights initialize a new run (rows copied
        by token, see `wdl_tf.warm_start`); ignored when model_dir has a checkpoint.
      warm_start_optimizer: also copy the optimizer slots when warm starting.
      distribution: ``auto`` (``multi_worker_mirrored`` when the TF_CONFIG environment
        variable is set, else ``none``), ``none``, ``mirrored`` (all local GPUs, or all
        logical CPU devices) or ``multi_worker_mirrored`` (see `wdl_tf.distribute`).
      checkpoint_every_steps: also checkpoint every this many global steps, and resume an
        interrupted epoch after its last checkpointed step (0 = checkpoint after every epoch
        only). Turning it on makes each epoch's data order depend on the seed (and the
        epoch) only, so a resumed run sees the batches the interrupted one would have.
      early_stopping_metric: what selects the kept epoch on the validation split: ``auc``
        (higher is better) or ``log_loss`` (lower is better).
      early_stopping_patience: with a validation split, stop after this many epochs without
        a better validation metric and keep (evaluate, export) the best epoch's weights;
        0 = off (train every epoch, keep the last).
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    export: ExportOptions = dataclasses.field(default_factory=ExportOptions)
    model_dir: str = setting("./models/census_train", "Checkpoints, logs, config, metrics.")
    export_base: str = setting(
        "./models/census",
        "Publish SavedModels to <export_base>/<version>/ (empty: no export).",
    )
    epochs: int = setting(20, "Passes over the training data.")
    steps_per_epoch: int | None = setting(None, "Batches per epoch (default: one pass).")
    eval_steps: int | None = setting(None, "Evaluate on at most this many batches.")
    seed: int = setting(0, "Seed of shuffles and initializers.")
    verbose: int = setting(1, "1: progress bar, 2: a line per epoch, 0: none.")
    warm_start_from: str = setting(
        "",
        "Initialize from this previous model dir (rows copied by token).",
    )
    warm_start_optimizer: bool = setting(False, "Also copy optimizer slots when warm starting.")
    distribution: str = setting(
        "auto",
        "tf.distribute strategy; auto: multi_worker_mirrored when TF_CONFIG is set, else none.",
        choices=DISTRIBUTIONS,
    )
    checkpoint_every_steps: int = setting(
        0,
        "Also checkpoint every this many steps and resume mid-epoch (0: after every epoch).",
    )
    early_stopping_metric: str = setting(
        "auc",
        "Validation metric that selects the kept epoch.",
        choices=EARLY_STOPPING_METRICS,
    )
    early_stopping_patience: int = setting(
        3,
        "Stop after this many epochs without a better validation metric and keep the best epoch "
        "(0: off; needs validation_fraction > 0).",
    )

    def validate(self) -> None:
        self.data.validate()
        self.model.validate()
        self.export.validate()
        if not self.model_dir:
            raise ValueError("model_dir: must not be empty")
        if self.epochs < 1:
            raise ValueError(f"epochs: must be >= 1, got {self.epochs}")
        for name in ("steps_per_epoch", "eval_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}: must be >= 1 when set, got {value}")
        if self.verbose not in (0, 1, 2):
            raise ValueError(f"verbose: must be 0, 1 or 2, got {self.verbose}")
        check_choice("distribution", self.distribution, DISTRIBUTIONS)
        if self.checkpoint_every_steps < 0:
            raise ValueError(
                f"checkpoint_every_steps: must be >= 0, got {self.checkpoint_every_steps}"
            )
        check_choice("early_stopping_metric", self.early_stopping_metric, EARLY_STOPPING_METRICS)
        if self.early_stopping_patience < 0:
            raise ValueError(
                f"early_stopping_patience: must be >= 0, got {self.early_stopping_patience}"
            )

    @property
    def early_stopping(self) -> bool:
        """Whether the kept epoch is chosen on validation (a split and patience > 0)."""
        return self.data.validation_fraction > 0 and self.early_stopping_patience > 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, obj: dict[str, Any]) -> TrainConfig:
        obj = dict(obj)
        data = DataConfig(**obj.pop("data", {}))
        model_obj = dict(obj.pop("model", {}))
        if "hidden_units" in model_obj:
            model_obj["hidden_units"] = tuple(model_obj["hidden_units"])
        export_obj = dict(obj.pop("export", {}))
        export_obj.pop("top_k", None)  # older runs: rank's top-k has moved to the client
        export = ExportOptions(**export_obj)
        return cls(data=data, model=ModelConfig(**model_obj), export=export, **obj)


# Named presets, as data: each is what it changes in the defaults (nested like config.json).
# The defaults themselves were chosen on census (BENCHMARKS.md says how, on validation only).
PRESETS: dict[str, dict[str, Any]] = {
    "census": {},
    "test": {  # tiny, for tests
        "data": {"dataset": "census_synthetic", "synthetic_rows": 2000, "batch_size": 128},
        "model": {"hidden_units": [32, 16]},
        "epochs": 2,
        "verbose": 0,
    },
    # Rating data in the MovieLens layout (the movielens spec): the best Wide & Deep
    # settings of an 8-trial search on the validation split of the drifting generator,
    # seed 0 (`scripts/benchmark_quality.py --tune_trials=8`, BENCHMARKS.md), rounded;
    # dropout 0.5 then beat 0.2 and a 0.1 AdaGrad step on the same validation split.
    "movielens": {
        "model": {
            "hidden_units": [256, 128, 64],
            "embedding_dim": 64,
            "dropout": 0.5,
            "linear_learning_rate": 0.8,
            "linear_l1": 0.002,
            "linear_l2": 0.0005,
            "dnn_learning_rate": 0.25,
        },
    },
    # The synthetic app store (installed apps × impression app crosses) with the census
    # defaults: the joint model beats wide-only and deep-only there on both seeds
    # (BENCHMARKS.md, quality section).
    "apps": {"data": {"dataset": "apps_synthetic"}},
    # Criteo display ads (the user's TSV files: --train_files/--eval_files), the model the
    # training benchmark measures (`wdl_tf/benchmarks`): 1024-row batches, 32-d embeddings.
    "criteo": {
        "data": {"dataset": "criteo", "batch_size": 1024},
        "model": {"hidden_units": [1024, 512, 256], "embedding_dim": 32},
    },
}
# The preset a run starts from when none is named: its dataset's, else the defaults.
DATASET_PRESETS: dict[str, str] = {"drifting_synthetic": "movielens", "apps_synthetic": "apps"}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """The named preset (`PRESETS`) as a config, then ``overrides`` (fields of TrainConfig)."""
    check_choice("preset", name, PRESETS)
    merged = TrainConfig().to_dict()
    for key, value in PRESETS[name].items():
        if isinstance(value, dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    config = TrainConfig.from_dict(merged)
    return dataclasses.replace(config, **overrides) if overrides else config


def dataset_preset(dataset: str) -> str:
    """The preset a run on ``dataset`` starts from when none is named."""
    return DATASET_PRESETS.get(dataset, "census")


# ----------------------------------------------------------------------------------------
# Continuous training (`wdl_tf.continuous`, scripts/continuous_train.py).

# Datasets whose spans continuous training generates (`wdl_tf.continuous.SPAN_SOURCES`);
# ``files`` takes the user's span globs instead.
SPAN_DATASETS = ("apps_synthetic",)


@dataclasses.dataclass(frozen=True)
class ContinuousConfig:
    """A continuous training run.

    Attributes:
      train: data, model and export settings of every span: ``model_dir`` is the run's root,
        ``epochs`` (and ``steps_per_epoch``) the training of each span, ``synthetic_rows``
        the rows of a generated span, ``export.max_auc_drop`` the publish gate (None: none).
        ``eval_files``, ``validation_fraction`` and ``warm_start_from`` do not apply: each
        span is evaluated on the next one and starts from the previous one
        (``train.warm_start_optimizer`` neither: this config's own field says it).
      spans: spans of data; every span but the last is trained on (the last only evaluates).
      first_span: the number of the first span (``{span}`` in ``span_files``).
      span_files: ``dataset=files`` only: one pattern with ``{span}`` (e.g.
        ``data/day-{span}/*.csv``) or one glob per span, comma-separated.
      vocab_window: a token is admitted when seen ``min_count`` times in this many spans.
      evict_after_spans: a token unseen for this many spans is evicted (its id is reused).
      warm_start_optimizer: copy the optimizer slots too. FTRL recomputes each wide weight
        from its slots at every update, so without them the first update of a row throws
        its warm-started weight away.
      eval_every_steps: evaluate the warm and the cold model every this many steps (0: about
        20 times per span).
      curve_eval_rows: rows of the next span those evaluations read.
      measure_cold: also train the cold model (the steps_to_reach figures need it).
    """

    train: TrainConfig
    spans: int = 4
    first_span: int = 1
    span_files: str = ""
    vocab_window: int = 3
    evict_after_spans: int = 3
    warm_start_optimizer: bool = True
    eval_every_steps: int = 0
    curve_eval_rows: int = 20_000
    measure_cold: bool = True

    def validate(self) -> None:
        data = self.train.data
        if self.spans < 2:
            raise ValueError(
                f"spans: must be >= 2 (a span to train on and the next to evaluate on), "
                f"got {self.spans}"
            )
        if self.span_files and data.dataset != "files":
            raise ValueError(
                f"span_files: only with dataset 'files', got dataset {data.dataset!r} "
                "(whose spans are generated)"
            )
        if data.dataset == "files":
            if not self.span_files:
                raise ValueError("dataset 'files' needs span_files (a {span} pattern or globs)")
            if not data.feature_spec:
                raise ValueError("dataset 'files' needs feature_spec")
            parts = [p for p in self.span_files.split(",") if p.strip()]
            if "{span}" not in self.span_files and len(parts) != self.spans:
                raise ValueError(
                    f"span_files: {len(parts)} globs for spans={self.spans}; give one glob per "
                    f"span or one pattern with {{span}}, got {self.span_files!r}"
                )
        elif data.dataset not in SPAN_DATASETS:
            raise ValueError(
                f"dataset: {data.dataset!r} has no spans; allowed values are "
                f"{[*SPAN_DATASETS, 'files']}"
            )
        if self.first_span < 0:
            raise ValueError(f"first_span: must be >= 0, got {self.first_span}")
        checks = {
            "vocab_window": self.vocab_window,
            "evict_after_spans": self.evict_after_spans,
            "curve_eval_rows": self.curve_eval_rows,
        }
        for name, value in checks.items():
            if value < 1:
                raise ValueError(f"{name}: must be >= 1, got {value}")
        if self.eval_every_steps < 0:
            raise ValueError(f"eval_every_steps: must be >= 0, got {self.eval_every_steps}")
        if self.train.warm_start_from:
            raise ValueError(
                "warm_start_from: not used by continuous training (each span starts from the "
                f"previous span's model), got {self.train.warm_start_from!r}"
            )
        tf_config_set = bool(os.environ.get("TF_CONFIG"))
        if self.train.distribution not in ("auto", "none") or tf_config_set:
            raise ValueError(
                f"distribution: continuous training runs in one process, got "
                f"{self.train.distribution!r} (TF_CONFIG set: {tf_config_set})"
            )
        # DataConfig wants train files for dataset 'files': here they are the spans.
        dataclasses.replace(
            self.train, data=dataclasses.replace(data, train_files=self.span_files or "spans")
        ).validate()

    @property
    def span_numbers(self) -> list[int]:
        return list(range(self.first_span, self.first_span + self.spans))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
