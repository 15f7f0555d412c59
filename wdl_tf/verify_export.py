"""Checks an exported SavedModel in a fresh process before it is published (paper P9).

    python -m wdl_tf.verify_export <saved_model_dir> <request.npz> [atol]

``request.npz`` holds the sample raw inputs (``input:<name>``), their serialized
tf.Examples (``examples``) and the in-memory model's probabilities (``expected``). In a
process that shares nothing with the trainer, this loads the SavedModel, checks that every
signature reproduces ``expected`` within ``atol`` and returns finite values, and replays
the warmup requests (``assets.extra/tf_serving_warmup_requests``) as TF Serving would at
load time. Prints one JSON line; exits 1 on failure.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import tensorflow as tf

from wdl_tf import explain


def _check(name: str, got, expected: np.ndarray, atol: float) -> float:
    got = np.asarray(got).reshape(-1)
    if not np.all(np.isfinite(got)):
        raise AssertionError(f"signature {name!r} returned NaN or inf")
    diff = float(np.max(np.abs(got - expected)))
    if diff > atol:
        raise AssertionError(f"signature {name!r} differs from the in-memory model by {diff:.3g}")
    return diff


def check_signatures(
    loaded, inputs: dict, examples: np.ndarray, expected: np.ndarray, atol: float
) -> dict[str, float]:
    sigs = loaded.signatures
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    serialized = tf.constant(list(examples))
    rank = sigs["rank"](**tensors)
    top = rank["top_k_indices"].numpy()
    # The top-k are the k largest scores, in order.
    _check("rank top_k_scores", rank["top_k_scores"], np.sort(expected)[::-1][: len(top)], atol)
    return {
        "serving_default": _check(
            "serving_default", sigs["serving_default"](**tensors)["probabilities"], expected, atol
        ),
        "predict": _check("predict", sigs["predict"](**tensors)["probabilities"], expected, atol),
        "classification": _check(
            "classification",
            sigs["classification"](inputs=serialized)["scores"][:, 1],
            expected,
            atol,
        ),
        "regression": _check(
            "regression", sigs["regression"](inputs=serialized)["outputs"], expected, atol
        ),
        "rank": _check("rank", rank["scores"], expected, atol),
    }


def replay_warmup(loaded, path: str) -> int:
    """Runs every warmup record through its signature; returns the number replayed."""
    if not os.path.exists(path):
        return 0
    from tensorflow_serving.apis import prediction_log_pb2

    count = 0
    for record in tf.data.TFRecordDataset(path):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = entry.WhichOneof("log_type")
        if kind == "predict_log":
            request = entry.predict_log.request
            fn = loaded.signatures[request.model_spec.signature_name or "serving_default"]
            outputs = fn(**{k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()})
        elif kind in ("classify_log", "regress_log"):
            request = getattr(entry, kind).request
            fn = loaded.signatures[request.model_spec.signature_name]
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            outputs = fn(inputs=tf.constant(examples))
        else:
            raise AssertionError(f"unsupported warmup log type {kind!r}")
        for key, value in outputs.items():
            value = value.numpy()
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise AssertionError(f"warmup {kind} output {key!r} has NaN or inf")
        count += 1
    return count


def main(argv: list[str]) -> int:
    path, request = argv[1], argv[2]
    atol = float(argv[3]) if len(argv) > 3 else 1e-5
    data = np.load(request)
    inputs = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("input:")}
    try:
        loaded = tf.saved_model.load(path)
        missing = [
            s
            for s in ("serving_default", "predict", "classification", "regression", "rank")
            if s not in loaded.signatures
        ]
        if missing:
            raise AssertionError(f"signature(s) {missing} missing")
        buffer = data["example_bytes"].tobytes()
        ends = np.cumsum(data["example_lengths"])
        examples = [buffer[end - n : end] for end, n in zip(ends, data["example_lengths"])]
        diffs = check_signatures(loaded, inputs, examples, data["expected"], atol)
        diffs.update(explain.check_saved_model(loaded, inputs, data["expected"], atol))
        warmup = replay_warmup(
            loaded, os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
        )
    except Exception as e:  # noqa: BLE001 - any failure is reported, not raised
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps({"ok": True, "max_abs_diff": diffs, "warmup_records": warmup}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
