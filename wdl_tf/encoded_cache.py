"""The encoded cache: training rows parsed and preprocessed once, read back on later epochs.

A run from CSV spends most of its input time parsing text and looking ids up, and it does
that again on every epoch although neither the files nor the preprocessing state change
during a run. The first epoch writes the encoded rows (ids and normalized numerics, the
model's inputs, with the label) through tf.data's own ``snapshot``; the following epochs
read them back and only shuffle and batch.

How the cached pipeline keeps training the same as the uncached one:

- The rows are written in file order (no shuffle before the cache), in blocks of
  `WRITE_BATCH` rows, so the snapshot's content depends only on the files, the split and the
  preprocessing state, never on an epoch's seed.
- Every pass (the writing one too) then mixes and batches the rows itself, on whole blocks:
  blocks are shuffled, merged into groups of about ``shuffle_buffer`` rows, each group
  permuted (a new permutation every pass, drawn from the seed) and sliced into batches of
  ``batch_size``. A per-row tf.data step (unbatch, a row shuffle buffer, padded_batch) cost
  more than training itself on 2 cores (BENCHMARKS.md). Without shuffling, or with a 1-row
  buffer, the batches are the uncached pipeline's, in file order.
- The snapshot is written in ``SHARDS`` shards, block ``i`` in shard ``i % SHARDS``, and read
  back with the shards interleaved block by block, in an order shuffled by the seed: with
  many files (one per day, say), a later epoch does not replay them in their fixed order.
- The key (a directory name) is a hash of the data files (path, size, modification time),
  the feature spec, the preprocessing state and every read option that selects rows or
  shapes them; any change writes a new cache and removes the old ones, so a stale cache is
  never read. A first epoch that does not finish leaves an unfinalized snapshot, which
  tf.data ignores and writes again.
- Rows that `--skip_bad_rows` drops are counted while the cache is written, not again when
  it is read.

Not cached: evaluation and validation data (read once per evaluation), and runs across
several workers (each worker would cache its own shard; off there for now).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil

import tensorflow as tf

from wdl_tf import features as fs
from wdl_tf import input_pipeline

log = logging.getLogger(__name__)

DIRNAME = "encoded_cache"
SHARDS = 8
# Rows per element written to the cache (parsing and preprocessing run on batches this big).
WRITE_BATCH = 1024
AUTOTUNE = tf.data.AUTOTUNE
_KEY_VERSION = 1  # bump when the cached elements' layout changes


def _file_identity(path: str) -> list:
    stat = tf.io.gfile.stat(path)
    return [os.path.abspath(path), int(stat.length), int(stat.mtime_nsec)]


def cache_key(files: list[str], spec: fs.FeatureSpec, state, read_options) -> str:
    """A hex digest of everything the cached rows depend on.

    ``read_options`` is an `input_pipeline.ReadOptions`; the fields that only order or
    batch rows (shuffle, seed, batch_size, deterministic) are left out, since the cache
    holds rows in file order and each epoch shuffles and batches them itself.
    """
    options = dataclasses.asdict(read_options)
    for name in ("shuffle", "shuffle_buffer", "seed", "batch_size", "deterministic"):
        options.pop(name, None)
    payload = {
        "version": _KEY_VERSION,
        "files": [_file_identity(f) for f in files],
        "spec": spec.to_json(),
        "state": {
            "rows_seen": state.rows_seen,
            "features": {k: dataclasses.asdict(v) for k, v in sorted(state.features.items())},
        },
        "read": options,
    }
    text = json.dumps(payload, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class EncodedCache:
    """Where one run's encoded rows live: ``<directory>/<key>``."""

    directory: str
    key: str

    @property
    def path(self) -> str:
        return os.path.join(self.directory, self.key)

    def remove_stale(self) -> list[str]:
        """Removes caches under ``directory`` with another key; returns their paths."""
        removed = []
        if not tf.io.gfile.isdir(self.directory):
            return removed
        for name in tf.io.gfile.listdir(self.directory):
            name = name.rstrip("/")
            if name != self.key:
                stale = os.path.join(self.directory, name)
                shutil.rmtree(stale, ignore_errors=True)
                removed.append(stale)
        return removed

    def disk_bytes(self) -> int:
        """Bytes the cache takes on disk (0 before anything was written)."""
        total = 0
        for root, _, names in os.walk(self.path):
            for name in names:
                try:
                    total += os.path.getsize(os.path.join(root, name))
                except OSError:  # a shard being replaced
                    pass
        return total

    def is_complete(self) -> bool:
        """Whether a finalized snapshot exists (what later epochs read)."""
        for root, _, names in os.walk(self.path):
            if "snapshot.metadata" in names and any(
                os.path.isdir(os.path.join(root, d)) for d in os.listdir(root)
            ):
                return True
        return False


def for_run(model_dir: str, files, spec, state, read_options) -> EncodedCache:
    """The cache of this run's training rows under ``model_dir``; removes stale ones."""
    cache = EncodedCache(
        os.path.join(model_dir, DIRNAME), cache_key(files, spec, state, read_options)
    )
    for stale in cache.remove_stale():
        log.info("encoded cache: removed %s (data or preprocessing changed)", stale)
    return cache


def _cached_blocks(
    encoded: tf.data.Dataset, cache: EncodedCache, seed: int | None
) -> tf.data.Dataset:
    """Encoded blocks in file order → the same blocks, through the cache.

    ``encoded`` yields (inputs dict of [B, ...] tensors, label [B, 1]) in file order: written
    to the snapshot on the first full pass (as they come), read from it on the following
    ones, the shards interleaved block by block: in their own order (block i is in shard
    i % SHARDS, so that is file order again) or, with a ``seed``, in an order shuffled by it.
    """

    def shard(index, element):
        return index % SHARDS

    def read(shards: tf.data.Dataset) -> tf.data.Dataset:
        if seed is not None:
            shards = shards.shuffle(SHARDS, seed=seed, reshuffle_each_iteration=True)
        return shards.interleave(
            input_pipeline.as_written(lambda d: d), cycle_length=SHARDS, block_length=1
        )

    ds = encoded.enumerate().snapshot(
        cache.path,
        shard_func=input_pipeline.as_written(shard),
        reader_func=input_pipeline.as_written(read),
    )
    return ds.map(input_pipeline.as_written(lambda index, element: element))


def _groups(blocks: tf.data.Dataset, opts, padded: frozenset[str]) -> tf.data.Dataset:
    """Blocks → groups of ~``shuffle_buffer`` rows, their rows in a random order (shuffle)
    or in block order. Everything is done on
    whole tensors: a per-row tf.data step (unbatch, a row shuffle buffer, padded_batch)
    cost more than training itself.

    With shuffling, blocks are shuffled in a window of two groups first, so a group holds
    blocks from all over the data; each group's permutation is drawn from ``seed``, anew on
    every pass. Multivalent inputs of the blocks in a group are padded (id 0)
    to the group's longest list.
    """
    per_group = max(1, -(-opts.shuffle_buffer // WRITE_BATCH))
    if opts.shuffle:
        blocks = blocks.shuffle(2 * per_group, seed=opts.seed, reshuffle_each_iteration=True)

    def merge(inputs, label):
        out = {}
        for name, value in inputs.items():
            value = value.merge_dims(0, 1)
            out[name] = value.to_tensor(0) if name in padded else value
        return out, label.merge_dims(0, 1)

    groups = blocks.ragged_batch(per_group).map(
        input_pipeline.as_written(merge), num_parallel_calls=AUTOTUNE
    )
    if not opts.shuffle:
        return groups

    def permute(element, draw):
        inputs, label = element
        keys = tf.random.stateless_uniform(tf.shape(label)[:1], seed=tf.stack([draw, 0]))
        order = tf.argsort(keys)
        return tf.nest.map_structure(lambda t: tf.gather(t, order), (inputs, label))

    # One draw per group, different on every pass (a new order each epoch) and fixed by
    # the seed (a run is reproducible, and a resumed epoch sees the same batches).
    draws = tf.data.Dataset.random(seed=opts.seed, rerandomize_each_iteration=True)
    return tf.data.Dataset.zip(groups, draws).map(
        input_pipeline.as_written(permute), num_parallel_calls=AUTOTUNE
    )


def _batches(groups: tf.data.Dataset, batch_size: int, padded: frozenset[str]):
    """Each group sliced into batches of ``batch_size`` rows, for inputs with multivalent
    features, whose widths differ between groups (so the group's last batch may be
    smaller, unlike the uncached pipeline's; without multivalent inputs, `rebatch` carries
    the rest over); a multivalent input is cut to the longest list of its batch, as the uncached
    pipeline pads it (rows are left-aligned, pads are trailing id 0)."""

    def split(inputs, label):
        n = tf.shape(label, out_type=tf.int64)[0]

        def piece(start):
            end = tf.minimum(start + batch_size, n)
            out = {}
            for name, value in inputs.items():
                value = value[start:end]
                if name in padded:
                    width = tf.reduce_max(tf.reduce_sum(tf.cast(value != 0, tf.int32), axis=1))
                    value = value[:, :width]
                out[name] = value
            return out, label[start:end]

        return tf.data.Dataset.range(0, n, batch_size).map(input_pipeline.as_written(piece))

    return groups.flat_map(input_pipeline.as_written(split))


def training_dataset(
    spec: fs.FeatureSpec,
    files: list[str],
    opts: input_pipeline.ReadOptions,
    preprocessor,
    cache: EncodedCache,
    counter: input_pipeline.BadRowCounter | None = None,
) -> tf.data.Dataset:
    """Batches of (encoded inputs, label), like `input_pipeline.make_dataset`, through the
    cache: rows read in file order and encoded in blocks of `WRITE_BATCH`, cached, then
    mixed (when ``opts.shuffle``) in groups of about ``opts.shuffle_buffer`` rows drawn
    from shuffled blocks, and sliced into batches of ``opts.batch_size``. One pass per
    iteration; the caller repeats or skips batches as it would without a cache."""
    write = dataclasses.replace(opts, shuffle=False, batch_size=WRITE_BATCH)
    encoded = input_pipeline.read_raw(spec, files, write, counter).map(
        input_pipeline.encoding(preprocessor),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    padded = frozenset(f.name for f in preprocessor.encoded_features if f.kind == "multi_ids")
    shuffle = opts.shuffle and opts.shuffle_buffer > 1  # a 1-row buffer keeps the order
    blocks = _cached_blocks(encoded, cache, opts.seed if shuffle else None)
    groups = _groups(blocks, dataclasses.replace(opts, shuffle=shuffle), padded)
    if padded:  # widths differ between groups: each group is sliced on its own
        return _batches(groups, opts.batch_size, padded).prefetch(AUTOTUNE)
    # Full batches across group boundaries, as the uncached pipeline's (the same batches,
    # in file order, without shuffling).
    return groups.rebatch(opts.batch_size).prefetch(AUTOTUNE)
