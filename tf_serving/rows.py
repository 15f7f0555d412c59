"""Scoring rows from files with a served model: what ``scripts/predict.py`` runs.

Rows come as a JSON list of objects, a CSV (optionally .gz) whose header names the features,
or headerless CSV in a feature spec's layout; they are typed by the spec or by the model's
``serving_default`` metadata, and scored over gRPC or REST with `tf_serving.client`: the
``probabilities`` (serving_default/predict), the score of class "1" (classification), or the
value (regression).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import sys
import tempfile
from typing import Any

from tf_serving.client import GrpcClient, RestClient, ServingError, signature_io

SIGNATURES = ("serving_default", "predict", "classification", "regression")
_KINDS = {"DT_FLOAT": "float", "DT_DOUBLE": "float", "DT_INT64": "int", "DT_INT32": "int"}


# ----------------------------------------------------------------------------------------
# Rows.


class FeatureTypes:
    """name → 'float' | 'int' | 'string', and which features are multivalent (with separator)."""

    def __init__(
        self, kinds: dict[str, str], multivalent: dict[str, tuple[str, str]] | None = None
    ):
        self.kinds = kinds
        self.multivalent = multivalent or {}  # name → (separator, element kind)

    @classmethod
    def from_spec(cls, spec) -> FeatureTypes:
        from wdl_tf import features as fs

        kinds, multi = {}, {}
        for f in spec.features:
            if f.kind == fs.NUMERIC:
                kinds[f.name] = "float"
            elif f.kind == fs.MULTIVALENT:
                kinds[f.name] = "string"
                multi[f.name] = (f.separator, f.dtype)
            else:
                kinds[f.name] = "int" if f.dtype == "int" else "string"
        return cls(kinds, multi)

    @classmethod
    def from_metadata(cls, metadata: dict) -> FeatureTypes:
        inputs, _ = signature_io(metadata, "serving_default")
        return cls({name: _KINDS.get(dtype, "string") for name, dtype in inputs.items()})

    def cast(self, name: str, value: Any) -> Any:
        kind = self.kinds.get(name)
        if kind is None:
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    return value
            return value
        if kind == "float":
            return float(value)
        if kind == "int":
            return int(value)
        return value if isinstance(value, str) else str(value)

    def typed(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row's values cast to the feature types (unknown columns dropped if types known)."""
        out = {}
        for name, value in row.items():
            if self.kinds and name not in self.kinds:
                continue  # e.g. the label column: not a model input
            try:
                out[name] = self.cast(name, value)
            except (TypeError, ValueError):
                raise ValueError(
                    f"feature {name!r}: value {value!r} is not a {self.kinds[name]}"
                ) from None
        return out

    def example(self, row: dict[str, Any]) -> dict[str, Any]:
        """A typed row as a classify/regress example: multivalent strings become lists."""
        out = dict(row)
        for name, (separator, dtype) in self.multivalent.items():
            if name in out and isinstance(out[name], str):
                items = [v for v in out[name].split(separator) if v]
                out[name] = [int(v) for v in items] if dtype == "int" else items
        return out

    def dtypes(self) -> dict[str, str]:
        names = {"float": "DT_FLOAT", "int": "DT_INT64", "string": "DT_STRING"}
        return {name: names[kind] for name, kind in self.kinds.items()}


def _open_text(path: str):
    """A text file, gunzipped when its name ends in .gz."""
    if path.endswith(".gz"):
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def _first_line(path: str) -> str:
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                return line
    raise ValueError(f"{path}: no rows")


def read_spec_csv(path: str, spec) -> list[dict[str, Any]]:
    """Headerless CSV in the spec's layout (label column optional), via `read_raw`."""
    import tensorflow as tf

    from wdl_tf import input_pipeline

    layout = spec.csv
    ncols = len(layout.columns)
    label_at = layout.columns.index(spec.label.name)
    with _open_text(path) as f:
        lines = f.read().splitlines()

    def is_data(i, line):
        text = line.strip()
        if i < layout.skip_header_lines or not text:
            return False
        return not (layout.comment_prefix and text.startswith(layout.comment_prefix))

    # Rows to score usually lack the label: give them a placeholder, so they parse.
    fixed, changed = [], False
    for i, line in enumerate(lines):
        fields = line.split(layout.delimiter)
        if is_data(i, line) and len(fields) == ncols - 1:
            fields.insert(label_at, spec.label.negative_values[0])
            line, changed = layout.delimiter.join(fields), True
        fixed.append(line)
    with tempfile.TemporaryDirectory(prefix="wdl_predict_") as tmp:
        source = path
        if changed:
            source = os.path.join(tmp, "rows.csv")
            with open(source, "w") as f:
                f.write("\n".join(fixed) + "\n")
        opts = input_pipeline.ReadOptions(batch_size=1024)
        rows: list[dict[str, Any]] = []
        try:
            for raw, _ in input_pipeline.read_raw(spec, [source], opts):
                columns = {name: t.numpy().reshape(-1).tolist() for name, t in raw.items()}
                for i in range(len(next(iter(columns.values())))):
                    rows.append(
                        {
                            name: v[i].decode() if isinstance(v[i], bytes) else v[i]
                            for name, v in columns.items()
                        }
                    )
        except tf.errors.InvalidArgumentError as e:
            input_pipeline.raise_data_error(e)
    return rows


def load_rows(path: str, spec=None) -> list[dict[str, Any]]:
    """Rows of a .json (a list of objects) or .csv file, values as read."""
    if path.endswith(".json"):
        with open(path) as f:
            rows = json.load(f)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: expected a JSON list of row objects")
        if not rows:
            raise ValueError(f"{path}: no rows")
        return rows
    delimiter = spec.csv.delimiter if spec is not None else ","
    header = [h.strip() for h in _first_line(path).rstrip("\r\n").split(delimiter)]
    if spec is not None and not set(spec.feature_names) <= set(header):
        return read_spec_csv(path, spec)
    na = set(spec.csv.na_values) if spec is not None else set()
    defaults = {f.name: f.raw_default for f in spec.features} if spec is not None else {}
    rows = []
    with _open_text(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter, skipinitialspace=True)
        for record in reader:
            row = {}
            for name, value in record.items():
                if name is None or (spec is not None and name not in defaults):
                    continue  # extra fields, or columns the model does not take (the label)
                value = (value or "").strip()
                if spec is not None and (value == "" or value in na):
                    value = defaults[name]
                row[name.strip()] = value
            if row:
                rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


# ----------------------------------------------------------------------------------------
# Scoring.


def score(
    client,
    rows: list[dict[str, Any]],
    types: FeatureTypes,
    signature: str,
    version=None,
    label=None,
) -> list[float]:
    """One score per row (see the module docstring)."""
    rows = [types.typed(r) for r in rows]
    if signature in ("classification", "regression"):
        examples = [types.example(r) for r in rows]
        if signature == "regression":
            return client.regress(examples, version=version, label=label)
        results = client.classify(examples, version=version, label=label)
        out = []
        for classes in results:
            positive = [s for c, s in classes if c == "1"]
            out.append(positive[0] if positive else (classes[-1][1] if classes else float("nan")))
        return out
    names = list(rows[0])
    missing = [(i, n) for i, r in enumerate(rows) for n in names if n not in r]
    if missing:
        raise ValueError(f"row {missing[0][0]} has no feature {missing[0][1]!r}")
    inputs = {name: [[r[name]] for r in rows] for name in names}
    dtypes = {n: d for n, d in types.dtypes().items() if n in inputs}
    outputs = client.predict(inputs, signature, version=version, label=label, dtypes=dtypes)
    key = "probabilities" if "probabilities" in outputs else sorted(outputs)[0]
    return [float(v) for v in outputs[key].reshape(len(rows), -1)[:, 0]]


def run(
    *,
    input_path: str,
    server: str = "localhost:8500",
    rest: str | None = None,
    model_name: str = "census",
    signature: str = "serving_default",
    feature_spec: str | None = None,
    version: int | None = None,
    label: str | None = None,
    timeout: float = 10.0,
    retries: int = 3,
    out=None,
) -> int:
    """Scores ``input_path`` and prints one score per row; returns the exit status."""
    out = out or sys.stdout
    if version is not None and label is not None:
        print("error: give --version or --label, not both", file=sys.stderr)
        return 2
    try:
        spec = None
        if feature_spec:
            from wdl_tf import features

            spec = features.load(feature_spec)
        rows = load_rows(input_path, spec)
        if rest:
            client = RestClient(rest, model_name, timeout=timeout, retries=retries)
        else:
            client = GrpcClient(server, model_name, timeout=timeout, retries=retries)
        with client:
            if spec is not None:
                types = FeatureTypes.from_spec(spec)
            else:
                try:
                    types = FeatureTypes.from_metadata(client.metadata(version, label))
                except (ServingError, ValueError):
                    types = FeatureTypes({})  # guess: numbers → float, else string
            scores = score(client, rows, types, signature, version, label)
    except ServingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for s in scores:
        print(f"{s:.6f}", file=out)
    return 0
