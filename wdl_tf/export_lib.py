"""SavedModel export with the preprocessing inside, TF Serving signatures, verified publish.

The exported model takes raw features, so a client sends what the data holds (DESIGN.md §2).
Signatures (see ../shared/docs/tf_serving_contract.md):

* ``serving_default`` and ``predict``: raw features by name, each [B, 1] (a multivalent
  feature as one "a|b|c" string) → ``probabilities`` [B, 1] (``predict`` adds ``class_ids``).
* ``classification``: ``inputs`` (serialized tf.Example [B]) → ``classes`` [B, 2] ("0", "1")
  and ``scores`` [B, 2] (P(0), P(1)), TF Serving's Classify contract.
* ``regression``: ``inputs`` → ``outputs`` [B], the probability (Regress contract).
* ``rank`` (paper P10: all candidates of a request in one batch): raw features where each
  feature has either 1 row (the user/context, broadcast) or N rows (the candidates) →
  ``scores`` [N], ``top_k_indices`` and ``top_k_scores`` [min(k, N)].
* ``explain`` (models with a wide part, `wdl_tf.explain`): ``serving_default``'s inputs →
  ``logit``, ``bias``, ``wide_logit``, ``deep_logit`` and ``contribution_<name>`` per wide
  feature and cross, each [B], with logit = bias + wide_logit + deep_logit exactly.

Numeric features in tf.Examples may be int64 lists: TF Serving's REST Classify/Regress
turn a JSON ``39`` (no decimal point) into one.

Publishing is the paper's dry run (P9): the version is written to a ``temp-*`` sibling
directory (TF Serving ignores non-integer names), with warmup requests in
``assets.extra/tf_serving_warmup_requests``; a fresh process loads it, replays the warmup
requests and compares every signature with the in-memory model; optionally the eval AUC
must not be worse than the published version's; only then is it renamed to the next
integer version, and versions beyond ``keep_versions`` are removed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from wdl_tf import explain, input_pipeline, tfrecord
from wdl_tf import features as fs

log = logging.getLogger("wdl_tf")

CLASS_LABELS = ("0", "1")
SIGNATURES = ("serving_default", "predict", "classification", "regression", "rank")
WARMUP_FILE = "tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving refuses a warmup file with more records


class ExportError(RuntimeError):
    """The written model does not reproduce the in-memory one, or cannot be published."""


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """How to publish.

    Attributes:
      model_name: the name warmup requests carry (TF Serving ignores it during warmup).
      top_k: candidates returned by the ``rank`` signature's top-k outputs.
      keep_versions: keep only this many newest integer versions (0 = keep all).
      max_auc_drop: refuse to publish when the eval AUC is lower than the latest published
        version's by more than this (None = no gate).
      atol: largest allowed difference between reloaded and in-memory predictions.
    """

    model_name: str = "census"
    top_k: int = 10
    keep_versions: int = 0
    max_auc_drop: float | None = None
    atol: float = 1e-5

    def validate(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k: must be >= 1, got {self.top_k}")
        if self.keep_versions < 0:
            raise ValueError(f"keep_versions: must be >= 0, got {self.keep_versions}")
        if self.max_auc_drop is not None and self.max_auc_drop < 0:
            raise ValueError(f"max_auc_drop: must be >= 0, got {self.max_auc_drop}")


def raw_input_signature(spec: fs.FeatureSpec) -> dict[str, tf.TensorSpec]:
    """The raw inputs of ``serving_default``/``predict``: one [None, 1] tensor per feature."""
    dtypes = {"float": tf.float32, "string": tf.string, "int": tf.int64}
    sig = {}
    for f in spec.features:
        dtype = tf.string if f.kind == fs.MULTIVALENT else dtypes[f.dtype]
        sig[f.name] = tf.TensorSpec([None, 1], dtype, name=f.name)
    return sig


def _broadcast_candidates(features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Broadcasts 1-row (context) features to the N rows of the candidate features."""
    rows = {k: tf.shape(v)[0] for k, v in features.items()}
    n = tf.reduce_max(tf.stack(list(rows.values())))
    out = {}
    for name, x in features.items():
        check = tf.debugging.assert_equal(
            (rows[name] == 1) | (rows[name] == n),
            True,
            message=f"rank: feature {name} must have 1 row (context) or N rows (candidates)",
        )
        with tf.control_dependencies([check]):
            out[name] = tf.broadcast_to(x, tf.stack([n, 1]))
    return out


def serving_functions(spec, preprocessor, model, top_k: int = 10) -> dict[str, tuple]:
    """name → (function, input_signature) for every exported signature."""

    def probabilities(raw):
        return tf.cast(model(preprocessor(raw), training=False), tf.float32)

    def serve(features):
        return {"probabilities": probabilities(features)}

    def predict(features):
        p = probabilities(features)
        return {"probabilities": p, "class_ids": tf.cast(p > 0.5, tf.int64)}

    def from_examples(inputs):
        raw = input_pipeline.parse_examples(spec, inputs, with_label=False, lenient_numbers=True)
        return probabilities(raw)

    def classify(inputs):
        p = from_examples(inputs)
        batch = tf.shape(p)[0]
        return {
            "classes": tf.tile(tf.constant([CLASS_LABELS]), [batch, 1]),
            "scores": tf.concat([1.0 - p, p], axis=1),
        }

    def regress(inputs):
        return {"outputs": tf.reshape(from_examples(inputs), [-1])}

    def rank(features):
        scores = tf.reshape(probabilities(_broadcast_candidates(features)), [-1])
        top = tf.math.top_k(scores, k=tf.minimum(top_k, tf.shape(scores)[0]))
        return {"scores": scores, "top_k_indices": top.indices, "top_k_scores": top.values}

    raw_sig = [raw_input_signature(spec)]
    example_sig = [tf.TensorSpec([None], tf.string, name="inputs")]
    return {
        "serving_default": (serve, raw_sig),
        "predict": (predict, raw_sig),
        "classification": (classify, example_sig),
        "regression": (regress, example_sig),
        "rank": (rank, raw_sig),
        **explain.signatures(preprocessor, model, raw_sig),
    }


def write_saved_model(spec, preprocessor, model, path: str, top_k: int = 10) -> None:
    """Writes the SavedModel (preprocessing + model + the signatures) to ``path``."""
    archive = keras.export.ExportArchive()
    archive.track(preprocessor)
    archive.track(model)
    for name, (fn, signature) in serving_functions(spec, preprocessor, model, top_k).items():
        archive.add_endpoint(name, fn, input_signature=signature)
    archive.write_out(path, verbose=False)
    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    spec.save(os.path.join(extra, "feature_spec.json"))


# ----------------------------------------------------------------------------------------
# Sample requests: the same rows feed warmup and verification.


def raw_inputs(spec: fs.FeatureSpec, raw: dict[str, tf.Tensor]) -> dict[str, np.ndarray]:
    """A raw batch (as the input pipeline parses it) as serving_default inputs (numpy)."""
    return {f.name: np.asarray(raw[f.name]) for f in spec.features}


def serialized_examples(spec: fs.FeatureSpec, inputs: dict[str, np.ndarray]) -> np.ndarray:
    """Serialized tf.Examples of a raw batch (multivalent "a|b" strings become lists)."""
    raw = {name: tf.constant(value) for name, value in inputs.items()}
    return np.array(list(tfrecord.serialize_batch(spec, raw).numpy()), dtype=object)


def write_warmup(
    path: str,
    inputs: dict[str, np.ndarray],
    examples: np.ndarray,
    model_name: str,
    max_rows: int = 64,
    predict_signatures: tuple[str, ...] = ("serving_default", "rank"),
) -> int:
    """Writes predict, rank, classify and regress PredictionLogs; returns the record count.

    Needs the ``serving`` extra (tensorflow-serving-api); without it, no warmup file is
    written (TF Serving loads a model without one, only its first requests are slower).
    """
    try:
        from tensorflow_serving.apis import (
            classification_pb2,
            predict_pb2,
            prediction_log_pb2,
            regression_pb2,
        )
    except ImportError:
        log.warning("tensorflow-serving-api is not installed: no warmup requests written")
        return 0
    n = min(max_rows, len(examples))
    logs = []
    for signature in predict_signatures:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value[:n]))
        logs.append(
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
        )
    parsed = [tf.train.Example.FromString(e) for e in examples[:n]]
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = model_name
    classify.model_spec.signature_name = "classification"
    classify.input.example_list.examples.extend(parsed)
    logs.append(
        prediction_log_pb2.PredictionLog(
            classify_log=prediction_log_pb2.ClassifyLog(request=classify)
        )
    )
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = model_name
    regress.model_spec.signature_name = "regression"
    regress.input.example_list.examples.extend(parsed)
    logs.append(
        prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress))
    )
    assert len(logs) <= MAX_WARMUP_RECORDS
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for entry in logs:
            writer.write(entry.SerializeToString())
    return len(logs)


def verify_in_fresh_process(
    path: str, inputs: dict, examples: np.ndarray, expected: np.ndarray, atol: float
) -> dict[str, Any]:
    """Loads ``path`` in a new Python process and checks it (see `wdl_tf.verify_export`).

    Raises:
      ExportError: with the checker's message, when any check fails.
    """
    with tempfile.TemporaryDirectory(prefix="wdl_verify_") as tmp:
        request = os.path.join(tmp, "request.npz")
        # Strings as fixed-width bytes: npz then loads without pickle.
        arrays = {
            f"input:{k}": v.astype(bytes) if v.dtype == object else v for k, v in inputs.items()
        }
        # Serialized protos may end in NUL bytes, which numpy's bytes dtype strips: store
        # them as one byte buffer with lengths.
        np.savez(
            request,
            example_bytes=np.frombuffer(b"".join(examples), dtype=np.uint8),
            example_lengths=np.array([len(e) for e in examples], dtype=np.int64),
            expected=expected,
            **arrays,
        )
        proc = subprocess.run(
            [sys.executable, "-m", "wdl_tf.verify_export", path, request, str(atol)],
            capture_output=True,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        detail = lines[-1] if lines else proc.stderr[-2000:]
        raise ExportError(f"verification of {path} failed: {detail}")
    return json.loads(lines[-1])


# ----------------------------------------------------------------------------------------
# Versions.


def versions(export_base: str) -> list[int]:
    """Integer version directories under ``export_base`` (what TF Serving would load)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(
        int(n)
        for n in os.listdir(export_base)
        if n.isdigit() and os.path.isdir(os.path.join(export_base, n))
    )


def published_metrics(export_base: str) -> dict[str, Any] | None:
    """The eval metrics stored with the latest published version, if any."""
    latest = versions(export_base)
    if not latest:
        return None
    path = os.path.join(export_base, str(latest[-1]), "assets.extra", "metrics.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def publish(tmp_path: str, export_base: str) -> str:
    """Renames a finished temp export to the next integer version; returns its path.

    The rename is atomic on one file system; if another writer takes the same number
    first, the next one is tried.
    """
    for _ in range(100):
        version = (versions(export_base) or [0])[-1] + 1
        final = os.path.join(export_base, str(version))
        try:
            os.rename(tmp_path, final)
            return final
        except OSError:
            if not os.path.exists(final):
                raise
    raise ExportError(f"could not publish {tmp_path} under {export_base}")


def prune_versions(export_base: str, keep: int) -> list[int]:
    """Removes all but the ``keep`` newest versions (0 = keep all); returns those removed.

    Each is first renamed to a non-integer name, so a server sees it vanish at once.
    """
    if keep <= 0:
        return []
    removed = versions(export_base)[:-keep]
    for version in removed:
        doomed = os.path.join(export_base, f"temp-removing-{version}-{os.getpid()}")
        os.rename(os.path.join(export_base, str(version)), doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return removed


def export_model(
    spec: fs.FeatureSpec,
    preprocessor,
    model,
    export_base: str,
    sample_raw: dict,
    metrics: dict[str, Any] | None = None,
    options: ExportOptions = ExportOptions(),
    extra_assets: tuple[str, ...] = (),
) -> str:
    """Writes, verifies and publishes a SavedModel; returns ``<export_base>/<version>``.

    Args:
      sample_raw: a raw batch (as `input_pipeline.read_raw` yields): the warmup requests and
        the rows on which the reloaded model must reproduce the in-memory predictions.
      metrics: the eval metrics, stored in ``assets.extra/metrics.json`` (and gated on).
      extra_assets: files copied into ``assets.extra/`` (e.g. the training statistics).

    Raises:
      ExportError: a failed check; nothing is published and the temp directory is removed.
    """
    options.validate()
    if options.max_auc_drop is not None and metrics is not None:
        previous = published_metrics(export_base)
        if previous is not None and metrics["auc"] < previous["auc"] - options.max_auc_drop:
            raise ExportError(
                f"eval AUC {metrics['auc']:.4f} is worse than the published version's "
                f"{previous['auc']:.4f} by more than max_auc_drop={options.max_auc_drop}; "
                "not publishing"
            )
    expected = model(preprocessor(sample_raw), training=False).numpy().reshape(-1)
    if not np.all(np.isfinite(expected)):
        raise ExportError("the model's predictions contain NaN or inf; refusing to export")
    inputs = raw_inputs(spec, sample_raw)
    examples = serialized_examples(spec, inputs)

    os.makedirs(export_base, exist_ok=True)
    tmp = os.path.join(export_base, f"temp-{int(time.time() * 1000)}-{os.getpid()}")
    try:
        write_saved_model(spec, preprocessor, model, tmp, options.top_k)
        extra = os.path.join(tmp, "assets.extra")
        if metrics is not None:
            with open(os.path.join(extra, "metrics.json"), "w") as f:
                json.dump(metrics, f, indent=2)
        for asset in extra_assets:
            shutil.copy(asset, extra)
        signatures = ("serving_default", "rank", *explain.signature_names(model))
        write_warmup(
            os.path.join(extra, WARMUP_FILE),
            inputs,
            examples,
            options.model_name,
            predict_signatures=signatures,
        )
        verify_in_fresh_process(tmp, inputs, examples, expected, options.atol)
        final = publish(tmp, export_base)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    removed = prune_versions(export_base, options.keep_versions)
    if removed:
        log.info("removed old versions %s", removed)
    return final
