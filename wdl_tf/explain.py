"""Exact per-feature explanations of a prediction: the wide part's terms of the logit.

The wide part is linear (paper eq. 3): its logit is the sum, over the wide features and
crosses, of the weights of the row's ids (`model.WideLinear.contributions`, the very terms the
layer adds). So, exactly, with ``sigmoid(logit)`` the served probability::

    wide_logit = Σ_f contribution_f
    logit      = bias + wide_logit + deep_logit

``bias`` is the joint bias b (plus ln(rate) when negatives were down-sampled, see
`model.SamplingCorrection`); ``deep_logit`` is the deep part's output (zeros for a wide model),
which has no exact per-feature split. A deep-only model has no wide part, so it gets no
``explain`` signature: zeros would pretend to be an explanation.

Every output of the ``explain`` signature is [B]: TF Serving's batching splits every output
along dimension 0, so a constant such as the bias is broadcast to the batch too.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import tensorflow as tf

from wdl_tf import features as fs

EXPLAIN = "explain"
CONTRIBUTION = "contribution_"
OUTPUTS = ("logit", "bias", "wide_logit", "deep_logit")


class NoWidePartError(ValueError):
    """The model has no wide part, so there is no exact per-feature explanation."""


def _layer(model, name: str):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def has_wide(model) -> bool:
    """Whether the Keras model has a wide (linear) part."""
    return _layer(model, "wide") is not None


def feature_names(spec: fs.FeatureSpec) -> dict[str, str]:
    """Encoded wide input → the name its contribution is reported under: the raw feature
    (``age`` for the ``age_bucket`` ids) or the cross's key."""
    names = {}
    for f in spec.features:
        if f.kind == fs.NUMERIC and f.bucketize is not None:
            names[f"{f.name}_bucket"] = f.name
    return names


def _offset(model) -> float:
    correction = _layer(model, "sampling_correction")
    return 0.0 if correction is None else correction.offset


def _deep_logit(model, encoded: dict[str, tf.Tensor]) -> tf.Tensor | None:
    deep = _layer(model, "deep")
    if deep is None:
        return None
    return deep({f.name: encoded[f.name] for f in deep.features}, training=False)


def explain_outputs(preprocessor, model, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The ``explain`` outputs (module doc) of a raw batch, every one [B] float32.

    Raises:
      NoWidePartError: a deep-only model.
    """
    wide = _layer(model, "wide")
    if wide is None:
        raise NoWidePartError("the model is deep-only: it has no wide part to explain")
    encoded = preprocessor(raw)
    terms = wide.contributions({f.name: encoded[f.name] for f in wide.features})
    # The same terms in the same order as the layer's add_n, so wide_logit is bit-identical.
    wide_sum = tf.add_n(list(terms.values()))
    batch = tf.shape(wide_sum)[0]
    deep = _deep_logit(model, encoded)
    logit = wide_sum + wide.bias
    if deep is not None:
        logit = logit + deep
    logit = logit + _offset(model)
    names = feature_names(preprocessor.spec)
    out = {
        "logit": tf.reshape(logit, [-1]),
        "bias": tf.fill([batch], wide.bias[0] + _offset(model)),
        "wide_logit": tf.reshape(wide_sum, [-1]),
        "deep_logit": tf.zeros([batch]) if deep is None else tf.reshape(deep, [-1]),
    }
    for name, term in terms.items():
        out[CONTRIBUTION + names.get(name, name)] = tf.reshape(term, [-1])
    return {k: tf.cast(v, tf.float32) for k, v in out.items()}


def part_logits(preprocessor, model, raw: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    """The logits [B] of the model (``joint``, sigmoid of it = the model's output) and, when it
    has them, of its ``wide`` part (with the bias) and its ``deep`` part (without): each part's
    own ranking of the rows."""
    encoded = preprocessor(raw)
    wide = _layer(model, "wide")
    deep = _deep_logit(model, encoded)
    out = {}
    if wide is not None:
        out["wide"] = tf.reshape(wide({f.name: encoded[f.name] for f in wide.features}), [-1])
    if deep is not None:
        out["deep"] = tf.reshape(deep, [-1])
    joint = tf.add_n(list(out.values())) + _offset(model)
    return {"joint": joint, **out}


def signatures(preprocessor, model, raw_signature: list) -> dict[str, tuple]:
    """``{"explain": (function, input signature)}`` for a model with a wide part, else {}.

    The input signature is ``serving_default``'s (raw features by name).
    """
    if not has_wide(model):
        return {}

    def explain(features):
        return explain_outputs(preprocessor, model, features)

    return {EXPLAIN: (explain, raw_signature)}


def signature_names(model) -> tuple[str, ...]:
    """The Predict signatures this module adds for ``model`` (for warmup requests)."""
    return (EXPLAIN,) if has_wide(model) else ()


# ----------------------------------------------------------------------------------------
# Checking the identities.


def identity_errors(outputs: dict[str, Any], probabilities: np.ndarray) -> dict[str, float]:
    """The largest violation, over the batch, of each identity of the module doc.

    Returns ``sum_of_contributions`` (|wide_logit - Σ contributions|), ``logit`` (|logit -
    (bias + wide_logit + deep_logit)|) and ``probability`` (|sigmoid(logit) - probabilities|).
    """
    o = {k: np.asarray(v, dtype=np.float64).reshape(-1) for k, v in outputs.items()}
    contributions = [v for k, v in o.items() if k.startswith(CONTRIBUTION)]
    p = np.asarray(probabilities, dtype=np.float64).reshape(-1)
    return {
        "sum_of_contributions": float(np.max(np.abs(o["wide_logit"] - np.sum(contributions, 0)))),
        "logit": float(
            np.max(np.abs(o["logit"] - (o["bias"] + o["wide_logit"] + o["deep_logit"])))
        ),
        "probability": float(np.max(np.abs(1.0 / (1.0 + np.exp(-o["logit"])) - p))),
    }


def check_saved_model(loaded, inputs: dict, expected: np.ndarray, atol: float) -> dict[str, float]:
    """Checks a loaded SavedModel's ``explain`` signature against ``expected`` probabilities.

    Returns {} when it has no ``explain`` signature (a deep-only model).

    Raises:
      AssertionError: an identity off by more than ``atol``, or an output without the batch
        dimension.
    """
    if EXPLAIN not in loaded.signatures:
        return {}
    tensors = {k: tf.constant(v) for k, v in inputs.items()}
    outputs = {k: v.numpy() for k, v in loaded.signatures[EXPLAIN](**tensors).items()}
    for key, value in outputs.items():
        if value.shape != (len(expected),):
            raise AssertionError(f"explain output {key!r} has shape {value.shape}, not [batch]")
    errors = identity_errors(outputs, expected)
    worst = max(errors, key=errors.get)
    if not errors[worst] <= atol:
        raise AssertionError(f"explain: identity {worst!r} is off by {errors[worst]:.3g}")
    return {f"explain {k}": v for k, v in errors.items()}


# ----------------------------------------------------------------------------------------
# Explaining rows with an exported SavedModel (scripts/explain.py).


@dataclasses.dataclass
class Contribution:
    name: str  # a feature or a cross
    value: str  # the row's raw value(s): "Bachelors", "Bachelors × Exec-managerial"
    contribution: float


@dataclasses.dataclass
class RowExplanation:
    probability: float
    logit: float
    bias: float
    wide_logit: float
    deep_logit: float
    contributions: list[Contribution]  # by |contribution|, largest first


def load_explain(path: str):
    """The ``explain`` signature of the SavedModel at ``path``.

    Raises:
      NoWidePartError: the export has no ``explain`` signature because its model is
        deep-only.
      ValueError: not a SavedModel, or one with a wide part exported without ``explain``.
    """
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"saved_model: {path!r} is not a SavedModel directory (no saved_model.pb)")
    loaded = tf.saved_model.load(path)
    if EXPLAIN in loaded.signatures:
        return loaded.signatures[EXPLAIN]
    variables = [v.name for v in loaded.variables]
    if any(name.startswith("wide/") for name in variables):
        raise ValueError(
            f"saved_model: {path!r} has a wide part but no {EXPLAIN!r} signature (exported "
            f"before it existed); its signatures are {sorted(loaded.signatures)}: re-export it"
        )
    raise NoWidePartError(
        f"saved_model: {path!r} is a deep-only model: it has no wide part, so there is no "
        "exact per-feature explanation (its deep logit has no per-feature split)"
    )


def _value_text(spec: fs.FeatureSpec, sample, name: str, row: int) -> str:
    f = spec.feature(name)
    value = sample.columns[name][row]
    if f.kind == fs.NUMERIC:
        return "(missing)" if np.isnan(value) else f"{value:g}"
    if f.kind == fs.MULTIVALENT:
        return f.separator.join(value) if value else "(missing)"
    return "(missing)" if value is None else str(value)


def explain_sample(path: str, sample) -> list[RowExplanation]:
    """Explains every row of a `samples.Sample` with the SavedModel at ``path``."""
    fn = load_explain(path)
    inputs = {k: tf.constant(v) for k, v in sample.serving_inputs().items()}
    out = {k: v.numpy().reshape(-1) for k, v in fn(**inputs).items()}
    spec = sample.spec
    crosses = {c.key: c.features for c in spec.crosses}
    explanations = []
    for i in range(sample.rows):
        items = []
        for key, values in out.items():
            if not key.startswith(CONTRIBUTION):
                continue
            name = key[len(CONTRIBUTION) :]
            parts = crosses.get(name, (name,))
            text = " × ".join(_value_text(spec, sample, p, i) for p in parts)
            items.append(Contribution(name, text, float(values[i])))
        items.sort(key=lambda c: -abs(c.contribution))
        logit = float(out["logit"][i])
        explanations.append(
            RowExplanation(
                probability=float(1.0 / (1.0 + np.exp(-logit))),
                logit=logit,
                bias=float(out["bias"][i]),
                wide_logit=float(out["wide_logit"][i]),
                deep_logit=float(out["deep_logit"][i]),
                contributions=items,
            )
        )
    return explanations


def format_explanations(explanations: list[RowExplanation], top: int | None = None) -> str:
    """Per row: the probability, the logit's split, the contributions by |contribution|."""
    lines = []
    for i, e in enumerate(explanations):
        lines.append(
            f"row {i}: probability {e.probability:.4f} = sigmoid(logit {e.logit:+.4f}); "
            f"logit = bias {e.bias:+.4f} + wide {e.wide_logit:+.4f} + deep {e.deep_logit:+.4f}"
        )
        width = max([len(c.name) for c in e.contributions] + [7])
        shown = e.contributions if top is None else e.contributions[:top]
        for c in shown:
            lines.append(f"  {c.name:<{width}}  {c.contribution:+.4f}  {c.value}")
        if len(shown) < len(e.contributions):
            lines.append(f"  ... {len(e.contributions) - len(shown)} more")
    return "\n".join(lines)
