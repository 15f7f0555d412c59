"""tf.data readers for CSV and TFRecord (tf.Example) files: parse, check, batch, encode.

Files are streamed line by line (or record by record), never loaded whole into Python
memory. Rows are batched first and parsed vectorized, so there is no per-example Python and
no per-example op dispatch; the FeaturePreprocessor then runs in a parallel map.

A malformed CSV row (wrong number of fields, a non-number in a numeric column, a number
beyond float32, an unknown label) or a TFRecord holding a NaN or ±Inf number stops the
pipeline with a `DataError` naming the file, the line (record) and the field; with
``skip_bad_rows`` the row is dropped instead and counted in a `BadRowCounter`. Non-finite
numbers are refused, never read as missing (docs/export_contract.md).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import re
import threading
from typing import Any

import numpy as np
import tensorflow as tf

from wdl_tf import atomic
from wdl_tf import features as fs
from wdl_tf.data_files import DataError, resolve_files

AUTOTUNE = tf.data.AUTOTUNE
MALFORMED = "Malformed row: "
_NUMBER_RE = r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"
_INT_RE = r"[+-]?\d+"
TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrecord.gz", ".tfrecords.gz")


# tf.data traces each of this module's (and encoded_cache's) map/filter functions once per
# dataset. None of them branches on a tensor's value (their Python `if`s and `for`s are over
# the spec), so they are traced as written, without AutoGraph's source-to-source conversion:
# measured ~2 s of a 10 s tiny training run (`parse` alone ~0.23 s per dataset).
as_written = tf.autograph.experimental.do_not_convert


def encoding(preprocessor):
    """The map function (raw features, label) → (``preprocessor``'s encoded inputs, label)
    that every training and evaluation pipeline applies after `read_raw`."""
    return as_written(lambda raw, y: (preprocessor(raw), y))


def raise_data_error(error: tf.errors.OpError) -> None:
    """Turns a failed row check inside tf.data into a DataError with the clean message.

    Re-raises anything else unchanged.
    """
    # tf.debugging.Assert prints its data as "[<string>]", escaping quotes.
    match = re.search(re.escape(MALFORMED) + r"(.*)\]", error.message)
    if match:
        raise DataError(MALFORMED + match.group(1).replace("\\'", "'")) from None
    raise error


# A TFDS shard: ``<dataset>-<split>.tfrecord-00000-of-00001`` (`wdl_tf.datasets.tfds_files`).
_TFDS_SHARD_RE = re.compile(r"\.tfrecords?-\d+-of-\d+$")


def is_tfrecord(path: str) -> bool:
    return path.endswith(TFRECORD_SUFFIXES) or bool(_TFDS_SHARD_RE.search(path))


def _compression(path: str) -> str:
    return "GZIP" if path.endswith(".gz") else ""


class BadRowCounter:
    """Counts rows dropped with ``skip_bad_rows`` (a variable the tf.data map adds to)."""

    def __init__(self):
        self.variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_rows")

    @property
    def count(self) -> int:
        return int(self.variable.numpy())


@dataclasses.dataclass(frozen=True, eq=False)
class TimeSplit:
    """The validation split by time: a row is validation when its time >= its threshold.

    Made by `time_split` from the training files. ``user_keys`` (int64 hashes of the user
    column's values, sorted) and ``thresholds`` give each user's own threshold; a user not
    among them (beyond the bounded pass that made them) gets ``default_threshold``, the
    threshold of all rows by time. ``inf`` means "no validation rows".

    Attributes:
      time_column, user_column: the spec's ``split`` columns (user_column "" = global).
      fraction: the validation share it was made for.
      default_threshold: the global time threshold.
      user_keys, thresholds: per-user thresholds (empty without a user column).
      rows_seen: rows the pass read; validation_rows: how many of them are validation.
    """

    time_column: str
    user_column: str
    fraction: float
    default_threshold: float
    user_keys: np.ndarray
    thresholds: np.ndarray
    rows_seen: int = 0
    validation_rows: int = 0

    FILENAME = "validation_split.npz"

    def save(self, directory: str) -> None:
        """Writes ``<directory>/validation_split.npz`` (atomically)."""
        path = os.path.join(directory, self.FILENAME)
        with atomic.atomic_path(path) as tmp:  # ends in .npz: np.savez keeps the name
            np.savez(
                tmp,
                time_column=self.time_column,
                user_column=self.user_column,
                fraction=self.fraction,
                default_threshold=self.default_threshold,
                user_keys=self.user_keys,
                thresholds=self.thresholds,
                rows_seen=self.rows_seen,
                validation_rows=self.validation_rows,
            )

    @classmethod
    def load(cls, directory: str) -> TimeSplit | None:
        """The split saved in ``directory``, or None when there is none."""
        path = os.path.join(directory, cls.FILENAME)
        if not os.path.exists(path):
            return None
        with np.load(path) as z:
            return cls(
                time_column=str(z["time_column"]),
                user_column=str(z["user_column"]),
                fraction=float(z["fraction"]),
                default_threshold=float(z["default_threshold"]),
                user_keys=z["user_keys"],
                thresholds=z["thresholds"],
                rows_seen=int(z["rows_seen"]),
                validation_rows=int(z["validation_rows"]),
            )

    def matches(self, spec: fs.FeatureSpec, fraction: float) -> bool:
        """Whether this split was made for the spec's split columns and this fraction."""
        return (
            spec.split is not None
            and self.time_column == spec.split.time_column
            and self.user_column == spec.split.user_column
            and self.fraction == fraction
        )


@dataclasses.dataclass(frozen=True)
class ReadOptions:
    """How to read a split of the data.

    Attributes:
      batch_size: rows per batch (the last batch of an epoch may be smaller; with
        skip_bad_rows, a batch holding bad rows is smaller too).
      shuffle: shuffle files and rows (training); otherwise the order is fixed: each file in
        order, up to 8 files interleaved line by line.
      shuffle_buffer: rows held in the shuffle buffer.
      seed: seed of the shuffles.
      skip_bad_rows: drop malformed rows and count them instead of failing.
      split: ``None`` (all rows), ``train`` or ``validation``: a deterministic split of the
        rows, for tuning without touching the test set: by ``time_split`` when given (CSV
        only), else random, by a hash of (split_seed, file base name, line number).
      validation_fraction: share of rows in the ``validation`` split.
      split_seed: seed of the random split (apart from ``seed``, which changes per epoch).
      time_split: the split by time (see `TimeSplit`), or None for the random split.
      max_rows: stop after this many rows (None: all); used for the bounded adapt pass.
      deterministic: keep the order of parallel work fixed, so a run is reproducible given
        the seed (turn off for a little more throughput).
      num_shards, shard_index: read only shard ``shard_index`` of ``num_shards`` (one
        worker's part of the data in multi-worker training); 1 = everything.
      shard_files: shard by whole files (every num_shards-th file, in the given order) rather
        than by rows (every num_shards-th row that passes the split/header filters).
    """

    batch_size: int = 256
    shuffle: bool = False
    shuffle_buffer: int = 10_000
    seed: int = 0
    skip_bad_rows: bool = False
    split: str | None = None
    validation_fraction: float = 0.1
    split_seed: int = 0
    time_split: TimeSplit | None = None
    max_rows: int | None = None
    deterministic: bool = True
    num_shards: int = 1
    shard_index: int = 0
    shard_files: bool = False


def _interleave_args(files: list[str], opts: ReadOptions) -> dict[str, Any]:
    """Read up to 8 files at once, in parallel; rows stay in file order unless shuffling."""
    if len(files) == 1:
        return {"cycle_length": 1}
    return {
        "cycle_length": min(len(files), 8),
        "num_parallel_calls": AUTOTUNE,
        "deterministic": opts.deterministic,
    }


def _records(files: list[str], opts: ReadOptions, reader) -> tf.data.Dataset:
    """(file, 1-based record number, record) of every file, files interleaved, in the split.

    ``reader(path, compression)`` opens one file (TextLineDataset, TFRecordDataset).
    The random train/validation split hashes (split seed, file base name, record number):
    deterministic, and the same rows fall in the same split whatever the batch size,
    shuffling or directory.
    """

    def read(path, compression):
        records = reader(path, compression).enumerate(start=1)
        return records.map(as_written(lambda i, record: (path, i, record)))

    ds = tf.data.Dataset.from_tensor_slices((files, [_compression(f) for f in files]))
    if opts.shuffle:
        ds = ds.shuffle(len(files), seed=opts.seed, reshuffle_each_iteration=True)
    ds = ds.interleave(as_written(read), **_interleave_args(files, opts))
    if opts.split is None or opts.time_split is not None:
        return ds  # the time split needs parsed lines: `_lines` applies it
    prefix = f"{opts.split_seed}:" if opts.split_seed else ""

    def in_split(path, number, record):
        # The file's base name, not its path: the split survives moving the data (and a
        # synthetic dataset generated under another model dir).
        name = tf.strings.regex_replace(path, r".*[/\\]", "")
        key = tf.strings.join([prefix + name, tf.strings.as_string(number)], ":")
        in_val = tf.strings.to_hash_bucket_fast(key, 10_000) < int(
            opts.validation_fraction * 10_000
        )
        return in_val if opts.split == "validation" else ~in_val

    return ds.filter(as_written(in_split))


def _lines(files: list[str], spec: fs.FeatureSpec, opts: ReadOptions) -> tf.data.Dataset:
    """(file, line number, line) for every data line of every file, files interleaved."""
    csv = spec.csv

    def keep(path, lineno, line):
        text = tf.strings.strip(line)
        ok = (tf.strings.length(text) > 0) & (lineno > csv.skip_header_lines)
        if csv.comment_prefix:
            ok &= ~tf.strings.regex_full_match(text, re.escape(csv.comment_prefix) + ".*")
        return ok

    lines = _records(files, opts, lambda p, c: tf.data.TextLineDataset(p, compression_type=c))
    lines = lines.filter(as_written(keep))
    if opts.split is not None and opts.time_split is not None:
        lines = _apply_time_split(lines, spec, opts)
    return lines


# ----------------------------------------------------------------------------------------
# The validation split by time.


def _user_key(values: tf.Tensor) -> tf.Tensor:
    """int64 key of user column values (a 63-bit hash: collisions are negligible)."""
    return tf.strings.to_hash_bucket_fast(values, 2**63 - 1)


def _split_columns(spec: fs.FeatureSpec, skip_bad_rows: bool):
    """A function (files, line numbers, lines) [B] → (user keys int64 [B], times float64 [B],
    ok [B]) of the spec's split columns; a time that is not a number fails the pipeline with a
    `DataError` naming the file, line and value (with ``skip_bad_rows``: ok is False)."""
    csv = spec.csv
    split = spec.split
    ncols = len(csv.columns)
    time_col = csv.columns.index(split.time_column)
    user_col = csv.columns.index(split.user_column) if split.user_column else None

    def columns(path, lineno, lines):
        fields = tf.strings.split(lines, sep=csv.delimiter)
        nfields = fields.row_lengths()
        table = tf.strings.strip(fields.to_tensor(default_value="", shape=[None, ncols]))
        text = table[:, time_col]
        valid = tf.strings.regex_full_match(text, _NUMBER_RE) & tf.equal(nfields, ncols)
        times = tf.strings.to_number(tf.where(valid, text, "0"), out_type=tf.float64)
        users = (
            _user_key(table[:, user_col])
            if user_col is not None
            else tf.zeros_like(times, tf.int64)
        )
        if skip_bad_rows:
            return users, times, valid
        message = tf.strings.join(
            [
                path,
                ":",
                tf.strings.as_string(lineno),
                f": split time column '{split.time_column}' (column {time_col + 1}) value '",
                text,
                "' is not a number",
            ]
        )
        count_message = tf.strings.join(
            [
                path,
                ":",
                tf.strings.as_string(lineno),
                f": expected {ncols} fields, got ",
                tf.strings.as_string(nfields),
            ]
        )
        message = tf.where(tf.equal(nfields, ncols), message, count_message)
        first = tf.strings.join([MALFORMED, tf.boolean_mask(message, ~valid)[:1]])
        check = tf.debugging.Assert(tf.reduce_all(valid), [first], summarize=1)
        with tf.control_dependencies([check]):
            times = tf.identity(times)
        return users, times, valid

    return columns


def _apply_time_split(lines: tf.data.Dataset, spec: fs.FeatureSpec, opts: ReadOptions):
    """Keeps the lines of ``opts.split`` by `TimeSplit` (vectorized over batches of lines).

    A line whose time is not a number stops the pipeline (`DataError`); with
    ``skip_bad_rows`` it is in neither split.
    """
    ts = opts.time_split
    if spec.split is None or (ts.time_column, ts.user_column) != (
        spec.split.time_column,
        spec.split.user_column,
    ):
        raise DataError(
            f"the time split was made for time column {ts.time_column!r} and user column "
            f"{ts.user_column!r}, but the feature spec's split is {spec.split}"
        )
    columns = _split_columns(spec, opts.skip_bad_rows)
    default = tf.constant(ts.default_threshold, tf.float64)
    if ts.user_keys.size:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(ts.user_keys, tf.int64), tf.constant(ts.thresholds, tf.float64)
            ),
            default_value=default,
        )
    else:
        table = None
    want_validation = opts.split == "validation"

    def keep(path, lineno, line):
        users, times, ok = columns(path, lineno, line)
        threshold = table.lookup(users) if table is not None else tf.fill(tf.shape(times), default)
        in_validation = times >= threshold
        mask = ok & (in_validation if want_validation else ~in_validation)
        return (
            tf.boolean_mask(path, mask),
            tf.boolean_mask(lineno, mask),
            tf.boolean_mask(line, mask),
        )

    return lines.batch(4096).map(as_written(keep), deterministic=True).unbatch()


def _validation_count(n: int, fraction: float) -> int:
    """Validation rows of a group of ``n``: round(fraction * n)."""
    return int(math.floor(fraction * n + 0.5))


def time_split(
    spec: fs.FeatureSpec,
    files: str | list[str],
    fraction: float,
    max_rows: int = 1_000_000,
    skip_bad_rows: bool = False,
) -> TimeSplit:
    """Per-user (or global) time thresholds of the latest ``fraction`` of the training rows.

    One bounded pass (at most ``max_rows`` lines) reads only the split columns. Each user's
    rows are ordered by time; the last round(fraction × n) of them are validation, i.e. the
    user's threshold is the time of the first of them (rows tied with it are validation
    too). Without a user column, or for a user the pass did not reach, the threshold of all
    rows read applies.

    Raises:
      DataError: a time that is not a number (file, line, column and value named), or a
        spec without ``split``, or TFRecord files.
    """
    if spec.split is None:
        raise DataError("a time split needs the feature spec's 'split' (time_column)")
    files = resolve_files(files)
    if any(is_tfrecord(f) for f in files):
        raise DataError(
            f"the split by time column {spec.split.time_column!r} reads CSV files only, got "
            f"{files}; remove the spec's 'split' for a random split of TFRecord files"
        )
    lines = _lines(files, spec, ReadOptions()).take(max_rows).batch(8192)
    lines = lines.map(as_written(_split_columns(spec, skip_bad_rows)), deterministic=True)
    users, times = [], []
    try:
        for u, t, ok in lines:
            ok = ok.numpy()
            users.append(u.numpy()[ok])
            times.append(t.numpy()[ok])
    except tf.errors.InvalidArgumentError as e:
        raise_data_error(e)
    users_a = np.concatenate(users) if users else np.zeros(0, np.int64)
    times_a = np.concatenate(times) if times else np.zeros(0, np.float64)
    n = times_a.size
    k = _validation_count(n, fraction)
    default = float(np.sort(times_a)[n - k]) if k else math.inf
    keys = np.zeros(0, np.int64)
    thresholds = np.zeros(0, np.float64)
    validation_rows = int(np.sum(times_a >= default))
    if spec.split.user_column and n:
        order = np.lexsort((times_a, users_a))
        u_sorted, t_sorted = users_a[order], times_a[order]
        starts = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1]])
        sizes = np.diff(np.r_[starts, n])
        counts = np.floor(fraction * sizes + 0.5).astype(np.int64)
        keys = u_sorted[starts]
        first_val = np.minimum(starts + sizes - counts, n - 1)
        thresholds = np.where(counts > 0, t_sorted[first_val], math.inf)
        per_row = np.repeat(thresholds, sizes)
        validation_rows = int(np.sum(t_sorted >= per_row))
    return TimeSplit(
        time_column=spec.split.time_column,
        user_column=spec.split.user_column,
        fraction=float(fraction),
        default_threshold=default,
        user_keys=keys,
        thresholds=thresholds,
        rows_seen=int(n),
        validation_rows=validation_rows,
    )


def first_validation_row(spec: fs.FeatureSpec, files: list[str], opts: ReadOptions) -> bool:
    """Whether ``opts``' validation split of ``files`` holds at least one row (reads lines
    until the first one, without parsing the rest)."""
    opts = dataclasses.replace(opts, split="validation", shuffle=False, max_rows=None)
    files = resolve_files(files)
    if all(is_tfrecord(f) for f in files):
        ds = _records(files, opts, lambda p, c: tf.data.TFRecordDataset(p, compression_type=c))
    else:
        ds = _lines(files, spec, opts)
    try:
        return any(True for _ in ds.take(1))
    except tf.errors.InvalidArgumentError as e:
        raise_data_error(e)


def _first_bad_message(bad: list[tf.Tensor], messages: list[tf.Tensor]) -> tf.Tensor:
    """Per row, the message of its first failing check ("" when every check passed)."""
    out = tf.fill(tf.shape(bad[0]), "")
    for b, m in reversed(list(zip(bad, messages))):
        out = tf.where(b, m, out)
    return out


def _keep_good_rows(
    raw: dict[str, Any],
    labels: tf.Tensor,
    bad: list[tf.Tensor],
    messages: list[tf.Tensor],
    skip_bad_rows: bool,
    counter: BadRowCounter | None,
) -> tuple[dict[str, Any], tf.Tensor]:
    """A parsed batch without its bad rows (counted), or failing on the first bad row.

    ``bad[i]`` [B] marks the rows failing check i and ``messages[i]`` [B] says why.
    """
    row_message = _first_bad_message(bad, messages)
    row_ok = tf.equal(row_message, "")
    if skip_bad_rows:
        if counter is not None:
            counter.variable.assign_add(tf.reduce_sum(tf.cast(~row_ok, tf.int64)))
        raw = {
            k: (tf.ragged.boolean_mask if isinstance(v, tf.RaggedTensor) else tf.boolean_mask)(
                v, row_ok
            )
            for k, v in raw.items()
        }
        return raw, tf.boolean_mask(labels, row_ok)
    first = tf.strings.join([MALFORMED, tf.boolean_mask(row_message, ~row_ok)[:1]])
    check = tf.debugging.Assert(tf.reduce_all(row_ok), [first], summarize=1)
    with tf.control_dependencies([check]):
        labels = tf.identity(labels)
    return raw, labels


def _not_finite(values: tf.Tensor, where: list[Any], column: str) -> tuple[tf.Tensor, tf.Tensor]:
    """(bad [B], message [B]) of the rows whose number is NaN or ±Inf (the project refuses
    them everywhere: docs/export_contract.md); ``where`` [B] names the file and the row."""
    values = tf.reshape(values, [-1])
    message = tf.strings.join(
        where
        + [f"field '{column}' value '", tf.strings.as_string(values), "' is not a finite number"]
    )
    return ~tf.math.is_finite(values), message


def _csv_parser(spec: fs.FeatureSpec, skip_bad_rows: bool, counter: BadRowCounter | None):
    """A function (files, line numbers, lines) [B] → (raw features dict, label [B, 1])."""
    csv = spec.csv
    ncols = len(csv.columns)
    col = {name: j for j, name in enumerate(csv.columns)}
    label = spec.label
    known_labels = list(label.positive_values) + list(label.negative_values)

    def where_prefix(path, lineno, column=None):
        parts = [path, ":", tf.strings.as_string(lineno), ": "]
        if column is not None:
            parts.append(f"field '{column}' (column {col[column] + 1}) value '")
        return parts

    def parse(path, lineno, lines):
        fields = tf.strings.split(lines, sep=csv.delimiter)
        nfields = fields.row_lengths()
        table = tf.strings.strip(fields.to_tensor(default_value="", shape=[None, ncols]))
        bad = [tf.not_equal(nfields, ncols)]
        messages = [
            tf.strings.join(
                where_prefix(path, lineno)
                + [f"expected {ncols} fields, got ", tf.strings.as_string(nfields)]
            )
        ]

        def missing(values):
            miss = tf.equal(values, "")
            for na in csv.na_values:
                miss |= tf.equal(values, na)
            return miss

        raw = {}
        for f in spec.features:
            values = table[:, col[f.name]]
            miss = missing(values)
            if f.kind == fs.NUMERIC or (f.kind == fs.CATEGORICAL and f.dtype == "int"):
                pattern, what = (
                    (_NUMBER_RE, "a number")
                    if f.kind == fs.NUMERIC
                    else (
                        _INT_RE,
                        "an integer",
                    )
                )
                valid = tf.strings.regex_full_match(values, pattern)
                dtype = tf.float32 if f.kind == fs.NUMERIC else tf.int64
                bad.append(~miss & ~valid)
                messages.append(
                    tf.strings.join(
                        where_prefix(path, lineno, f.name) + [values, f"' is not {what}"]
                    )
                )
                number = tf.strings.to_number(tf.where(valid, values, "0"), out_type=dtype)
                if f.kind == fs.NUMERIC:  # e.g. 1e39 overflows float32 to inf
                    bad.append(~miss & valid & ~tf.math.is_finite(number))
                    messages.append(
                        tf.strings.join(
                            where_prefix(path, lineno, f.name)
                            + [values, "' is not a finite float32 number"]
                        )
                    )
                parsed = tf.where(miss | ~valid, tf.constant(f.raw_default, dtype), number)
            else:
                if f.kind == fs.MULTIVALENT and f.dtype == "int":
                    elements = tf.strings.split(values, sep=f.separator)
                    elements = tf.ragged.boolean_mask(elements, tf.strings.length(elements) > 0)
                    ok = tf.strings.regex_full_match(elements, _INT_RE)
                    bad.append(~miss & ~tf.reduce_all(ok, axis=1))
                    messages.append(
                        tf.strings.join(
                            where_prefix(path, lineno, f.name)
                            + [values, f"' is not a list of integers separated by '{f.separator}'"]
                        )
                    )
                parsed = tf.where(miss, tf.constant(f.raw_default, tf.string), values)
            raw[f.name] = tf.reshape(parsed, [-1, 1])
        label_values = table[:, col[label.name]]
        is_positive = tf.zeros_like(label_values, tf.bool)
        is_known = tf.zeros_like(label_values, tf.bool)
        for v in known_labels:
            is_known |= tf.equal(label_values, v)
            if v in label.positive_values:
                is_positive |= tf.equal(label_values, v)
        bad.append(~is_known)
        messages.append(
            tf.strings.join(
                where_prefix(path, lineno, label.name)
                + [label_values, f"' is not a label; allowed values are {known_labels}"]
            )
        )
        labels = tf.reshape(tf.cast(is_positive, tf.float32), [-1, 1])

        return _keep_good_rows(raw, labels, bad, messages, skip_bad_rows, counter)

    return parse


def _tfrecord_parser(spec: fs.FeatureSpec, skip_bad_rows: bool, counter: BadRowCounter | None):
    """A function (files, record numbers, records) [B] → (raw features dict, label [B, 1]).

    tf.io.parse_example checks types and value counts (failing the batch); this adds the
    row check parse_example lacks: a NaN or ±Inf number is a bad row, named by file, record
    number and field, or dropped and counted with ``skip_bad_rows``.
    """
    numeric = [f.name for f in spec.features if f.kind == fs.NUMERIC] + [spec.label.name]

    def parse(path, number, records):
        raw = parse_examples(spec, records, with_label=False)
        labels = example_labels(spec, records)
        where = [path, ":record ", tf.strings.as_string(number), ": "]
        columns = {**raw, spec.label.name: labels}
        checks = [_not_finite(columns[name], where, name) for name in numeric]
        bad, messages = [c[0] for c in checks], [c[1] for c in checks]
        return _keep_good_rows(raw, labels, bad, messages, skip_bad_rows, counter)

    return parse


def example_parse_spec(spec: fs.FeatureSpec, with_label: bool = True) -> dict[str, Any]:
    """tf.io.parse_example features for the spec (multivalent features are VarLen lists)."""
    out = {}
    for f in spec.features:
        if f.kind == fs.MULTIVALENT:
            out[f.name] = tf.io.RaggedFeature(tf.string if f.dtype == "string" else tf.int64)
        else:
            dtype = {"float": tf.float32, "string": tf.string, "int": tf.int64}[f.dtype]
            out[f.name] = tf.io.FixedLenFeature([1], dtype, default_value=[f.raw_default])
    if with_label:
        out[spec.label.name] = tf.io.FixedLenFeature([1], tf.float32)
    return out


def _decode(
    serialized: tf.Tensor, message: str, fields: list[str], dtypes: list
) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """(sizes [N, F], values: per field [N, max size]) of N serialized protos, N may be 0.

    decode_proto refuses an empty input, so one empty proto is decoded after the N.
    """
    result = tf.io.decode_proto(tf.concat([serialized, [""]], 0), message, fields, dtypes)
    return result.sizes[:-1], [v[:-1] for v in result.values]


def numeric_from_examples(
    serialized: tf.Tensor, features: list[fs.FeatureConfig]
) -> dict[str, tf.Tensor]:
    """Numeric features [B, 1] float32 from serialized tf.Examples, as protobuf parses them.

    Why not ``tf.io.parse_example``: TF Serving's REST Classify/Regress turn a JSON integer
    literal (``39``) into an int64_list, which parse_example refuses for a float feature.
    Why not ``decode_proto`` of ``Example.features``: TF Serving's ExampleListWithContext
    reaches the model as the serialized context followed by the serialized example, which
    protobuf parses as the two merged (the ``features`` field appears twice, its map
    entries concatenate and the last entry of a key wins); decode_proto keeps only the last
    occurrence of a singular field, losing the context. So this reads every ``features``
    occurrence (wire field 1, length-delimited and repeated, exactly as
    ``tensorflow.BytesList.value``), takes every map entry in wire order and keeps the last
    one of each key.

    Per feature: absent (or a Feature with no list set) → its default; one float or one
    int64 → that number. A bytes_list, or any other number of values, fails the request with
    InvalidArgument naming the feature, as parse_example does for the other kinds.
    """
    batch = tf.shape(serialized)[0]
    n_parts, (parts,) = _decode(serialized, "tensorflow.BytesList", ["value"], [tf.string])
    part_mask = tf.sequence_mask(n_parts[:, 0], tf.shape(parts)[1])
    part_rows = tf.boolean_mask(
        tf.broadcast_to(tf.range(batch)[:, None], tf.shape(parts)), part_mask
    )
    sizes, (entries,) = _decode(
        tf.boolean_mask(parts, part_mask), "tensorflow.Features", ["feature"], [tf.string]
    )
    present = tf.sequence_mask(sizes[:, 0], tf.shape(entries)[1])
    rows = tf.boolean_mask(tf.broadcast_to(part_rows[:, None], tf.shape(entries)), present)
    _, (keys, values) = _decode(
        tf.boolean_mask(entries, present),
        "tensorflow.Features.FeatureEntry",
        ["key", "value"],
        [tf.string, tf.string],
    )
    lists = ["bytes_list", "float_list", "int64_list"]
    kinds, (_, float_lists, int_lists) = _decode(
        tf.reshape(values, [-1]), "tensorflow.Feature", lists, [tf.string] * 3
    )
    keys = tf.reshape(keys, [-1])
    is_bytes, is_float, is_int = (kinds[:, i] > 0 for i in range(3))
    n_float, (floats,) = _decode(
        tf.reshape(float_lists, [-1]), "tensorflow.FloatList", ["value"], [tf.float32]
    )
    n_int, (ints,) = _decode(
        tf.reshape(int_lists, [-1]), "tensorflow.Int64List", ["value"], [tf.int64]
    )
    count = tf.where(is_float, n_float[:, 0], n_int[:, 0])
    first = tf.where(
        is_float,
        tf.pad(floats, [[0, 0], [0, 1]])[:, 0],
        tf.cast(tf.pad(ints, [[0, 0], [0, 1]])[:, 0], tf.float32),
    )
    # Entries of a row are consecutive and in wire order: a larger index is a later entry.
    order = tf.range(tf.size(keys))
    # One sentinel entry at index size(keys) stands for "absent".
    kind_set, is_bytes, count, first = (
        tf.concat([x, [fill]], 0)
        for x, fill in (
            (is_bytes | is_float | is_int, False),
            (is_bytes, False),
            (count, 1),
            (first, 0.0),
        )
    )
    out = {}
    for f in features:
        last = tf.math.unsorted_segment_max(
            tf.where(tf.equal(keys, f.name), order, -1), rows, batch
        )
        # No entry for the key (-1, or the lowest int32 for a row without entries).
        last = tf.where(last >= 0, last, tf.size(keys))
        has, n = tf.gather(kind_set, last), tf.gather(count, last)
        checks = [
            tf.debugging.Assert(
                ~tf.reduce_any(tf.gather(is_bytes, last)),
                [f"feature {f.name} is numeric: send a float or int64 value, not bytes"],
            ),
            tf.debugging.Assert(
                tf.reduce_all(~has | tf.equal(n, 1)),
                [
                    f"feature {f.name} is numeric: it takes exactly one value, got",
                    tf.boolean_mask(n, has & tf.not_equal(n, 1))[:1],
                ],
            ),
        ]
        with tf.control_dependencies(checks):
            value = tf.where(has, tf.gather(first, last), float(f.raw_default))
        out[f.name] = tf.reshape(value, [-1, 1])
    return out


# Where a TFDS builder's ClassLabel is when it is not under the spec's label name
# (`wdl_tf.datasets.census_tfds` stores the income bracket as ``label``).
TFDS_LABEL_KEY = "label"


def example_labels(spec: fs.FeatureSpec, serialized: tf.Tensor) -> tf.Tensor:
    """Labels [B, 1] float32 of serialized training tf.Examples.

    The label is the spec's label feature, a float (as `make_example` writes it) or an
    int64 (as TFDS writes a ClassLabel), else the TFDS ``label`` key (unless the spec has
    a feature of that name). A record with neither gets NaN, which the TFRecord row check
    reports (or skips) as a bad row naming the file and record.
    """
    keys = [spec.label.name]
    if TFDS_LABEL_KEY not in (spec.label.name, *spec.feature_names):
        keys.append(TFDS_LABEL_KEY)
    found = numeric_from_examples(
        serialized, [fs.FeatureConfig(k, fs.NUMERIC, default=math.nan) for k in keys]
    )
    labels = found[keys[0]]
    for key in keys[1:]:
        labels = tf.where(tf.math.is_nan(labels), found[key], labels)
    return labels


def parse_examples(
    spec: fs.FeatureSpec,
    serialized: tf.Tensor,
    with_label: bool = True,
    lenient_numbers: bool = False,
):
    """Serialized tf.Examples [B] → raw features dict (and label [B, 1] when with_label).

    With ``lenient_numbers``, numeric features may be int64 lists too (see
    `numeric_from_examples`); the serving signatures use it.
    """
    parse_spec = example_parse_spec(spec, with_label)
    numeric = [f for f in spec.features if f.kind == fs.NUMERIC] if lenient_numbers else []
    for f in numeric:
        del parse_spec[f.name]
    parsed = tf.io.parse_example(serialized, parse_spec) if parse_spec else {}
    if numeric:
        parsed.update(numeric_from_examples(serialized, numeric))
    if not with_label:
        return parsed
    labels = parsed.pop(spec.label.name)
    return parsed, labels


def make_example(spec: fs.FeatureSpec, row: dict[str, Any], label: float | None = None):
    """A tf.train.Example of one row of raw values (lists for multivalent features)."""
    feats = {}
    for f in spec.features:
        if f.name not in row:
            continue
        value = row[f.name]
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if f.kind == fs.NUMERIC:
            feats[f.name] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        elif f.dtype == "int":
            feats[f.name] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            feats[f.name] = tf.train.Feature(
                bytes_list=tf.train.BytesList(value=[str(v).encode() for v in values])
            )
    if label is not None:
        feats[spec.label.name] = tf.train.Feature(float_list=tf.train.FloatList(value=[label]))
    return tf.train.Example(features=tf.train.Features(feature=feats))


# A read (file, row number, row) batch: what the parsers take.
_READ_SIGNATURE = (
    tf.TensorSpec([None], tf.string),
    tf.TensorSpec([None], tf.int64),
    tf.TensorSpec([None], tf.string),
)
# (id(spec), format, skip_bad_rows, id(counter)) → (spec, counter, parser); the entry holds
# the spec and the counter, so their ids are not reused while it lives. A few entries: a
# training run reads one spec, with and without its counter.
_PARSERS: collections.OrderedDict = collections.OrderedDict()
_MAX_PARSERS = 8
_PARSERS_LOCK = threading.Lock()  # pipelines may be built from several threads


def _parser(spec: fs.FeatureSpec, tfrecord: bool, skip_bad_rows: bool, counter):
    """The CSV or tf.Example parser of ``spec`` as one `tf.function`, shared by every
    pipeline that reads with the same spec, checks and counter.

    tf.data traces a map function each time ``map`` is called: a training run builds ~4
    pipelines (training, validation split, final evaluation, a look at the first rows), and
    each traced its own copy of the parser (0.15-0.25 s each; the parser is ~50 ops per
    feature). A map function that calls a traced `tf.function` with a fixed signature is
    one call op: the parser is traced once per (spec, checks, counter).
    """
    key = (id(spec), tfrecord, skip_bad_rows, id(counter))
    with _PARSERS_LOCK:
        if key in _PARSERS:
            _PARSERS.move_to_end(key)
            return _PARSERS[key][2]
        make = _tfrecord_parser if tfrecord else _csv_parser
        fn = tf.function(
            make(spec, skip_bad_rows, counter), input_signature=_READ_SIGNATURE, autograph=False
        )
        _PARSERS[key] = (spec, counter, fn)
        while len(_PARSERS) > _MAX_PARSERS:
            _PARSERS.popitem(last=False)
        return fn


def read_raw(
    spec: fs.FeatureSpec,
    files: str | list[str],
    opts: ReadOptions,
    counter: BadRowCounter | None = None,
) -> tf.data.Dataset:
    """Batches of (raw features dict of [B, 1] tensors, label [B, 1] float32), one epoch."""
    files = resolve_files(files)
    kinds = {is_tfrecord(f) for f in files}
    if len(kinds) > 1:
        raise DataError(f"cannot mix CSV and TFRecord files in one split: {files}")
    row_shards = opts.num_shards > 1 and not opts.shard_files
    if opts.num_shards > 1 and opts.shard_files:
        files = files[opts.shard_index :: opts.num_shards]
    if kinds.pop():
        if opts.split is not None and opts.time_split is not None:
            raise DataError(
                f"the split by time column {opts.time_split.time_column!r} reads CSV files "
                f"only, got {files}"
            )
        ds = _records(files, opts, lambda p, c: tf.data.TFRecordDataset(p, compression_type=c))
        if row_shards:
            ds = ds.shard(opts.num_shards, opts.shard_index)
        if opts.max_rows is not None:
            ds = ds.take(opts.max_rows)
        if opts.shuffle:
            ds = ds.shuffle(opts.shuffle_buffer, seed=opts.seed, reshuffle_each_iteration=True)
        parser = _parser(spec, True, opts.skip_bad_rows, counter)
        return ds.batch(opts.batch_size).map(parser, num_parallel_calls=AUTOTUNE)
    ds = _lines(files, spec, opts)
    if row_shards:
        ds = ds.shard(opts.num_shards, opts.shard_index)
    if opts.max_rows is not None:
        ds = ds.take(opts.max_rows)
    if opts.shuffle:
        ds = ds.shuffle(opts.shuffle_buffer, seed=opts.seed, reshuffle_each_iteration=True)
    parser = _parser(spec, False, opts.skip_bad_rows, counter)
    return ds.batch(opts.batch_size).map(
        parser, num_parallel_calls=AUTOTUNE, deterministic=opts.deterministic
    )


def make_dataset(
    spec: fs.FeatureSpec,
    files: str | list[str],
    opts: ReadOptions,
    preprocessor,
    counter: BadRowCounter | None = None,
) -> tf.data.Dataset:
    """Batches of (encoded model inputs, label) for fit/evaluate, preprocessed in parallel."""
    ds = read_raw(spec, files, opts, counter)
    ds = ds.map(
        encoding(preprocessor),
        num_parallel_calls=AUTOTUNE,
        deterministic=opts.deterministic,
    )
    return ds.prefetch(AUTOTUNE)
