"""What the training benchmark runs: its settings, the ``--quick`` sizes, the feature spec.

The flags of `scripts/benchmark_train.py` map one to one onto `Settings` fields (same names),
so the script passes their values and which were given, and the checks live here, beside the
code that relies on them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# ``*_bf16``: the same configuration with the deep part's hidden layers under the
# ``mixed_bfloat16`` policy (`ModelConfig.hidden_dtype`): compared with each other and with
# the bfloat16 roofline, not with the float32 configurations (a model that rounds to 8 bits
# is not the same model).
IMPLEMENTATIONS = ("wdl_tf", "keras_stock", "tf_keras", "wdl_tf_bf16", "tf_keras_bf16")
IMPL_TITLES = {
    "wdl_tf": "wdl_tf (ours)",
    "keras_stock": "Keras 3 stock optimizers",
    "tf_keras": "tf_keras WideDeepModel",
    "wdl_tf_bf16": "wdl_tf, bfloat16 tower",
    "tf_keras_bf16": "tf_keras, bfloat16 tower",
}
BF16_SUFFIX = "_bf16"
# The parts of a run, in the order they run (``--sections`` picks some).
SECTIONS = ("optimizer_step", "roofline", "input_pipeline", "end_to_end", "from_files")
PIPELINE_TARGET_RATIO = 3.0  # input pipeline examples/s ÷ wdl_tf training examples/s

# ``--quick``: tiny sizes, in-process, for a smoke run (about 1 min on an idle 2-core
# machine on 2026-12-02); only flags not given change. One bucket count: a configuration's
# cost is mostly tracing and Keras' fit setup, the same at every table size, and a second
# count doubled the run (112 s) without reaching code the first does not.
QUICK = dict(
    rows=4096,
    batch_size=256,
    hash_buckets=["1000"],
    hidden_units="64,32,16",
    embedding_dim=8,
    numeric_features=4,
    categorical_features=6,
    optimizer_rows=["1000", "10000", "40000"],
    optimizer_steps=5,
    optimizer_warmup=2,
    warmup_steps=2,
    warmup_seconds=5.0,
    window_steps=2,
    min_windows=2,
    max_windows=2,
    train_seconds=1.0,
    pipeline_batches=4,
    pipeline_seconds=2.0,
    matmul_sizes=["128", "256"],
    matmul_seconds=0.2,
    csv_files=2,
    tfrecord_shards=2,
    files_epochs=2,
    isolate=False,
)


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: str
    quick: bool
    device_name: str | None
    rows: int
    batch_size: int
    hash_buckets: tuple[int, ...]
    implementations: tuple[str, ...]
    tf_keras_optimizers: str
    hidden_units: tuple[int, ...]
    embedding_dim: int
    numeric_features: int
    categorical_features: int
    optimizer_rows: tuple[int, ...]
    optimizer_ids: int
    optimizer_steps: int
    optimizer_warmup: int
    warmup_steps: int
    warmup_seconds: float
    window_steps: int
    min_windows: int
    max_windows: int
    train_seconds: float
    pipeline_batches: int
    pipeline_seconds: float
    matmul_sizes: tuple[int, ...]
    matmul_seconds: float
    csv_files: int
    tfrecord_shards: int
    sections: tuple[str, ...]
    files_epochs: int
    isolate: bool
    config_timeout: int

    def spec(self, hash_buckets: int):
        return benchmark_spec(hash_buckets, self.numeric_features, self.categorical_features)

    @property
    def train_batches(self) -> int:
        """Full batches in the data: the encoded batches every configuration trains on."""
        return self.rows // self.batch_size


FIELDS = tuple(f.name for f in dataclasses.fields(Settings))  # also the flags' names


def _ints(values, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(str(v).strip()) for v in values if str(v).strip())
    except ValueError:
        raise ValueError(f"--{name}: expected comma-separated integers, got {values}") from None
    if not out or any(v < 1 for v in out):
        raise ValueError(f"--{name}: expected positive integers, got {values}")
    return out


def resolve_settings(values: dict[str, Any], given: set[str]) -> Settings:
    """Flag values (by `FIELDS` name) → Settings; with ``quick`` the `QUICK` sizes replace
    the values of flags not in ``given``. Raises ValueError naming the flag at fault."""

    def get(name):
        if values["quick"] and name in QUICK and name not in given:
            return QUICK[name]
        return values[name]

    implementations = tuple(get("implementations"))
    unknown = set(implementations) - set(IMPLEMENTATIONS)
    if unknown:
        raise ValueError(f"--implementations: unknown {sorted(unknown)}; use {IMPLEMENTATIONS}")
    sections = tuple(get("sections"))
    unknown = set(sections) - set(SECTIONS)
    if unknown or not sections:
        raise ValueError(f"--sections: unknown {sorted(unknown)} or none; use {SECTIONS}")
    s = Settings(
        data_dir=get("data_dir"),
        quick=values["quick"],
        device_name=get("device_name"),
        rows=get("rows"),
        batch_size=get("batch_size"),
        hash_buckets=_ints(get("hash_buckets"), "hash_buckets"),
        implementations=implementations,
        tf_keras_optimizers=get("tf_keras_optimizers"),
        hidden_units=_ints(get("hidden_units").split(","), "hidden_units"),
        embedding_dim=get("embedding_dim"),
        numeric_features=get("numeric_features"),
        categorical_features=get("categorical_features"),
        optimizer_rows=_ints(get("optimizer_rows"), "optimizer_rows"),
        optimizer_ids=get("optimizer_ids"),
        optimizer_steps=get("optimizer_steps"),
        optimizer_warmup=get("optimizer_warmup"),
        warmup_steps=get("warmup_steps"),
        warmup_seconds=get("warmup_seconds"),
        window_steps=get("window_steps"),
        min_windows=get("min_windows"),
        max_windows=get("max_windows"),
        train_seconds=get("train_seconds"),
        pipeline_batches=get("pipeline_batches"),
        pipeline_seconds=get("pipeline_seconds"),
        matmul_sizes=_ints(get("matmul_sizes"), "matmul_sizes"),
        matmul_seconds=get("matmul_seconds"),
        csv_files=get("csv_files"),
        tfrecord_shards=get("tfrecord_shards"),
        sections=tuple(x for x in SECTIONS if x in sections),
        files_epochs=get("files_epochs"),
        isolate=get("isolate"),
        config_timeout=get("config_timeout"),
    )
    if s.train_batches < 1:
        raise ValueError(f"--rows ({s.rows}) must be >= --batch_size ({s.batch_size})")
    for name in ("optimizer_steps", "window_steps", "min_windows", "pipeline_batches"):
        if getattr(s, name) < 1:
            raise ValueError(f"--{name}: must be >= 1")
    if s.max_windows < s.min_windows:
        raise ValueError("--max_windows must be >= --min_windows")
    if not (1 <= s.numeric_features <= 13 and 1 <= s.categorical_features <= 26):
        raise ValueError("--numeric_features in [1, 13], --categorical_features in [1, 26]")
    if s.files_epochs < 2:
        raise ValueError("--files_epochs must be >= 2 (epoch 1 writes the cache, 2+ read it)")
    if s.warmup_steps < 2:
        raise ValueError("--warmup_steps must be >= 2 (the first step traces)")
    return s


def benchmark_spec(hash_buckets: int, numeric: int = 13, categorical: int = 26):
    """`criteo.spec(hash_buckets)`, trimmed to I1..I<numeric> and C1..C<categorical> (and the
    crosses of the categoricals kept); the full spec by default."""
    from wdl_tf import features as fs
    from wdl_tf.datasets import criteo

    spec = criteo.spec(hash_buckets)
    if numeric == len(criteo.INT_COLUMNS) and categorical == len(criteo.CAT_COLUMNS):
        return spec
    keep = set(criteo.INT_COLUMNS[:numeric]) | set(criteo.CAT_COLUMNS[:categorical])
    obj = spec.to_dict()
    obj["features"] = [f for f in obj["features"] if f["name"] in keep]
    obj["crosses"] = [c for c in obj.get("crosses", []) if set(c["features"]) <= keep]
    return fs.from_dict(obj)


def job_spec(job: dict):
    """The spec of one end-to-end configuration (a job dict of `train_e2e.training_jobs`)."""
    return benchmark_spec(job["hash_buckets"], job["numeric_features"], job["categorical_features"])
