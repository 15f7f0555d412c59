"""CSV → sharded TFRecord (tf.Example) conversion, for reading the same data many times.

Parsing text is most of the cost of a CSV epoch; TFRecord shards are parsed once here, with
the same row checks (`input_pipeline.read_raw`), and read back by `read_raw` like any other
split (``.tfrecord`` / ``.tfrecord.gz``), giving the same raw values and labels.

Examples are serialized batch-wise inside the tf.data pipeline by `tf.io.encode_proto`
(TensorFlow's own proto encoder, vectorized over the batch and over features), not by a
Python loop over rows: on 2 CPU cores it serializes ~80K Criteo rows/s where a loop of
`input_pipeline.make_example` manages ~4K. The tests check it against `make_example`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any

import tensorflow as tf

from wdl_tf import atomic
from wdl_tf import features as fs
from wdl_tf import input_pipeline as ip
from wdl_tf import preprocessing as pp

READ_BATCH_SIZE = 4096
# Feature's list field and its message type, by the dtype of the values.
_LISTS = {
    "float": ("float_list", "tensorflow.FloatList"),
    "string": ("bytes_list", "tensorflow.BytesList"),
    "int": ("int64_list", "tensorflow.Int64List"),
}


def _encode(message: str, fields: dict[str, tuple[tf.Tensor, tf.Tensor]]) -> tf.Tensor:
    """Serialized ``message``s of shape S from {field: (values [*S, N], counts [*S])}."""
    sizes = tf.stack([tf.cast(count, tf.int32) for _, count in fields.values()], axis=-1)
    return tf.io.encode_proto(
        sizes, [values for values, _ in fields.values()], list(fields), message
    )


def _feature_entries(names: list[str], lists: tf.Tensor, dtype: str) -> tf.Tensor:
    """Features.feature map entries [B, F] from serialized *List messages [B, F]."""
    field, _ = _LISTS[dtype]
    one = tf.ones(tf.shape(lists), tf.int32)
    feature = _encode("tensorflow.Feature", {field: (lists[..., None], one)})
    keys = tf.broadcast_to(tf.constant(names), tf.shape(lists))
    return _encode(
        "tensorflow.Features.FeatureEntry",
        {"key": (keys[..., None], one), "value": (feature[..., None], one)},
    )


def serialize_batch(spec: fs.FeatureSpec, raw: dict[str, Any], labels=None) -> tf.Tensor:
    """Serialized tf.Examples [B] of a batch of raw features (and labels [B, 1]).

    ``raw`` is what `input_pipeline.read_raw` yields: [B, 1] tensors (multivalent features
    as "a|b" strings or ragged lists). Numerics become float_list, string ids bytes_list,
    integer ids int64_list, multivalent features lists split on their separator, and the
    label a float_list under the spec's label name: what `input_pipeline.make_example` makes.
    """
    single: dict[str, tuple[list[str], list[tf.Tensor]]] = {d: ([], []) for d in _LISTS}
    entries = []
    for f in spec.features:
        if f.kind == fs.MULTIVALENT:
            ragged = pp.split_multivalent(f, raw[f.name])
            lists = _encode(
                _LISTS[f.dtype][1], {"value": (ragged.to_tensor(), ragged.row_lengths())}
            )
            entries.append(_feature_entries([f.name], lists[:, None], f.dtype))
        else:
            names, columns = single[f.dtype]
            names.append(f.name)
            columns.append(tf.reshape(raw[f.name], [-1]))
    if labels is not None:
        single["float"][0].append(spec.label.name)
        single["float"][1].append(tf.reshape(tf.cast(labels, tf.float32), [-1]))
    for dtype, (names, columns) in single.items():
        if names:
            values = tf.stack(columns, axis=1)[..., None]  # [B, F, 1]
            one = tf.ones(tf.shape(values)[:-1], tf.int32)
            lists = _encode(_LISTS[dtype][1], {"value": (values, one)})
            entries.append(_feature_entries(names, lists, dtype))
    entries = tf.concat(entries, axis=1)  # [B, all features]
    count = tf.fill(tf.shape(entries)[:1], tf.shape(entries)[1])
    features = _encode("tensorflow.Features", {"feature": (entries, count)})
    return _encode("tensorflow.Example", {"features": (features[:, None], tf.ones_like(count))})


@dataclasses.dataclass(frozen=True)
class Conversion:
    """What `convert` did: the shards written, rows written and dropped, seconds taken."""

    files: list[str]
    rows: int
    bad_rows: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return self.rows / max(self.seconds, 1e-9)


def shard_names(output_prefix: str, num_shards: int, compress: bool) -> list[str]:
    """``<prefix>-00000-of-00008.tfrecord[.gz]``, one per shard."""
    suffix = ".tfrecord.gz" if compress else ".tfrecord"
    return [f"{output_prefix}-{i:05d}-of-{num_shards:05d}{suffix}" for i in range(num_shards)]


def convert(
    spec: fs.FeatureSpec,
    csv_files: str | list[str],
    output_prefix: str,
    num_shards: int = 8,
    compress: bool = True,
    skip_bad_rows: bool = False,
    batch_size: int = READ_BATCH_SIZE,
) -> Conversion:
    """Converts CSV files to ``num_shards`` TFRecord shards; see `convert_csv_to_tfrecord`."""
    if num_shards < 1:
        raise ValueError(f"num_shards: must be >= 1, got {num_shards}")
    files = ip.resolve_files(csv_files)
    directory = os.path.dirname(output_prefix)
    if directory:
        os.makedirs(directory, exist_ok=True)
    counter = ip.BadRowCounter()
    opts = ip.ReadOptions(batch_size=batch_size, skip_bad_rows=skip_bad_rows)
    ds = (
        ip.read_raw(spec, files, opts, counter)
        .map(
            ip.as_written(lambda raw, y: serialize_batch(spec, raw, y)),
            num_parallel_calls=ip.AUTOTUNE,
            deterministic=True,
        )
        .prefetch(ip.AUTOTUNE)
    )

    paths = shard_names(output_prefix, num_shards, compress)
    options = tf.io.TFRecordOptions(compression_type="GZIP" if compress else "")
    rows = 0
    start = time.perf_counter()
    # Every shard is renamed into place only when all rows are written; removed on failure.
    with contextlib.ExitStack() as stack:
        tmps = [stack.enter_context(atomic.atomic_path(p)) for p in paths]
        writers = [stack.enter_context(tf.io.TFRecordWriter(t, options)) for t in tmps]
        try:
            for batch in ds:
                for record in batch.numpy():  # row i goes to shard i % num_shards
                    writers[rows % num_shards].write(record)
                    rows += 1
        except tf.errors.InvalidArgumentError as e:
            ip.raise_data_error(e)
    return Conversion(paths, rows, counter.count, time.perf_counter() - start)


def convert_csv_to_tfrecord(
    spec: fs.FeatureSpec,
    csv_files: str | list[str],
    output_prefix: str,
    num_shards: int = 8,
    compress: bool = True,
    skip_bad_rows: bool = False,
) -> list[str]:
    """Parses CSV files with the spec's row checks and writes them as sharded tf.Examples.

    Rows go round-robin to the shards (row i to shard i % num_shards), so reading the shards
    back with `input_pipeline.read_raw` (which interleaves up to 8 files, one record each)
    returns the rows in file order when ``num_shards <= 8``. Each shard is written to
    ``<name>.tmp-<pid>``; all are renamed when every row is written, and removed on failure.

    Args:
      spec: the feature spec that reads the CSV files (and names the Example features).
      csv_files: comma-separated files or globs, or a list of them (CSV, optionally .gz).
      output_prefix: shard path prefix (its directory is created).
      num_shards: number of shards.
      compress: GZIP the shards (``.tfrecord.gz``); otherwise ``.tfrecord``.
      skip_bad_rows: drop malformed rows instead of failing.

    Returns:
      The shard paths, ``<output_prefix>-00000-of-00008.tfrecord.gz`` and so on.

    Raises:
      DataError: a missing file, or a malformed row (file, line and field named) unless
        ``skip_bad_rows``.
    """
    return convert(spec, csv_files, output_prefix, num_shards, compress, skip_bad_rows).files
