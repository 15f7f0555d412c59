"""SavedModel export with the preprocessing inside, TF Serving signatures, atomic publish.

The exported model takes raw features, so a client sends what the data holds (DESIGN.md §2).
Signatures (see ../shared/docs/tf_serving_contract.md):

* ``serving_default`` and ``predict``: raw features by name, each [B, 1] (a multivalent
  feature as one "a|b|c" string) → ``probabilities`` [B, 1] (``predict`` adds ``class_ids``).
* ``classification``: ``inputs`` (serialized tf.Example [B]) → ``classes`` [B, 2] ("0", "1")
  and ``scores`` [B, 2] (P(0), P(1)), TF Serving's Classify contract.
* ``regression``: ``inputs`` → ``outputs`` [B], the probability (Regress contract).

A version is written to a ``temp-*`` sibling directory (TF Serving ignores non-integer
names), checked, and only then renamed to the next integer version, so neither a server nor
a later run ever sees a half-written model.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from wdl_tf import features as fs
from wdl_tf import input_pipeline

CLASS_LABELS = ("0", "1")
SIGNATURES = ("serving_default", "predict", "classification", "regression")


class ExportError(RuntimeError):
    """The written model does not reproduce the in-memory one, or cannot be published."""


def raw_input_signature(spec: fs.FeatureSpec) -> dict[str, tf.TensorSpec]:
    """The raw inputs of ``serving_default``/``predict``: one [None, 1] tensor per feature."""
    dtypes = {"float": tf.float32, "string": tf.string, "int": tf.int64}
    sig = {}
    for f in spec.features:
        dtype = tf.string if f.kind == fs.MULTIVALENT else dtypes[f.dtype]
        sig[f.name] = tf.TensorSpec([None, 1], dtype, name=f.name)
    return sig


def _serving_functions(spec, preprocessor, model) -> dict[str, tuple[Any, list]]:
    """name → (function, input_signature) for every exported signature."""

    def probabilities(raw):
        return tf.cast(model(preprocessor(raw), training=False), tf.float32)

    def serve(features):
        return {"probabilities": probabilities(features)}

    def predict(features):
        p = probabilities(features)
        return {"probabilities": p, "class_ids": tf.cast(p > 0.5, tf.int64)}

    def from_examples(inputs):
        return probabilities(input_pipeline.parse_examples(spec, inputs, with_label=False))

    def classify(inputs):
        p = from_examples(inputs)
        batch = tf.shape(p)[0]
        return {
            "classes": tf.tile(tf.constant([CLASS_LABELS]), [batch, 1]),
            "scores": tf.concat([1.0 - p, p], axis=1),
        }

    def regress(inputs):
        return {"outputs": tf.reshape(from_examples(inputs), [-1])}

    raw_sig = [raw_input_signature(spec)]
    example_sig = [tf.TensorSpec([None], tf.string, name="inputs")]
    return {
        "serving_default": (serve, raw_sig),
        "predict": (predict, raw_sig),
        "classification": (classify, example_sig),
        "regression": (regress, example_sig),
    }


def write_saved_model(spec, preprocessor, model, path: str) -> None:
    """Writes the SavedModel (preprocessing + model + the four signatures) to ``path``."""
    archive = keras.export.ExportArchive()
    archive.track(preprocessor)
    archive.track(model)
    for name, (fn, signature) in _serving_functions(spec, preprocessor, model).items():
        archive.add_endpoint(name, fn, input_signature=signature)
    archive.write_out(path, verbose=False)
    extra = os.path.join(path, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    spec.save(os.path.join(extra, "feature_spec.json"))


def _as_inputs(spec: fs.FeatureSpec, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """Raw batch (as the input pipeline parses it) → serving_default inputs."""
    return {f.name: raw[f.name] for f in spec.features}


def _examples(spec: fs.FeatureSpec, raw: dict[str, tf.Tensor]) -> tf.Tensor:
    """Serialized tf.Examples of a raw batch (multivalent "a|b" strings become lists)."""
    n = int(next(iter(raw.values())).shape[0])
    out = []
    for i in range(n):
        row = {}
        for f in spec.features:
            value = raw[f.name][i, 0].numpy()
            if isinstance(value, bytes):
                value = value.decode()
            if f.kind == fs.MULTIVALENT:
                value = [v for v in value.split(f.separator) if v]
                if f.dtype == "int":
                    value = [int(v) for v in value]
            row[f.name] = value
        out.append(input_pipeline.make_example(spec, row).SerializeToString())
    return tf.constant(out)


def check_saved_model(
    path: str, spec: fs.FeatureSpec, preprocessor, model, raw: dict[str, tf.Tensor],
    atol: float = 1e-5,
) -> dict[str, float]:
    """Reloads ``path`` and checks every signature against the in-memory model on ``raw``.

    Returns the largest absolute difference per signature.

    Raises:
      ExportError: a signature is missing, an output is not finite, or differs by > atol.
    """
    expected = model(preprocessor(raw), training=False).numpy().reshape(-1)
    if not np.all(np.isfinite(expected)):
        raise ExportError("the model's predictions contain NaN or inf; refusing to export")
    loaded = tf.saved_model.load(path)
    missing = [s for s in SIGNATURES if s not in loaded.signatures]
    if missing:
        raise ExportError(f"{path}: signature(s) {missing} missing")
    inputs = _as_inputs(spec, raw)
    examples = _examples(spec, raw)
    got = {
        "serving_default": loaded.signatures["serving_default"](**inputs)["probabilities"],
        "predict": loaded.signatures["predict"](**inputs)["probabilities"],
        "classification": loaded.signatures["classification"](inputs=examples)["scores"][:, 1],
        "regression": loaded.signatures["regression"](inputs=examples)["outputs"],
    }
    diffs = {}
    for name, value in got.items():
        value = value.numpy().reshape(-1)
        if not np.all(np.isfinite(value)):
            raise ExportError(f"{path}: signature {name!r} returned NaN or inf")
        diffs[name] = float(np.max(np.abs(value - expected)))
        if diffs[name] > atol:
            raise ExportError(
                f"{path}: signature {name!r} differs from the in-memory model by "
                f"{diffs[name]:.3g} > {atol}"
            )
    return diffs


def versions(export_base: str) -> list[int]:
    """Integer version directories under ``export_base`` (what TF Serving would load)."""
    if not os.path.isdir(export_base):
        return []
    return sorted(
        int(n) for n in os.listdir(export_base)
        if n.isdigit() and os.path.isdir(os.path.join(export_base, n))
    )


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


def export_model(
    spec: fs.FeatureSpec, preprocessor, model, export_base: str, sample_raw: dict
) -> str:
    """Writes, checks and publishes a SavedModel; returns ``<export_base>/<version>``.

    Args:
      sample_raw: a raw batch (as `input_pipeline.read_raw` yields) used to check that the
        reloaded model's signatures reproduce the in-memory predictions.
    """
    os.makedirs(export_base, exist_ok=True)
    tmp = os.path.join(export_base, f"temp-{int(time.time() * 1000)}-{os.getpid()}")
    try:
        write_saved_model(spec, preprocessor, model, tmp)
        check_saved_model(tmp, spec, preprocessor, model, sample_raw)
        return publish(tmp, export_base)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
