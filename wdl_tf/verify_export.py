"""Checks an exported SavedModel in a fresh process before it is published (paper P9).

    python -m wdl_tf.verify_export <saved_model_dir> <request.npz> [atol]

``request.npz`` holds the sample raw inputs (``input:<name>``), their serialized
tf.Examples and the in-memory model's probabilities (``expected``). In a process that shares
nothing with the trainer, the SavedModel is loaded twice:

1. The TF2 way (``tf.saved_model.load``, as Keras and the local server do): every signature
   must reproduce ``expected`` within ``atol``.
2. The way TF Serving's C++ server does (a graph-mode session from the TF1 loader, every
   signature run by tensor name; rules in docs/export_contract.md): method names, the
   Classify/Regress signature shapes, every signature against ``expected``, a context merged
   into each example, a NaN refused naming the feature, and every warmup request
   (``assets.extra/tf_serving_warmup_requests``) replayed as TF Serving's warmup does,
   each checked batch-safe and run once more merged with another request and padding, as
   ``--enable_batching`` would run it.

Prints one JSON line; exits 1 on failure, with the reason.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from wdl_tf import startup

if __name__ == "__main__":  # a process of its own: before TensorFlow loads
    startup.skip_keras_extras()

import numpy as np
import tensorflow as tf

from wdl_tf import explain

SIGNATURES = ("serving_default", "predict", "classification", "regression", "rank")
METHOD_NAMES = {
    "serving_default": "tensorflow/serving/predict",
    "predict": "tensorflow/serving/predict",
    "rank": "tensorflow/serving/predict",
    "classification": "tensorflow/serving/classify",
    "regression": "tensorflow/serving/regress",
}
WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")


class VerificationError(AssertionError):
    """The export would not serve, or not serve the in-memory model's answers."""


def _check(name: str, got, expected: np.ndarray, atol: float) -> float:
    got = np.asarray(got).reshape(-1)
    if not np.all(np.isfinite(got)):
        raise VerificationError(f"signature {name!r} returned NaN or inf")
    if got.shape != expected.shape:
        raise VerificationError(
            f"signature {name!r} returned {got.shape} values, not {expected.shape}"
        )
    diff = float(np.max(np.abs(got - expected)))
    if diff > atol:
        raise VerificationError(
            f"signature {name!r} differs from the in-memory model by {diff:.3g}"
        )
    return diff


def context_split(example: bytes) -> tuple[bytes, bytes]:
    """(context, rest) of a serialized tf.Example: every other feature (in name order) in the
    context. Protobuf parses ``context + rest`` as the whole example again, which is what TF
    Serving feeds for an ExampleListWithContext."""
    whole = tf.train.Example.FromString(example)
    context, rest = tf.train.Example(), tf.train.Example()
    for i, name in enumerate(sorted(whole.features.feature)):
        part = context if i % 2 == 0 else rest
        part.features.feature[name].CopyFrom(whole.features.feature[name])
    return context.SerializeToString(), rest.SerializeToString()


# ----------------------------------------------------------------------------------------
# 1. TF2 loading.


def check_signatures(
    loaded, inputs: dict, examples: list[bytes], expected: np.ndarray, atol: float
) -> dict[str, float]:
    """Every signature of a ``tf.saved_model.load``-ed export against ``expected``."""
    sigs = loaded.signatures
    missing = [s for s in SIGNATURES if s not in sigs]
    if missing:
        raise VerificationError(f"signature(s) {missing} missing")
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    serialized = tf.constant(examples)
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
        "rank": _check("rank", sigs["rank"](**tensors)["scores"], expected, atol),
    }


# ----------------------------------------------------------------------------------------
# 2. TF Serving's path: a TF1 session, tensors by name.


class ServingSession:
    """A SavedModel loaded as TF Serving's SavedModelBundle is: TF1 loader, one Session."""

    def __init__(self, path: str):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            meta_graph = tf.compat.v1.saved_model.loader.load(
                self.session, [tf.saved_model.SERVING], path
            )
        self.signatures = meta_graph.signature_def

    def close(self) -> None:
        self.session.close()

    def signature(self, name: str):
        if name not in self.signatures:
            raise VerificationError(f"no signature {name!r} (TF Serving: NotFound)")
        return self.signatures[name]

    def run(self, feeds: dict[str, np.ndarray], fetches: dict[str, str]) -> dict[str, np.ndarray]:
        """Session::Run with tensor names; ``fetches`` maps output keys to tensor names."""
        names = sorted(fetches)
        values = self.session.run([fetches[k] for k in names], feed_dict=feeds)
        return dict(zip(names, values))

    def predict_task(self, name: str, inputs: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """(feeds, fetches) of a Predict request (predict_util.cc: all inputs, all outputs)."""
        sig = self.signature(name)
        if set(inputs) != set(sig.inputs):
            raise VerificationError(
                f"predict on {name!r}: inputs {sorted(inputs)} do not match the signature's "
                f"{sorted(sig.inputs)}"
            )
        feeds = {sig.inputs[k].name: v for k, v in inputs.items()}
        return feeds, {k: t.name for k, t in sig.outputs.items()}

    def example_task(self, names: list[str], serialized: np.ndarray) -> tuple[dict, dict]:
        """(feeds, fetches) of Classify/Regress/MultiInference on the same examples: every
        signature's ``inputs`` tensor gets the one serialized tensor (util.cc); outputs are
        keyed ``<signature>/<output>``."""
        feeds, fetches = {}, {}
        for name in names:
            sig = self.signature(name)
            feeds[sig.inputs["inputs"].name] = serialized
            fetches.update({f"{name}/{k}": t.name for k, t in sig.outputs.items()})
        return feeds, fetches


def check_method_names(signatures) -> None:
    for name, want in METHOD_NAMES.items():
        got = signatures[name].method_name if name in signatures else None
        if got != want:
            raise VerificationError(
                f"signature {name!r} has method_name {got!r}; TF Serving with "
                f"--enable_signature_method_name_check needs {want!r}"
            )


def check_example_signature(name: str, sig, outputs: set[str]) -> None:
    """What classifier.cc / regressor.cc require of a signature before running it."""
    if set(sig.inputs) != {"inputs"} or sig.inputs["inputs"].dtype != tf.string.as_datatype_enum:
        raise VerificationError(f"{name!r}: Classify/Regress need one DT_STRING input 'inputs'")
    if not set(sig.outputs) or not set(sig.outputs) <= outputs:
        raise VerificationError(
            f"{name!r}: outputs {sorted(sig.outputs)}; Classify/Regress allow {sorted(outputs)}"
        )


def check_classification(out: dict[str, np.ndarray], n: int, where: str) -> np.ndarray:
    """classifier.cc PostProcessClassificationResult: [n, C] DT_STRING classes and DT_FLOAT
    scores; returns the scores."""
    classes, scores = out.get("classes"), out.get("scores")
    for key, value, kind in (("classes", classes, "O"), ("scores", scores, "f")):
        if value is None:
            continue
        if value.ndim != 2 or value.shape[0] != n or value.dtype.kind != kind:
            raise VerificationError(
                f"{where}: output {key!r} is {value.dtype} {value.shape}; Classify needs "
                f"[{n}, num_classes] of {'DT_STRING' if kind == 'O' else 'DT_FLOAT'}"
            )
        if kind == "f" and value.dtype != np.float32:
            raise VerificationError(f"{where}: scores are {value.dtype}, not DT_FLOAT")
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise VerificationError(f"{where}: classes and scores differ in dim 1")
    return scores


def check_regression(out: dict[str, np.ndarray], n: int, where: str) -> np.ndarray:
    """regressor.cc PostProcessRegressionResult: [n] or [n, 1] DT_FLOAT."""
    value = out["outputs"]
    ok_shape = value.shape == (n,) or value.shape == (n, 1)
    if not ok_shape or value.dtype != np.float32:
        raise VerificationError(
            f"{where}: output 'outputs' is {value.dtype} {value.shape}; Regress needs "
            f"[{n}] or [{n}, 1] of DT_FLOAT"
        )
    return value.reshape(-1)


def batch_size(feeds: dict[str, np.ndarray], where: str) -> int:
    """The request's 0th dimension, as BatchingSession computes it (ComputeInputSize)."""
    sizes = {}
    for name, value in feeds.items():
        if np.ndim(value) == 0:
            raise VerificationError(f"{where}: input {name!r} has no 0th dimension")
        sizes[name] = len(value)
    if len(set(sizes.values())) != 1:
        raise VerificationError(
            f"{where}: inputs differ in their 0th dimension {sizes}; TF Serving's batching "
            "refuses the request"
        )
    return next(iter(sizes.values()))


def check_batch_safe(
    session: ServingSession,
    feeds: dict[str, np.ndarray],
    fetches: dict[str, str],
    outputs: dict[str, np.ndarray],
    where: str,
    atol: float,
) -> None:
    """Runs the request as BatchingSession would inside a batch: merged with another request
    (the same rows split in two tasks) and padded with copies of the last task's first row;
    every output must have the merged size as its 0th dimension and split back into the
    answers of the request alone."""
    n = batch_size(feeds, where)
    for key, value in outputs.items():
        if np.ndim(value) == 0 or len(value) != n:
            raise VerificationError(
                f"{where}: output {key!r} has shape {np.shape(value)}, not [{n}, ...]; TF "
                "Serving's batching splits every output along dim 0 by request"
            )
    if n < 2:
        return
    k, padding = n // 2, 3
    merged = {
        name: np.concatenate([v[:k], v[k:]] + [v[k : k + 1]] * padding) for name, v in feeds.items()
    }
    answer = session.run(merged, fetches)
    for key, value in answer.items():
        if np.ndim(value) == 0 or len(value) != n + padding:
            raise VerificationError(
                f"{where}: batched output {key!r} has shape {np.shape(value)}: its 0th dimension "
                "does not equal the sum of the 0th dimension sizes of the input tensors"
            )
        for part, want in ((value[:k], outputs[key][:k]), (value[k:n], outputs[key][k:])):
            if value.dtype.kind in "fc":
                same = np.allclose(part, want, atol=atol, rtol=0)
            else:
                same = np.array_equal(part, want)
            if not same:
                raise VerificationError(
                    f"{where}: output {key!r} changes when the request is batched with another"
                )


def input_to_serialized(request_input) -> np.ndarray:
    """The serialized tf.Example tensor of an Input, as util.cc builds it: with a context,
    each element is the serialized context followed by the serialized example."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        lists = request_input.example_list_with_context
        context = lists.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in lists.examples]
    else:
        serialized = []
    if not serialized:
        raise VerificationError("Input is empty.")
    return np.array(serialized, dtype=object)


def replay_warmup(session: ServingSession, path: str, atol: float) -> int:
    """Runs every warmup record as TF Serving's warmup does (saved_model_warmup.cc), each
    also checked batch-safe; returns the number replayed."""
    if not os.path.exists(path):
        return 0
    from tensorflow_serving.apis import prediction_log_pb2

    count = 0
    for record in tf.data.TFRecordDataset(path):
        count += 1
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = entry.WhichOneof("log_type")
        where = f"warmup record {count} ({kind})"
        if kind == "predict_log":
            request = entry.predict_log.request
            name = request.model_spec.signature_name or "serving_default"
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            feeds, fetches = session.predict_task(name, inputs)
            outputs = session.run(feeds, fetches)
        elif kind in ("classify_log", "regress_log"):
            request = getattr(entry, kind).request
            name = request.model_spec.signature_name or "serving_default"
            serialized = input_to_serialized(request.input)
            feeds, fetches = session.example_task([name], serialized)
            outputs = session.run(feeds, fetches)
            out = {k.split("/", 1)[1]: v for k, v in outputs.items()}
            check = check_classification if kind == "classify_log" else check_regression
            check(out, len(serialized), where)
        elif kind == "multi_inference_log":
            request = entry.multi_inference_log.request
            names = [t.model_spec.signature_name or "serving_default" for t in request.tasks]
            serialized = input_to_serialized(request.input)
            feeds, fetches = session.example_task(names, serialized)
            outputs = session.run(feeds, fetches)
            for task, name in zip(request.tasks, names):
                out = {
                    k.split("/", 1)[1]: v for k, v in outputs.items() if k.startswith(name + "/")
                }
                if task.method_name == METHOD_NAMES["classification"]:
                    check_classification(out, len(serialized), where)
                elif task.method_name == METHOD_NAMES["regression"]:
                    check_regression(out, len(serialized), where)
                else:
                    raise VerificationError(f"{where}: unsupported method {task.method_name!r}")
        else:
            raise VerificationError(f"{where}: unsupported warmup log type")
        check_batch_safe(session, feeds, fetches, outputs, where, atol)
    if count > 1000:
        raise VerificationError(f"{count} warmup records; TF Serving allows 1000")
    return count


def _refuses(session: ServingSession, feeds: dict, fetches: dict, feature: str, where: str) -> None:
    try:
        session.run(feeds, fetches)
    except tf.errors.InvalidArgumentError as e:
        if f"feature {feature} " not in e.message:
            raise VerificationError(
                f"{where}: the error does not name {feature!r}: {e.message}"
            ) from None
        return
    raise VerificationError(f"{where}: a NaN in feature {feature!r} was answered, not refused")


def check_serving_path(
    path: str, inputs: dict, examples: list[bytes], expected: np.ndarray, atol: float
) -> dict[str, Any]:
    """Everything TF Serving does with the export, through its own loading path."""
    session = ServingSession(path)
    try:
        sigs = session.signatures
        check_method_names(sigs)
        check_example_signature("classification", sigs["classification"], {"classes", "scores"})
        check_example_signature("regression", sigs["regression"], {"outputs"})
        diffs = {}
        for name, key in (
            ("serving_default", "probabilities"),
            ("predict", "probabilities"),
            ("rank", "scores"),
        ):
            out = session.run(*session.predict_task(name, inputs))
            diffs[name] = _check(f"{name} (session)", out[key], expected, atol)
        serialized = np.array(examples, dtype=object)
        out = session.run(*session.example_task(["classification"], serialized))
        scores = check_classification(
            {k.split("/", 1)[1]: v for k, v in out.items()}, len(examples), "classification"
        )
        diffs["classification"] = _check("classification (session)", scores[:, 1], expected, atol)
        out = session.run(*session.example_task(["regression"], serialized))
        values = check_regression(
            {"outputs": out["regression/outputs"]}, len(examples), "regression"
        )
        diffs["regression"] = _check("regression (session)", values, expected, atol)
        # Context + example bytes must score as the whole example (protobuf merge).
        merged = np.array([b"".join(context_split(e)) for e in examples], dtype=object)
        out = session.run(*session.example_task(["classification"], merged))
        diffs["classification with context"] = _check(
            "classification with context (session)",
            out["classification/scores"][:, 1],
            expected,
            atol,
        )
        # A NaN in a numeric (float) feature is refused, naming it.
        numeric = [k for k, v in inputs.items() if np.asarray(v).dtype == np.float32]
        if numeric:
            name = numeric[0]
            poisoned = {k: np.array(v[:1]) for k, v in inputs.items()}
            poisoned[name] = np.full_like(poisoned[name], np.nan)
            _refuses(session, *session.predict_task("serving_default", poisoned), name, "predict")
            example = tf.train.Example.FromString(examples[0])
            example.features.feature[name].Clear()
            example.features.feature[name].float_list.value.append(float("nan"))
            bad = np.array([example.SerializeToString()], dtype=object)
            _refuses(session, *session.example_task(["classification"], bad), name, "classify")
        warmup = replay_warmup(session, os.path.join(path, WARMUP_PATH), atol)
    finally:
        session.close()
    return {"max_abs_diff": diffs, "warmup_records": warmup}


def verify(
    path: str, inputs: dict[str, np.ndarray], examples: list[bytes], expected, atol: float
) -> dict[str, Any]:
    """Every check of the module doc, in this process; raises on the first failure.

    Returns the largest differences found and the number of warmup records replayed.
    """
    loaded = tf.saved_model.load(path)
    diffs = check_signatures(loaded, inputs, examples, expected, atol)
    diffs.update(explain.check_saved_model(loaded, inputs, expected, atol))
    serving = check_serving_path(path, inputs, examples, expected, atol)
    return {
        "ok": True,
        "max_abs_diff": diffs,
        "serving_path_max_abs_diff": serving["max_abs_diff"],
        "warmup_records": serving["warmup_records"],
    }


def main(argv: list[str]) -> int:
    path, request = argv[1], argv[2]
    atol = float(argv[3]) if len(argv) > 3 else 1e-5
    data = np.load(request)
    inputs = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("input:")}
    try:
        buffer = data["example_bytes"].tobytes()
        ends = np.cumsum(data["example_lengths"])
        examples = [buffer[end - n : end] for end, n in zip(ends, data["example_lengths"])]
        result = verify(path, inputs, examples, data["expected"], atol)
    except Exception as e:  # noqa: BLE001 - any failure is reported, not raised
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
