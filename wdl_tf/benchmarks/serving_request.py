"""The serving benchmark's requests: one ``rank`` call with real UCI Adult candidates, and the
bodies of the REST checks, typed by the SavedModel's own signature.

Real rows rather than random values, so the model's lookups and the encoders do the work a
real request gives them; the in-process call and the served ones get the very same inputs.
"""

from __future__ import annotations

import csv
import gzip
import json
from typing import Any

import numpy as np

CANDIDATE_FEATURES = ("workclass", "education", "education_num", "occupation")


def adult_rows(n: int) -> list[dict[str, str]]:
    """The first ``n`` complete rows of the embedded UCI Adult training file."""
    from wdl_tf import features
    from wdl_tf.datasets import CENSUS_TRAIN as path

    columns = features.preset("census").csv.columns
    rows = []
    with gzip.open(path, "rt") as f:
        for record in csv.reader(f):
            if len(record) != len(columns):
                continue
            rows.append({k: v.strip() for k, v in zip(columns, record)})
            if len(rows) >= n:
                break
    if len(rows) < n:
        raise ValueError(f"only {len(rows)} rows in {path}")
    return rows


def _value(raw: str | None, dtype) -> Any:
    np_dtype = np.dtype(dtype)
    if np_dtype == np.dtype(object):
        return raw if raw is not None else ""
    return np_dtype.type(float(raw) if raw not in (None, "", "?") else 0)


def build_request(
    input_dtypes: dict[str, Any], n: int
) -> tuple[dict[str, list], dict[str, list], dict[str, Any]]:
    """(context, candidates, numpy dtypes) of a ``rank`` request with ``n`` candidates."""
    rows = adult_rows(n)
    context, candidates = {}, {}
    for name, dtype in input_dtypes.items():
        if name in CANDIDATE_FEATURES:
            candidates[name] = [_value(r.get(name), dtype) for r in rows]
        else:
            context[name] = [_value(rows[0].get(name), dtype)]
    if not candidates:
        raise ValueError(f"the rank signature has none of {CANDIDATE_FEATURES}")
    return context, candidates, input_dtypes


def rank_tensors(context, candidates, dtypes) -> dict[str, np.ndarray]:
    """The request as the signature's [1, 1] / [N, 1] arrays."""
    out = {}
    for name, values in {**context, **candidates}.items():
        dtype = dtypes[name]
        if np.dtype(dtype) == np.dtype(object):
            out[name] = np.array([[v.encode()] for v in values], dtype=object)
        else:
            out[name] = np.array(values, dtype=dtype).reshape(-1, 1)
    return out


def rank_input_dtypes(path: str) -> dict[str, Any]:
    import tensorflow as tf

    sig = tf.saved_model.load(path).signatures["rank"]
    return {
        name: spec.dtype.as_numpy_dtype for name, spec in sig.structured_input_signature[1].items()
    }


def rank_body(request: tuple) -> bytes:
    """The rank request as the REST client sends it (columnar JSON)."""
    from tf_serving.client import RestClient, _rank_inputs

    context, candidates, dtypes = request
    single = {k: v[0] for k, v in context.items()}
    inputs = _rank_inputs(single, candidates, repeat_context=False)
    return json.dumps(RestClient.predict_body(inputs, "rank", True, dtypes)).encode()


def limit_sized_body(input_dtypes: dict[str, Any], limit: int) -> tuple[bytes, int]:
    """A serving_default ``instances`` body just under ``limit`` bytes, and its row count."""
    rows = adult_rows(50)
    encoded = []
    for r in rows:
        row = {}
        for name, dtype in input_dtypes.items():
            value = _value(r.get(name), dtype)
            row[name] = [value if isinstance(value, str) else float(value)]
        encoded.append(json.dumps(row).encode())
    head, tail = b'{"instances": [', b"]}"
    parts, size = [], len(head) + len(tail)
    while True:
        row = encoded[len(parts) % len(encoded)]
        if size + len(row) + 1 > limit:
            break
        parts.append(row)
        size += len(row) + 1
    return head + b",".join(parts) + tail, len(parts)
