"""Keras preprocessing layers built from a FeatureSpec: lookup, hashing, crossing, buckets, CDF.

The same `FeaturePreprocessor` runs in the tf.data map for training (in parallel, on batches)
and inside the exported SavedModel for serving, so a served model takes raw features
(docs/design.md §3.5). What it learns from data (vocabularies, quantiles, moments) is computed once
by `adapt` from a bounded pass over the training data, kept in a `PreprocessingState` and
written next to the checkpoints, so a resumed run encodes ids exactly as before.

Encoded features (the model's inputs), by kind:

* numeric ``f``: ``f`` float32 [B, 1], the normalized value; ``f_bucket`` int64 [B, 1] when
  bucketized.
* categorical ``f``: ``f`` int64 [B, 1], ids in [0, size).
* multivalent ``f``: ``f`` int64 [B, L], ids in [1, size) padded with 0 (the row of id 0 is
  never used), L the longest list in the batch.
* cross ``c``: ``c.key`` int64, [B, 1] or [B, L] like multivalent when it crosses a list.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from wdl_tf import atomic
from wdl_tf import features as fs

PAD_ID = 0  # id of padding in multivalent features and crosses
CROSS_SEPARATOR = "_X_"
# Stands in for an empty learned vocabulary (Keras lookups need one token).
EMPTY_VOCABULARY_TOKEN = "<wdl_tf: empty vocabulary>"


@dataclasses.dataclass
class FeatureState:
    """What preprocessing learned about one feature from the training data."""

    vocabulary: list | None = None
    cdf_boundaries: list[float] | None = None
    bucket_boundaries: list[float] | None = None
    mean: float | None = None
    std: float | None = None


@dataclasses.dataclass
class PreprocessingState:
    """Everything `adapt` learned; saved as preprocessing.json (+ vocabularies/*.txt)."""

    features: dict[str, FeatureState]
    rows_seen: int = 0

    FILENAME = "preprocessing.json"

    def save(self, directory: str) -> None:
        os.makedirs(os.path.join(directory, "vocabularies"), exist_ok=True)
        obj = {
            "rows_seen": self.rows_seen,
            "features": {k: _drop_none(dataclasses.asdict(v)) for k, v in self.features.items()},
        }
        atomic.write_text(os.path.join(directory, self.FILENAME), json.dumps(obj, indent=1))
        for name, state in self.features.items():
            if state.vocabulary is not None:
                atomic.write_text(
                    os.path.join(directory, "vocabularies", f"{name}.txt"),
                    "".join(f"{token}\n" for token in state.vocabulary),
                )

    @classmethod
    def load(cls, directory: str) -> PreprocessingState:
        with open(os.path.join(directory, cls.FILENAME)) as f:
            obj = json.load(f)
        return cls(
            features={k: FeatureState(**v) for k, v in obj["features"].items()},
            rows_seen=obj["rows_seen"],
        )

    @classmethod
    def exists(cls, directory: str) -> bool:
        return os.path.exists(os.path.join(directory, cls.FILENAME))


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


# ----------------------------------------------------------------------------------------
# Adapt: one bounded pass over raw training batches.


def vocabulary_from_counts(counts: collections.Counter, vocab: fs.VocabularySpec) -> list:
    """Tokens with count >= min_count, most frequent first (ties by token, for determinism)."""
    kept = [(t, c) for t, c in counts.items() if c >= vocab.min_count]
    kept.sort(key=lambda tc: (-tc[1], str(tc[0])))
    if vocab.max_tokens is not None:
        kept = kept[: vocab.max_tokens]
    return [t for t, _ in kept]


# ----------------------------------------------------------------------------------------
# Evolving vocabularies: continuous training (paper §3) learns a vocabulary per span of data.

# Int placeholders lie below this: far from any id that parsed data holds.
_FREE_INT_BASE = int(np.iinfo(np.int64).min) + 1


def free_id_token(dtype: str, index: int) -> str | int:
    """The placeholder that holds freed vocabulary index ``index`` until a new token takes it.

    It cannot occur in parsed data, so the id is never looked up; keeping it (rather than
    closing the gap) is what lets every later token keep its id.
    """
    if dtype == "int":
        return _FREE_INT_BASE + index
    return f"<wdl_tf: free id {index}>"


def is_free_id_token(token: Any) -> bool:
    if isinstance(token, str):
        return token.startswith("<wdl_tf: free id ")
    return int(token) < _FREE_INT_BASE + 2**62


@dataclasses.dataclass
class TokenHistory:
    """What an evolving vocabulary remembers between spans (one feature).

    Attributes:
      window: (span, token counts) of the most recent spans, oldest first: admission counts
        a token over them.
      last_seen: the last span each token of the vocabulary (or of the window) was seen in:
        eviction looks at it.
    """

    window: list[tuple[int, dict]] = dataclasses.field(default_factory=list)
    last_seen: dict = dataclasses.field(default_factory=dict)

    def add_span(self, span: int, counts: dict, window_spans: int) -> None:
        """Records one span's counts; keeps the last ``window_spans`` spans in the window."""
        if self.window and span <= self.window[-1][0]:
            raise ValueError(f"span {span} is not after the last recorded {self.window[-1][0]}")
        self.window = [*self.window, (span, {t: c for t, c in counts.items() if c > 0})]
        self.window = self.window[-window_spans:]
        for token, count in counts.items():
            if count > 0:
                self.last_seen[token] = span

    def windowed_counts(self) -> collections.Counter:
        total = collections.Counter()
        for _, counts in self.window:
            total.update(counts)
        return total

    def forget(self, vocabulary: list) -> None:
        """Drops last_seen entries of tokens neither in ``vocabulary`` nor in the window."""
        keep = set(vocabulary).union(*(c.keys() for _, c in self.window))
        self.last_seen = {t: s for t, s in self.last_seen.items() if t in keep}

    def to_json(self) -> dict:
        return {
            "window": [[span, sorted(c.items(), key=str)] for span, c in self.window],
            "last_seen": sorted(self.last_seen.items(), key=str),
        }

    @classmethod
    def from_json(cls, obj: dict) -> TokenHistory:
        return cls(
            window=[(int(span), {t: int(c) for t, c in pairs}) for span, pairs in obj["window"]],
            last_seen={t: int(s) for t, s in obj["last_seen"]},
        )


def evolve_vocabulary(
    previous: list,
    history: TokenHistory,
    span: int,
    vocab: fs.VocabularySpec,
    evict_after_spans: int,
    dtype: str = "string",
) -> list:
    """The vocabulary of ``span`` from the previous span's and the history (which already
    holds ``span``'s counts). A token's id is its index here (plus the OOV buckets).

    * Kept: a token of ``previous`` seen in the last ``evict_after_spans`` spans keeps its
      index, so warm start copies its rows.
    * Evicted: a token of ``previous`` unseen for ``evict_after_spans`` spans; its index is
      freed.
    * Admitted: a new token seen at least ``min_count`` times over the window (and not so
      long ago that it would be evicted at once), most frequent first (ties by token). It
      takes the lowest freed index, or a new one at the end. ``max_tokens`` caps the live
      tokens; kept tokens are never displaced by new ones.

    Freed indexes are reused rather than left behind: with churn (new apps every day) an
    append-only vocabulary grows the wide and embedding tables without bound, and one at
    ``max_tokens`` could never admit a new token again. Reuse is safe because warm start
    copies rows by token: a new token in a reused index starts from a fresh row, not the
    evicted token's. Indexes still free hold `free_id_token` placeholders (trailing ones
    are dropped). From an empty ``previous`` this is `vocabulary_from_counts` over the window.
    """
    if evict_after_spans < 1:
        raise ValueError(f"evict_after_spans: must be >= 1, got {evict_after_spans}")

    def recent(token) -> bool:
        return token in history.last_seen and span - history.last_seen[token] < evict_after_spans

    slots = [t if not is_free_id_token(t) and recent(t) else None for t in previous]
    live = {t for t in slots if t is not None}
    totals = history.windowed_counts()
    new = [
        (t, c) for t, c in totals.items() if t not in live and c >= vocab.min_count and recent(t)
    ]
    new.sort(key=lambda tc: (-tc[1], str(tc[0])))
    if vocab.max_tokens is not None:
        new = new[: max(vocab.max_tokens - len(live), 0)]
    incoming = iter(t for t, _ in new)
    for i, token in enumerate(slots):
        if token is None:
            slots[i] = next(incoming, None)
    slots.extend(incoming)
    while slots and slots[-1] is None:
        slots.pop()
    return [free_id_token(dtype, i) if t is None else t for i, t in enumerate(slots)]


def quantile_boundaries(values: np.ndarray, num_quantiles: int) -> list[float]:
    """Cut points between n_q equal-mass quantiles (k/n_q for k = 1..n_q-1), deduplicated."""
    if values.size == 0:
        return [0.0]
    qs = np.quantile(values, np.arange(1, num_quantiles) / num_quantiles)
    return [float(b) for b in np.unique(qs)]


def _flat_tokens(feature: fs.FeatureConfig, value: tf.Tensor | tf.RaggedTensor) -> tf.Tensor:
    if feature.kind == fs.MULTIVALENT:
        return split_multivalent(feature, value).flat_values
    return tf.reshape(value, [-1])


def _scan(spec: fs.FeatureSpec, raw_batches: Iterable[dict[str, Any]], max_rows: int):
    """One bounded pass: token counts per vocabulary feature, numeric values, rows read."""
    counters = {f.name: collections.Counter() for f in spec.features if f.vocabulary is not None}
    numeric = {f.name: [] for f in spec.features if f.kind == fs.NUMERIC}
    rows = 0
    for batch in raw_batches:
        for name, counter in counters.items():
            tokens, _, counts = tf.unique_with_counts(_flat_tokens(spec.feature(name), batch[name]))
            tokens = tokens.numpy()
            if tokens.dtype == object:
                tokens = [t.decode("utf-8", "replace") for t in tokens]
            else:
                tokens = tokens.tolist()
            counter.update(dict(zip(tokens, counts.numpy().tolist())))
            # A missing value is parsed as the feature's default, which must stay OOV.
            counter.pop(spec.feature(name).raw_default, None)
        for name, chunks in numeric.items():
            chunks.append(np.asarray(batch[name], dtype=np.float64).reshape(-1))
        rows += int(next(iter(batch.values())).shape[0])
        if rows >= max_rows:
            break
    return counters, numeric, rows


def adapt(
    spec: fs.FeatureSpec, raw_batches: Iterable[dict[str, Any]], max_rows: int = 1_000_000
) -> PreprocessingState:
    """Learns vocabularies, quantiles and moments from at most ``max_rows`` training rows.

    Args:
      spec: the feature spec.
      raw_batches: batches of raw features (dicts of [B, 1] tensors, as the input pipeline
        parses them, labels excluded).
      max_rows: bound on the rows read; the pass stops after the batch that reaches it.
    """
    return adapt_and_count(spec, raw_batches, max_rows)[0]


def adapt_and_count(
    spec: fs.FeatureSpec, raw_batches: Iterable[dict[str, Any]], max_rows: int = 1_000_000
) -> tuple[PreprocessingState, dict[str, collections.Counter]]:
    """`adapt`, also returning the token counts of every vocabulary feature (missing values
    left out): what `evolve_vocabulary` needs from a span of data, in the same pass."""
    counters, numeric, rows = _scan(spec, raw_batches, max_rows)
    if rows == 0:
        raise ValueError("cannot adapt preprocessing: the training data has no rows")
    states = {}
    for f in spec.features:
        state = FeatureState()
        if f.vocabulary is not None:
            state.vocabulary = vocabulary_from_counts(counters[f.name], f.vocabulary)
        if f.kind == fs.NUMERIC:
            values = np.concatenate(numeric[f.name])
            state.mean = float(values.mean())
            state.std = float(values.std())
            if f.normalization == "cdf":
                state.cdf_boundaries = quantile_boundaries(values, f.num_quantiles)
            if f.bucketize is not None:
                state.bucket_boundaries = (
                    list(f.bucketize.boundaries)
                    if f.bucketize.boundaries is not None
                    else quantile_boundaries(values, f.bucketize.num_quantiles)
                )
        states[f.name] = state
    return PreprocessingState(features=states, rows_seen=rows), counters


# ----------------------------------------------------------------------------------------
# Layers.


@keras.saving.register_keras_serializable(package="wdl_tf")
class CdfNormalization(keras.layers.Layer):
    """Maps a value to its empirical quantile in [0, 1] (paper P7).

    With cut points b_1 < ... < b_m between n_q = m + 1 equal-mass quantiles, a value in the
    i-th quantile (i = 1 + #{k: b_k <= x}) maps to (i - 1) / (n_q - 1) = #{k: b_k <= x} / m.
    """

    def __init__(self, boundaries: list[float], **kwargs):
        super().__init__(**kwargs)
        self.boundaries = [float(b) for b in boundaries]
        self._discretize = keras.layers.Discretization(bin_boundaries=self.boundaries)

    def call(self, x):
        bucket = tf.cast(self._discretize(x), tf.float32)
        return bucket / float(max(len(self.boundaries), 1))

    def get_config(self):
        return {**super().get_config(), "boundaries": self.boundaries}


@dataclasses.dataclass(frozen=True)
class EncodedFeature:
    """One model input produced by the preprocessor.

    Attributes:
      name: input name.
      kind: ``dense`` (float [B,1]), ``ids`` (int64 [B,1]) or ``multi_ids`` (int64 [B,L], 0 = pad).
      size: number of ids (table rows, including the pad row for multi_ids); 1 for dense.
      wide: whether the wide part reads it.
      deep: whether the deep part reads it.
      embedding_dim: embedding size for ids in the deep part.
      combiner: pooling of multi_ids embeddings (the deep part).
      wide_combiner: pooling of multi_ids weights (the wide part).
    """

    name: str
    kind: str
    size: int
    wide: bool
    deep: bool
    embedding_dim: int = fs.DEFAULT_EMBEDDING_DIM
    combiner: str = "mean"
    wide_combiner: str = "sum"


def split_multivalent(feature: fs.FeatureConfig, value) -> tf.RaggedTensor:
    """A multivalent raw value ("a|b|c" strings [B,1] from CSV, or a ragged list from
    TFRecord) as ragged [B, None], int64 for an ``int`` feature. The one splitter: the
    preprocessor and the TFRecord writer read lists alike."""
    if isinstance(value, tf.RaggedTensor):
        ragged = value if value.ragged_rank == 1 else value.merge_dims(1, -1)
    else:
        text = tf.reshape(value, [-1])
        ragged = tf.strings.split(text, sep=feature.separator)
        # "" is the empty list, not a list with one empty token.
        ragged = tf.ragged.boolean_mask(ragged, tf.strings.length(ragged) > 0)
        if feature.dtype == "int":
            ragged = tf.strings.to_number(ragged, out_type=tf.int64)
    if feature.dtype == "int":
        ragged = tf.cast(ragged, tf.int64)
    return ragged


class FeaturePreprocessor(keras.layers.Layer):
    """Encodes raw features (dict of [B,1] tensors) into the model's inputs.

    Built from a FeatureSpec and the `PreprocessingState` that `adapt` learned. Uses
    StringLookup/IntegerLookup (vocabulary with min_count and OOV buckets), Hashing,
    HashedCrossing (crosses of single-valued features), an element-wise hashed cross for
    crosses with a multivalent feature, Discretization (buckets), Normalization (zscore) and
    `CdfNormalization`.
    """

    def __init__(self, spec: fs.FeatureSpec, state: PreprocessingState, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.state = state
        self._encoded: list[EncodedFeature] = []
        self._lookups = {}
        self._normalizers = {}
        self._bucketizers = {}
        self._crossers = {}
        for f in spec.features:
            st = state.features[f.name]
            if f.kind == fs.NUMERIC:
                self._build_numeric(f, st)
            else:
                self._build_categorical(f, st)
        for c in spec.crosses:
            multivalent = spec.cross_is_multivalent(c)
            if not multivalent:
                self._crossers[c.key] = keras.layers.HashedCrossing(
                    c.hash_buckets, name=f"cross_{c.key}"
                )
            # A multivalent cross pools like its list feature does in the wide part.
            lists = [spec.feature(n) for n in c.features if spec.feature(n).kind == fs.MULTIVALENT]
            self._encoded.append(
                EncodedFeature(
                    name=c.key,
                    kind="multi_ids" if multivalent else "ids",
                    size=c.hash_buckets + (1 if multivalent else 0),
                    wide=True,
                    deep=False,
                    wide_combiner=lists[0].wide_combiner if lists else "sum",
                )
            )

    def _build_numeric(self, f: fs.FeatureConfig, st: FeatureState) -> None:
        if f.normalization == "cdf":
            self._normalizers[f.name] = CdfNormalization(st.cdf_boundaries, name=f"cdf_{f.name}")
        elif f.normalization == "zscore":
            norm = keras.layers.Normalization(
                mean=st.mean, variance=max(st.std, 1e-12) ** 2, name=f"zscore_{f.name}"
            )
            # Built now: built lazily inside our first call, its constants would belong to
            # that call's graph and be unusable from the next one.
            norm.build((None, 1))
            self._normalizers[f.name] = norm
        if f.bucketize is not None:
            self._bucketizers[f.name] = keras.layers.Discretization(
                bin_boundaries=st.bucket_boundaries, name=f"buckets_{f.name}"
            )
            if f.wide:
                self._encoded.append(
                    EncodedFeature(
                        f"{f.name}_bucket", "ids", len(st.bucket_boundaries) + 1, True, False
                    )
                )
        dense_wide = f.wide and f.bucketize is None
        if f.deep or dense_wide:
            self._encoded.append(EncodedFeature(f.name, "dense", 1, dense_wide, f.deep))

    def _build_categorical(self, f: fs.FeatureConfig, st: FeatureState) -> None:
        if f.hash_buckets:
            layer = keras.layers.Hashing(f.hash_buckets, name=f"hash_{f.name}")
            size = f.hash_buckets
        else:
            cls = keras.layers.StringLookup if f.dtype == "string" else keras.layers.IntegerLookup
            layer = cls(
                vocabulary=st.vocabulary if st.vocabulary else None,
                num_oov_indices=f.vocabulary.num_oov_buckets,
                name=f"lookup_{f.name}",
            )
            if not st.vocabulary:
                # An empty vocabulary: every value is OOV. Keras needs a vocabulary to build
                # its table, so give it a token that cannot occur in parsed data.
                layer.set_vocabulary(
                    [EMPTY_VOCABULARY_TOKEN] if f.dtype == "string" else [np.iinfo(np.int64).min]
                )
            size = layer.vocabulary_size()
        self._lookups[f.name] = layer
        multi = f.kind == fs.MULTIVALENT
        self._encoded.append(
            EncodedFeature(
                name=f.name,
                kind="multi_ids" if multi else "ids",
                size=size + (1 if multi else 0),
                wide=f.wide,
                deep=f.deep,
                embedding_dim=f.embedding_dim,
                combiner=f.combiner,
                wide_combiner=f.wide_combiner,
            )
        )

    @property
    def encoded_features(self) -> list[EncodedFeature]:
        return list(self._encoded)

    def _encode_ids(self, f: fs.FeatureConfig, raw) -> tf.Tensor:
        layer = self._lookups[f.name]
        if f.kind != fs.MULTIVALENT:
            return tf.cast(layer(raw), tf.int64)
        ragged = split_multivalent(f, raw)
        ids = tf.cast(layer(ragged.flat_values), tf.int64) + 1
        return ragged.with_flat_values(ids).to_tensor(default_value=PAD_ID)

    def _cross_value(self, name: str, raw: dict) -> Any:
        """A constituent of a cross: raw value, or the bucket id of a numeric feature."""
        f = self.spec.feature(name)
        if f.kind == fs.NUMERIC:
            return tf.cast(self._bucketizers[name](raw[name]), tf.int64)
        if f.kind == fs.MULTIVALENT:
            return split_multivalent(f, raw[name])
        return raw[name]

    def _multivalent_cross(self, cross: fs.CrossConfig, raw: dict) -> tf.Tensor:
        """Crosses every element of the list with the single-valued features (paper P2)."""
        values = [self._cross_value(n, raw) for n in cross.features]
        ragged = next(v for v in values if isinstance(v, tf.RaggedTensor))
        lengths = ragged.row_lengths()
        parts = []
        for v in values:
            if isinstance(v, tf.RaggedTensor):
                flat = v.flat_values
            else:
                flat = tf.repeat(tf.reshape(v, [-1]), lengths)
            parts.append(flat if flat.dtype == tf.string else tf.strings.as_string(flat))
        joined = tf.strings.join(parts, separator=CROSS_SEPARATOR)
        ids = tf.strings.to_hash_bucket_fast(joined, cross.hash_buckets) + 1
        return ragged.with_flat_values(ids).to_tensor(default_value=PAD_ID)

    def call(self, raw: dict) -> dict[str, tf.Tensor]:
        """Encodes a batch; ``raw`` maps feature names to [B, 1] tensors (or ragged lists)."""
        out = {}
        for f in self.spec.features:
            x = raw[f.name]
            if f.kind == fs.NUMERIC:
                x = tf.cast(x, tf.float32)
                if f.name in self._bucketizers and f.wide:
                    out[f"{f.name}_bucket"] = tf.cast(self._bucketizers[f.name](x), tf.int64)
                if f.deep or (f.wide and f.bucketize is None):
                    norm = self._normalizers.get(f.name)
                    out[f.name] = tf.cast(norm(x), tf.float32) if norm is not None else x
            else:
                out[f.name] = self._encode_ids(f, x)
        for c in self.spec.crosses:
            if c.key in self._crossers:
                values = tuple(self._cross_value(n, raw) for n in c.features)
                out[c.key] = tf.cast(self._crossers[c.key](values), tf.int64)
            else:
                out[c.key] = self._multivalent_cross(c, raw)
        return out
