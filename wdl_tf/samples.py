"""Samples of raw rows (CSV, tf.Examples, TF Serving request logs), missing values kept.

The training input pipeline replaces a missing field by the feature's default before the model
sees it; skew checks need to tell the two apart, and explanations need rows without labels.
This module reads a bounded sample of rows into columns (one numpy array per feature) where a
missing value stays missing: NaN for a numeric feature, None for a categorical one, an empty
tuple for a multivalent one.

Sources:

* CSV in the spec's layout (``csv.columns``, label included), or with a header line naming
  the columns (any order; the label may be left out). A missing field is an empty one or one
  of ``csv.na_values``.
* TFRecord files of tf.Examples (``.tfrecord[.gz]``): an absent feature or an empty list is
  missing.
* TF Serving request logs: TFRecord files of ``tensorflow.serving.PredictionLog`` (TF Serving's
  ``LogCollector`` output and warmup file format, ``prediction_log.proto``): the inputs of
  Predict requests (a 1-row feature broadcast to the request's N rows, as the ``rank``
  signature does) and the tf.Examples of Classify, Regress and MultiInference requests
  (``example_list_with_context``: each example merged over the context, the example winning).

A feature that no row carries at all (a CSV header without it, Predict requests without that
input, tf.Examples that never hold it) is an error naming it: that is a wrong file or spec, not
a missing rate.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from wdl_tf import features as fs
from wdl_tf import input_pipeline

MISSING_CATEGORY = None


class SampleError(ValueError):
    """A sample that cannot be read: the message names the file, the record and the problem."""


@dataclasses.dataclass
class Sample:
    """Columns of raw values, one per feature of ``spec``, all of the same length.

    Attributes:
      spec: the feature spec the columns follow.
      columns: per feature: float64 (NaN = missing) for numeric features, an object array of
        str (None = missing; int ids as their decimal string) for categorical ones, an object
        array of tuples of str (empty = missing) for multivalent ones.
      source: what was read (for messages and reports).
      skipped: records not read (request logs: kinds without features, e.g. session_run_log).
    """

    spec: fs.FeatureSpec
    columns: dict[str, np.ndarray]
    source: str = ""
    skipped: int = 0

    @property
    def rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def missing(self, name: str) -> np.ndarray:
        """Boolean [rows]: where feature ``name`` is missing."""
        f = self.spec.feature(name)
        values = self.columns[name]
        if f.kind == fs.NUMERIC:
            return np.isnan(values)
        if f.kind == fs.MULTIVALENT:
            return np.array([len(v) == 0 for v in values], dtype=bool)
        return np.array([v is None for v in values], dtype=bool)

    def take(self, rows: int) -> Sample:
        return dataclasses.replace(self, columns={k: v[:rows] for k, v in self.columns.items()})

    def serving_inputs(self) -> dict[str, np.ndarray]:
        """The rows as ``serving_default`` inputs: [B, 1] per feature, missing values replaced by
        the feature's default (as training parses them), a list joined by its separator."""
        out = {}
        for f in self.spec.features:
            values = self.columns[f.name]
            if f.kind == fs.NUMERIC:
                out[f.name] = np.where(np.isnan(values), f.raw_default, values).astype(np.float32)
            elif f.kind == fs.MULTIVALENT:
                out[f.name] = np.array([f.separator.join(v) for v in values], dtype=object)
            elif f.dtype == "int":
                out[f.name] = np.array(
                    [f.raw_default if v is None else int(v) for v in values], dtype=np.int64
                )
            else:
                default = str(f.raw_default)
                out[f.name] = np.array([default if v is None else v for v in values], dtype=object)
            out[f.name] = out[f.name].reshape(-1, 1)
        return out


class _Columns:
    """Accumulates rows (dicts of raw values, a missing feature absent) into a Sample."""

    def __init__(self, spec: fs.FeatureSpec, source: str):
        self.spec = spec
        self.source = source
        self.values: dict[str, list] = {f.name: [] for f in spec.features}
        self.present = dict.fromkeys(self.values, False)
        self.skipped = 0

    @property
    def rows(self) -> int:
        return len(self.values[self.spec.features[0].name])

    def add(self, row: dict[str, Any], where: str) -> None:
        """Adds one row; a bad value raises before anything is added."""
        values = [_normalize(f, row.get(f.name), where) for f in self.spec.features]
        for f, value in zip(self.spec.features, values):
            if f.name in row:
                self.present[f.name] = True
            self.values[f.name].append(value)

    def sample(self) -> Sample:
        if self.rows == 0:
            raise SampleError(f"the sample {self.source} has no rows")
        absent = [name for name, seen in self.present.items() if not seen]
        if absent:
            raise SampleError(
                f"rows of {self.source} are missing feature(s) {absent}: no row has them "
                f"(the spec's features are {list(self.spec.feature_names)})"
            )
        columns = {}
        for f in self.spec.features:
            if f.kind == fs.NUMERIC:
                columns[f.name] = np.array(self.values[f.name], dtype=np.float64)
            else:
                column = np.empty(self.rows, dtype=object)
                column[:] = self.values[f.name]
                columns[f.name] = column
        return Sample(self.spec, columns, self.source, self.skipped)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _int_text(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return str(int(value)) if isinstance(value, (int, np.integer)) else _text(value).strip()


def _normalize(f: fs.FeatureConfig, value: Any, where: str) -> Any:
    """One raw value in the Sample's representation (missing: NaN, None or ())."""
    if type(value) is str and f.dtype != "int":  # a CSV field: the common case, kept fast
        if f.kind == fs.MULTIVALENT:
            return tuple(t for t in value.split(f.separator) if t)
        if f.kind == fs.CATEGORICAL:
            return value or MISSING_CATEGORY
    if f.kind == fs.NUMERIC:
        if value is None or (isinstance(value, (list, tuple)) and not value):
            return math.nan
        if isinstance(value, (list, tuple)):
            value = value[0]
        if isinstance(value, (bytes, str)):
            text = _text(value).strip()
            try:
                return float(text)
            except ValueError:
                raise SampleError(
                    f"{where}: feature {f.name!r}: {text!r} is not a number"
                ) from None
        return float(value)
    if f.kind == fs.MULTIVALENT:
        if value is None:
            return ()
        if isinstance(value, (bytes, str)):
            value = _text(value).split(f.separator)
        tokens = [_int_text(v) if f.dtype == "int" else _text(v) for v in value]
        return tuple(t for t in tokens if t != "")
    if isinstance(value, (list, tuple)):
        if not value:
            return MISSING_CATEGORY
        value = value[0]
    if value is None:
        return MISSING_CATEGORY
    text = _int_text(value) if f.dtype == "int" else _text(value)
    return MISSING_CATEGORY if text == "" else text


# ----------------------------------------------------------------------------------------
# CSV and tf.Example files.


def _open_text(path: str):
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _csv_rows(spec: fs.FeatureSpec, path: str) -> Iterator[tuple[Any, str]]:
    """(row, "file:line") of a CSV file, a missing field None; a `SampleError` in place of
    the row of a malformed line."""
    csv = spec.csv
    missing = {""} | set(csv.na_values)
    names = set(spec.feature_names)
    columns = None
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            text = line.strip()
            if lineno <= csv.skip_header_lines or not text:
                continue
            if csv.comment_prefix and text.startswith(csv.comment_prefix):
                continue
            fields = [x.strip() for x in text.split(csv.delimiter)]
            where = f"{path}:{lineno}"
            if columns is None:
                if set(fields) & (names | {spec.label.name}):
                    columns = fields  # a header line (no value is a feature's name)
                    absent = [n for n in spec.feature_names if n not in fields]
                    if absent:
                        raise SampleError(
                            f"{where}: the header names no column for feature(s) {absent} "
                            f"(rows missing features); it names {fields}"
                        )
                    continue
                columns = list(csv.columns)
            if len(fields) != len(columns):
                message = f"{where}: expected {len(columns)} fields ({columns}), got {len(fields)}"
                yield SampleError(message), where  # a bad row: the caller raises or skips it
                continue
            row = {c: (None if v in missing else v) for c, v in zip(columns, fields) if c in names}
            yield row, where


def _example_row(spec: fs.FeatureSpec, example) -> dict[str, Any]:
    row = {}
    for name in spec.feature_names:
        if name not in example.features.feature:
            continue
        feature = example.features.feature[name]
        kind = feature.WhichOneof("kind")
        row[name] = list(getattr(feature, kind).value) if kind else []
    return row


def _tfrecords(path: str) -> Iterator[bytes]:
    import tensorflow as tf

    compression = "GZIP" if path.endswith(".gz") else ""
    # In batches: one eager step per record cost ~0.1 ms, 3.4 s of the 7 s that the 32,561
    # census training rows took to read for the training statistics.
    records = tf.data.TFRecordDataset(path, compression_type=compression).batch(1024)
    try:
        for batch in records:
            yield from batch.numpy()
    except tf.errors.DataLossError as e:
        raise SampleError(f"{path} is not a (complete) TFRecord file: {e.message}") from None


def _example_rows(spec: fs.FeatureSpec, path: str) -> Iterator[tuple[Any, str]]:
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    for i, record in enumerate(_tfrecords(path)):
        where = f"{path}: record {i}"
        try:
            yield _example_row(spec, example_pb2.Example.FromString(record)), where
        except DecodeError:
            yield SampleError(f"{where} is not a tf.Example"), where


def read_rows(
    spec: fs.FeatureSpec,
    files: str | list[str],
    max_rows: int | None = None,
    skip_bad_rows: bool = False,
) -> Sample:
    """Up to ``max_rows`` rows of CSV or tf.Example TFRecord ``files`` (see the module doc).

    With ``skip_bad_rows``, a malformed row (wrong field count, a non-number in a numeric
    column) is left out and counted in ``Sample.skipped`` instead of raising.

    Raises:
      SampleError: a missing file, a malformed row, no rows, or a feature no row has.
    """
    try:
        paths = input_pipeline.resolve_files(files)
    except input_pipeline.DataError as e:
        raise SampleError(str(e)) from None
    columns = _Columns(spec, ",".join(paths))
    for path in paths:
        rows = (
            _example_rows(spec, path) if input_pipeline.is_tfrecord(path) else _csv_rows(spec, path)
        )
        for row, where in rows:
            if max_rows is not None and columns.rows >= max_rows:
                break
            try:
                if isinstance(row, SampleError):
                    raise row
                columns.add(row, where)
            except SampleError:
                if not skip_bad_rows:
                    raise
                columns.skipped += 1
    return columns.sample()


# ----------------------------------------------------------------------------------------
# TF Serving request logs (PredictionLog).


def _predict_rows(request, where: str) -> list[dict[str, Any]]:
    """Rows of a PredictRequest: every input [N, 1], [N] or 1 row (broadcast to N)."""
    import tensorflow as tf

    columns = {}
    for name, proto in request.inputs.items():
        try:
            columns[name] = np.asarray(tf.make_ndarray(proto)).reshape(-1)
        except (TypeError, ValueError) as e:
            raise SampleError(f"{where}: input {name!r} is not a readable tensor: {e}") from None
    if not columns:
        return []
    n = max(len(v) for v in columns.values())
    bad = {k: len(v) for k, v in columns.items() if len(v) not in (1, n)}
    if bad:
        raise SampleError(f"{where}: inputs must have 1 or {n} rows, got {bad}")
    out = []
    for i in range(n):
        row = {}
        for name, values in columns.items():
            value = values[0 if len(values) == 1 else i]
            if isinstance(value, (float, np.floating)) and np.isnan(value):
                value = None
            row[name] = value.item() if isinstance(value, np.generic) else value
        out.append(row)
    return out


def _input_examples(model_input) -> list:
    """The tf.Examples of a tensorflow.serving.Input (each merged over the context)."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        return list(model_input.example_list.examples)
    if kind == "example_list_with_context":
        merged = []
        for example in model_input.example_list_with_context.examples:
            m = type(example)()
            m.CopyFrom(model_input.example_list_with_context.context)
            m.MergeFrom(example)
            merged.append(m)
        return merged
    return []


def _log_rows(spec: fs.FeatureSpec, entry, where: str) -> list[dict[str, Any]] | None:
    """Rows of one PredictionLog, or None for a kind that carries no features."""
    kind = entry.WhichOneof("log_type")
    if kind == "predict_log":
        return _predict_rows(entry.predict_log.request, where)
    if kind in ("classify_log", "regress_log", "multi_inference_log"):
        examples = _input_examples(getattr(entry, kind).request.input)
        return [_example_row(spec, e) for e in examples]
    return None


def _not_a_log(spec: fs.FeatureSpec, record: bytes, where: str) -> SampleError:
    from google.protobuf.message import DecodeError
    from tensorflow.core.example import example_pb2

    hint = ""
    try:
        example = example_pb2.Example.FromString(record)
        if set(example.features.feature) & set(spec.feature_names):
            hint = "; it is a tf.Example row: read it as rows (a CSV/TFRecord sample) instead"
    except DecodeError:
        pass
    return SampleError(
        f"{where} is not a tensorflow.serving.PredictionLog (a TF Serving request log record "
        f"with a predict, classify, regress or multi_inference request){hint}"
    )


def read_request_log(
    spec: fs.FeatureSpec, files: str | list[str], max_rows: int | None = None
) -> Sample:
    """Up to ``max_rows`` rows from TFRecord files of PredictionLog (see the module doc).

    Raises:
      SampleError: a record that is not a PredictionLog with a request, a bad input tensor,
        no rows, or a feature that no request carries.
    """
    from google.protobuf.message import DecodeError
    from tensorflow_serving.apis import prediction_log_pb2

    try:
        paths = input_pipeline.resolve_files(files)
    except input_pipeline.DataError as e:
        raise SampleError(str(e)) from None
    columns = _Columns(spec, ",".join(paths))
    for path in paths:
        for i, record in enumerate(_tfrecords(path)):
            if max_rows is not None and columns.rows >= max_rows:
                break
            where = f"{path}: record {i}"
            try:
                entry = prediction_log_pb2.PredictionLog.FromString(record)
            except DecodeError:
                raise _not_a_log(spec, record, where) from None
            if entry.WhichOneof("log_type") is None:
                raise _not_a_log(spec, record, where)
            rows = _log_rows(spec, entry, where)
            if rows is None:
                columns.skipped += 1
                continue
            if not rows:  # a request without inputs or examples is no request we logged
                raise _not_a_log(spec, record, where)
            for row in rows[: None if max_rows is None else max_rows - columns.rows]:
                columns.add(row, where)
    return columns.sample()
