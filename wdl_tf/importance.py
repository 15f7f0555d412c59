"""Global importance: permutation importance of every feature, and the wide part's top tokens.

Permutation importance (Breiman, 2001; the model-agnostic form of Fisher, Rudin & Dominici,
2019): shuffle one raw feature's column across the evaluation rows, which breaks its link to
the label and to the other features while keeping its distribution, and measure the AUC drop.
Each feature is shuffled ``repeats`` times with fresh permutations; the mean drop and its
standard deviation are reported. A feature is shuffled as the model receives it, so its
crosses are shuffled with it: the drop is everything the model draws from it.

For a Wide & Deep model the same shuffles are scored by the joint logit and by each part's own
logit (the ``wide`` logit with the bias and the ``deep`` logit, `explain.part_logits`), which
shows which part leans on which feature; a wide or deep model has only ``joint``.

Top tokens: the wide part is one weight per id, so the ids with the largest (and most
negative) weights are what it memorized. Ids map back to tokens through the vocabulary, the
bucket boundaries, or, for hashed features and crosses, through the rows seen (each id with
the tokens that hashed to it there, most frequent first: hashing cannot be inverted).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from wdl_tf import evaluate_lib, explain, input_pipeline, metrics
from wdl_tf import features as fs

CROSS_JOIN = " × "


@dataclasses.dataclass(frozen=True)
class ImportanceOptions:
    """How much work.

    Attributes:
      repeats: shuffles per feature (the spread of the drops comes from them).
      max_rows: evaluation rows read (the first ones of the files).
      seed: seed of the permutations.
      top_tokens: tokens listed per wide feature, in each direction.
      batch_size: rows scored at once.
    """

    repeats: int = 5
    max_rows: int = 20_000
    seed: int = 0
    top_tokens: int = 20
    batch_size: int = 8192

    def validate(self) -> None:
        for name in ("repeats", "max_rows", "top_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")


Scorer = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def read_rows(
    spec: fs.FeatureSpec, data: evaluate_lib.EvalData, max_rows: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """(serving inputs as numpy [N, 1] per feature, labels [N]) of the first ``max_rows`` rows
    of ``data`` (multivalent lists joined into "a|b|c" strings, as the signatures take)."""
    opts = input_pipeline.ReadOptions(
        batch_size=min(max_rows, 8192),
        split=data.split,
        validation_fraction=data.validation_fraction,
        max_rows=max_rows,
    )
    parts, labels = collections.defaultdict(list), []
    try:
        for raw, y in input_pipeline.read_raw(spec, data.files, opts):
            for name, value in evaluate_lib._serving_inputs(spec, raw).items():
                parts[name].append(value.numpy())
            labels.append(y.numpy().reshape(-1))
    except tf.errors.InvalidArgumentError as e:
        input_pipeline.raise_data_error(e)
    if not labels:
        raise ValueError(f"evaluation data {data.files} has no rows")
    return {k: np.concatenate(v) for k, v in parts.items()}, np.concatenate(labels)


def model_scorer(preprocessor, model, batch_size: int = 8192) -> Scorer:
    """Scores rows with an in-memory model: the joint logit and, for Wide & Deep, each part's."""

    @tf.function(reduce_retracing=True, autograph=False)
    def logits(raw):
        return explain.part_logits(preprocessor, model, raw)

    both = explain.has_wide(model) and any(layer.name == "deep" for layer in model.layers)

    def score(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = collections.defaultdict(list)
        n = len(next(iter(rows.values())))
        for start in range(0, n, batch_size):
            batch = {k: tf.constant(v[start : start + batch_size]) for k, v in rows.items()}
            for part, value in logits(batch).items():
                if both or part == "joint":
                    out[part].append(value.numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    return score


def saved_model_scorer(path: str, batch_size: int = 8192) -> Scorer:
    """Scores rows with a SavedModel's ``serving_default`` (``joint`` only)."""
    serve = tf.saved_model.load(path).signatures["serving_default"]

    def score(rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        n = len(next(iter(rows.values())))
        for start in range(0, n, batch_size):
            batch = {k: tf.constant(v[start : start + batch_size]) for k, v in rows.items()}
            out.append(serve(**batch)["probabilities"].numpy().reshape(-1))
        return {"joint": np.concatenate(out)}

    return score


def permutation_importance(
    score: Scorer,
    rows: dict[str, np.ndarray],
    labels: np.ndarray,
    repeats: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """AUC drops when each feature's column is shuffled (module doc).

    Returns a dict: ``baseline_auc`` per part, ``features`` (per feature and part: ``mean``
    and ``std`` of the drops, and the ``drops``), ``ranking`` per part (features by mean drop,
    largest first), ``rows`` and ``repeats``.

    Raises:
      ValueError: labels of one class only (AUC is undefined).
    """
    if len(np.unique(labels)) < 2:
        raise ValueError("permutation importance needs both labels in the evaluation rows")
    baseline = {k: metrics.auc(labels, v) for k, v in score(rows).items()}
    rng = np.random.default_rng(seed)
    features = {}
    n = len(labels)
    for name in rows:
        drops = collections.defaultdict(list)
        for _ in range(repeats):
            shuffled = dict(rows)
            shuffled[name] = rows[name][rng.permutation(n)]
            for part, s in score(shuffled).items():
                drops[part].append(baseline[part] - metrics.auc(labels, s))
        features[name] = {
            part: {"mean": float(np.mean(d)), "std": float(np.std(d)), "drops": d}
            for part, d in drops.items()
        }
    ranking = {
        part: sorted(features, key=lambda f, p=part: -features[f][p]["mean"]) for part in baseline
    }
    return {
        "rows": n,
        "repeats": repeats,
        "baseline_auc": baseline,
        "features": features,
        "ranking": ranking,
    }


# ----------------------------------------------------------------------------------------
# Top tokens of the wide part.


def _bucket_label(boundaries: list[float], bucket: int) -> str:
    lo = "-inf" if bucket == 0 else f"{boundaries[bucket - 1]:g}"
    hi = "inf" if bucket == len(boundaries) else f"{boundaries[bucket]:g}"
    return f"[{lo}, {hi})"


def _row_tokens(spec: fs.FeatureSpec, preprocessor, name: str, rows: dict) -> list[list[str]]:
    """Per row, the tokens of raw feature ``name`` in the order the preprocessor encodes them
    (a numeric feature as its bucket's range)."""
    f = spec.feature(name)
    column = rows[name].reshape(-1)
    if f.kind == fs.NUMERIC:
        boundaries = preprocessor.state.features[name].bucket_boundaries
        buckets = np.searchsorted(boundaries, column.astype(np.float64), side="right")
        return [[_bucket_label(boundaries, int(b))] for b in buckets]
    text = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in column]
    text = [t if t != "" else "(missing)" for t in text]
    if f.kind == fs.MULTIVALENT:
        return [[t for t in v.split(f.separator) if t] for v in text]
    return [[t] for t in text]


def _observed_tokens(
    spec, preprocessor, name: str, rows: dict, ids: np.ndarray
) -> dict[int, collections.Counter]:
    """id → Counter of the tokens that got that id (``ids``: the encoded column) in ``rows``."""
    crosses = {c.key: c for c in spec.crosses}
    raw_name = name.removesuffix("_bucket") if name not in spec.feature_names else name
    parts = crosses[name].features if name in crosses else (raw_name,)
    tokens = [_row_tokens(spec, preprocessor, p, rows) for p in parts]
    multi = next((i for i, p in enumerate(parts) if spec.feature(p).kind == fs.MULTIVALENT), None)
    out = collections.defaultdict(collections.Counter)
    for r in range(ids.shape[0]):
        length = len(tokens[multi][r]) if multi is not None else 1
        for j in range(length):
            token = CROSS_JOIN.join(
                t[r][j] if i == multi else t[r][0] for i, t in enumerate(tokens)
            )
            out[int(ids[r, j])][token] += 1
    return out


def _vocabulary_tokens(spec, state, name: str) -> dict[int, str] | None:
    """id → token for a feature with a learned vocabulary or a bucketized numeric, else None.

    Keras lookups put the ``num_oov_buckets`` OOV ids first, then the vocabulary in order; a
    multivalent feature's ids are shifted by one more (id 0 pads its lists).
    """
    f = spec.feature(name) if name in spec.feature_names else None
    if f is None:
        numeric = name.removesuffix("_bucket")
        if name.endswith("_bucket") and numeric in spec.feature_names:
            boundaries = state.features[numeric].bucket_boundaries
            return {i: _bucket_label(boundaries, i) for i in range(len(boundaries) + 1)}
        return None
    if f.vocabulary is None:
        return None
    oov = f.vocabulary.num_oov_buckets
    shift = 1 if f.kind == fs.MULTIVALENT else 0
    tokens = {shift + i: f"(OOV bucket {i})" for i in range(oov)}
    for i, token in enumerate(state.features[name].vocabulary or []):
        tokens[shift + oov + i] = str(token)
    return tokens


def top_tokens(spec, preprocessor, model, rows: dict[str, np.ndarray], k: int) -> dict:
    """Per wide feature and cross, the ``k`` ids with the largest and the most negative weights
    and their tokens (module doc); a dense wide numeric has one weight, shown as such.

    Raises:
      explain.NoWidePartError: a deep-only model.
    """
    if not explain.has_wide(model):
        raise explain.NoWidePartError("the model is deep-only: it has no wide weights")
    wide = model.get_layer("wide")
    names = explain.feature_names(spec)
    encoded = preprocessor({k: tf.constant(v) for k, v in rows.items()})
    out = {}
    for f in wide.features:
        weights = wide.tables[f.name].numpy().reshape(-1)
        label = names.get(f.name, f.name)
        if f.kind == "dense":
            out[label] = {"weight": float(weights[0])}
            continue
        vocabulary = _vocabulary_tokens(spec, preprocessor.state, f.name)
        ids = encoded[f.name].numpy()
        observed = _observed_tokens(spec, preprocessor, f.name, rows, ids)

        def entry(i, vocabulary=vocabulary, observed=observed, weights=weights):
            seen = observed.get(int(i), collections.Counter())
            if vocabulary is not None:
                token, others = vocabulary.get(int(i)), 0
            else:
                common = seen.most_common()
                token = common[0][0] if common else None
                others = max(len(common) - 1, 0)
            return {
                "id": int(i),
                "token": token,
                "other_tokens": others,
                "weight": float(weights[i]),
                "rows": int(sum(seen.values())),
            }

        order = np.argsort(weights, kind="stable")
        positive = [i for i in order[::-1][:k] if weights[i] > 0]
        negative = [i for i in order[:k] if weights[i] < 0]
        out[label] = {
            "nonzero_weights": int(np.count_nonzero(weights)),
            "top_positive": [entry(i) for i in positive],
            "top_negative": [entry(i) for i in negative],
        }
    return out


# ----------------------------------------------------------------------------------------
# The command (scripts/importance.py).


def importance(
    *,
    model_dir: str | None = None,
    saved_model: str | None = None,
    eval_files: str = "",
    feature_spec: str = "",
    options: ImportanceOptions = ImportanceOptions(),
) -> dict[str, Any]:
    """Permutation importance (and top tokens for a model dir with a wide part) of a model dir
    or a SavedModel (exactly one); the defaults follow `evaluate_lib.evaluate`.

    Raises:
      ValueError: a bad argument, named.
    """
    options.validate()
    if bool(model_dir) == bool(saved_model):
        raise ValueError(
            f"give exactly one of --model_dir and --saved_model (got model_dir={model_dir!r}, "
            f"saved_model={saved_model!r})"
        )
    spec = fs.load(feature_spec) if feature_spec else None
    if model_dir:
        config, own_spec, preprocessor, model = evaluate_lib.load_model_dir(model_dir)
        spec = spec or own_spec
        data = (
            evaluate_lib._as_data(eval_files)
            if eval_files
            else evaluate_lib.default_eval_data(config, model_dir)
        )
        score = model_scorer(preprocessor, model, options.batch_size)
        source = {"model_dir": model_dir, "model_type": config.model.model_type}
    else:
        if not eval_files:
            raise ValueError("eval_files: required with --saved_model (it names no data)")
        spec = spec or fs.load(
            evaluate_lib._required(saved_model, evaluate_lib.SAVED_MODEL_SPEC, "saved_model")
        )
        data = evaluate_lib._as_data(eval_files)
        score = saved_model_scorer(saved_model, options.batch_size)
        source = {"saved_model": saved_model}
    rows, labels = read_rows(spec, data, options.max_rows)
    result = {**source, "eval_files": data.files, "split": data.split}
    result.update(permutation_importance(score, rows, labels, options.repeats, options.seed))
    if model_dir and explain.has_wide(model):
        result["top_tokens"] = top_tokens(spec, preprocessor, model, rows, options.top_tokens)
    return result


def format_importance(result: dict[str, Any]) -> str:
    """One line per feature: mean AUC drop ± std per part, in the joint ranking's order."""
    parts = list(result["baseline_auc"])
    base = ", ".join(f"{p} {result['baseline_auc'][p]:.4f}" for p in parts)
    lines = [
        f"baseline AUC: {base} ({result['rows']} rows, {result['repeats']} shuffles per feature)",
        f"{'feature':<24}" + "".join(f"{p + ' AUC drop':>24}" for p in parts),
    ]
    for name in result["ranking"]["joint"]:
        drops = result["features"][name]
        cells = "".join(f"{drops[p]['mean']:>+14.4f} ± {drops[p]['std']:.4f}" for p in parts)
        lines.append(f"{name:<24}{cells}")
    return "\n".join(lines)
