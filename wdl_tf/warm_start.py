"""Warm start (paper P8): initialize a new model from a previous model directory.

The paper retrains on new data continuously and starts each model from the embeddings and
linear weights of the previous one. Vocabularies move between runs (new apps appear, rare
ones drop below min_count), so ids are not stable: rows are copied *by token*.

* Vocabulary features: every token in both vocabularies keeps its row (wide weight and
  embedding); new tokens keep their fresh initialization; OOV rows are copied when both
  models have the same number of OOV buckets.
* Hashed features and crosses: copied whole when the bucket counts match; a mismatch fails
  with a clear error (hashed ids cannot be remapped).
* Bucketized numerics: copied when the boundaries match, else an error.
* Every other variable (deep layers, dense wide weights, the bias): copied when the shapes
  match, reported as skipped otherwise.
* Optionally the optimizer slots (FTRL accumulators/linears, AdaGrad accumulators), with the
  same row mapping as their variables.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from wdl_tf import checkpoints, run_dir
from wdl_tf import features as fs
from wdl_tf import preprocessing as pp


class WarmStartError(ValueError):
    """The previous model cannot initialize this one (names the variable and why)."""


@dataclasses.dataclass
class WarmStartReport:
    copied: list[str] = dataclasses.field(default_factory=list)
    remapped: dict[str, int] = dataclasses.field(default_factory=dict)  # path → rows kept
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)  # path → reason


@dataclasses.dataclass(frozen=True)
class _Source:
    spec: fs.FeatureSpec
    state: pp.PreprocessingState
    reader: tf.train.CheckpointReader

    def tensor(self, group: str, path: str) -> np.ndarray | None:
        key = checkpoints.variable_key(group, path)
        return self.reader.get_tensor(key) if self.reader.has_tensor(key) else None


def _load_source(model_dir: str) -> _Source:
    ckpt = run_dir.latest_checkpoint(model_dir)
    if ckpt is None:
        raise WarmStartError(f"warm_start_from: no checkpoint in {model_dir!r}/checkpoints")
    spec = run_dir.load_spec(model_dir)
    return _Source(spec, pp.PreprocessingState.load(model_dir), checkpoints.reader(ckpt))


def vocabulary_rows(
    old_vocab: list, new_vocab: list, old_oov: int, new_oov: int, shift: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(new rows, old rows) to copy for a lookup feature: shared tokens, and OOV rows when
    both have as many OOV buckets. ``shift`` is 1 for multivalent features (row 0 = pad)."""
    old_index = {token: i for i, token in enumerate(old_vocab)}
    new_rows, old_rows = [], []
    if old_oov == new_oov:
        new_rows += [shift + i for i in range(new_oov)]
        old_rows += [shift + i for i in range(old_oov)]
    for j, token in enumerate(new_vocab):
        if token in old_index:
            new_rows.append(shift + new_oov + j)
            old_rows.append(shift + old_oov + old_index[token])
    return np.array(new_rows, dtype=np.int64), np.array(old_rows, dtype=np.int64)


def _table_rows(name: str, new: _Source, old: _Source):
    """How to copy the table of encoded feature ``name``: (new rows, old rows) or None (all)."""
    cross = {c.key: c for c in new.spec.crosses}
    if name in cross:
        old_cross = {c.key: c for c in old.spec.crosses}.get(name)
        if old_cross is None or old_cross.hash_buckets != cross[name].hash_buckets:
            before = old_cross.hash_buckets if old_cross else "no such cross"
            raise WarmStartError(
                f"cross {name!r}: hash bucket counts differ (previous {before}, now "
                f"{cross[name].hash_buckets}); hashed ids cannot be remapped"
            )
        return None
    if name.endswith("_bucket") and name[: -len("_bucket")] in new.spec.feature_names:
        base = name[: -len("_bucket")]
        before = old.state.features[base].bucket_boundaries
        now = new.state.features[base].bucket_boundaries
        if before != now:
            raise WarmStartError(f"{name!r}: bucket boundaries differ ({before} vs {now})")
        return None
    f = new.spec.feature(name)
    old_f = old.spec.feature(name)
    shift = 1 if f.kind == fs.MULTIVALENT else 0
    if f.hash_buckets:
        if old_f.hash_buckets != f.hash_buckets:
            raise WarmStartError(
                f"feature {name!r}: hash bucket counts differ (previous {old_f.hash_buckets}, "
                f"now {f.hash_buckets}); hashed ids cannot be remapped"
            )
        return None
    if old_f.vocabulary is None:
        raise WarmStartError(f"feature {name!r}: was hashed, now has a vocabulary")
    return vocabulary_rows(
        old.state.features[name].vocabulary,
        new.state.features[name].vocabulary,
        old_f.vocabulary.num_oov_buckets,
        f.vocabulary.num_oov_buckets,
        shift,
    )


def _encoded_name(path: str) -> str | None:
    """The encoded feature a table variable belongs to (``wide/x`` or ``deep/emb_x``)."""
    group, _, rest = path.partition("/")
    if group == "wide" and rest != "bias" and "/" not in rest:
        return rest
    if group == "deep" and rest.startswith("emb_"):
        return rest[len("emb_") :]
    return None


def _copy(target, value: np.ndarray, rows) -> int:
    if rows is None:
        target.assign(value)
        return value.shape[0] if value.ndim else 1
    new_rows, old_rows = rows
    current = np.array(target.numpy())
    current[new_rows] = value[old_rows]
    target.assign(current)
    return len(new_rows)


def warm_start(
    model: keras.Model,
    spec: fs.FeatureSpec,
    state: pp.PreprocessingState,
    previous_model_dir: str,
    include_optimizer: bool = False,
) -> WarmStartReport:
    """Initializes ``model`` (built for ``spec``/``state``) from a previous model dir.

    Args:
      include_optimizer: also copy the optimizer slots (the model's optimizer must be built).

    Raises:
      WarmStartError: no checkpoint, or a hashed/bucketized feature whose layout changed.
    """
    old = _load_source(previous_model_dir)
    new = _Source(spec, state, None)
    report = WarmStartReport()
    slot_owner = {}
    if include_optimizer and model.optimizer is not None:
        for v in model.trainable_variables:
            slot_owner[v.path.replace("/", "_")] = v.path
    for v in model.variables:
        _warm_one(v, v.path, checkpoints.MODEL, old, new, report)
    if include_optimizer and model.optimizer is not None:
        for v in model.optimizer.variables:
            _, _, slot = v.path.partition("/")
            owner = next((p for key, p in slot_owner.items() if slot.startswith(key + "_")), None)
            _warm_one(v, v.path, checkpoints.OPTIMIZER, old, new, report, owner)
    return report


def _warm_one(variable, path, group, old, new, report, owner: str | None = None) -> None:
    value = old.tensor(group, path)
    if value is None:
        report.skipped[path] = "not in the previous checkpoint"
        return
    name = _encoded_name(owner or path) if group == checkpoints.MODEL or owner else None
    rows = None
    if name is not None:
        rows = _table_rows(name, new, old)
    elif value.shape != tuple(variable.shape):
        report.skipped[path] = f"shape {value.shape} != {tuple(variable.shape)}"
        return
    if rows is None and value.shape != tuple(variable.shape):
        raise WarmStartError(f"{path}: shape {value.shape} != {tuple(variable.shape)}")
    count = _copy(variable, value, rows)
    if rows is None:
        report.copied.append(path)
    else:
        report.remapped[path] = count
