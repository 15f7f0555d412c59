"""Offline evaluation of a trained model: exact AUC etc., per-user ranking metrics, calibration.

Two ways to get the model (scripts/evaluate.py offers both):

* `evaluate_saved_model`: an exported SavedModel, through its ``serving_default`` signature
  (raw features in, ``probabilities`` out): exactly what TF Serving would score;
* `evaluate_model_dir`: a training run's model dir, rebuilt from its ``config.json``,
  ``feature_spec.json``, ``preprocessing.json`` and kept weights (the best epoch's under
  early stopping, else the latest checkpoint's).

Both stream the evaluation files through `input_pipeline.read_raw`, collect labels and
scores (and the user id column, when a user feature is named), and return one dict:
`metrics.binary_metrics`, then ``calibration`` (`metrics.calibration`) and, with a user
feature, ``ranking`` (`metrics.ranking_metrics`: GAUC, NDCG/HitRate/MAP at k).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tensorflow as tf

from wdl_tf import atomic, datasets, input_pipeline, metrics, run_dir
from wdl_tf import features as fs
from wdl_tf.config import TrainConfig

SAVED_MODEL_SPEC = os.path.join("assets.extra", "feature_spec.json")


@dataclasses.dataclass(frozen=True)
class EvalData:
    """What to read: files, and optionally their validation split (random by a hash with
    ``split_seed``, or by time with ``time_split``)."""

    files: list[str]
    split: str | None = None
    validation_fraction: float = 0.1
    split_seed: int = 0
    time_split: input_pipeline.TimeSplit | None = None


# ----------------------------------------------------------------------------------------
# Collecting predictions.


def _check_user_feature(spec: fs.FeatureSpec, user_feature: str | None) -> None:
    if user_feature is not None and user_feature not in spec.feature_names:
        raise ValueError(
            f"user_feature: {user_feature!r} is not a feature of the spec; "
            f"features are {list(spec.feature_names)}"
        )


def _joined(value: tf.RaggedTensor, separator: str) -> tf.Tensor:
    """A ragged list per row (TFRecord multivalent data) as one "a|b|c" string per row."""
    if value.dtype != tf.string:
        value = tf.strings.as_string(value)
    return tf.strings.reduce_join(value, axis=-1, separator=separator)


def _user_column(value) -> np.ndarray:
    """A raw feature batch as a 1-D numpy array of ids (a ragged list joined by "|")."""
    if isinstance(value, tf.RaggedTensor):
        value = _joined(value, "|")
    return np.asarray(value).reshape(-1)


def _serving_inputs(spec: fs.FeatureSpec, raw: dict) -> dict[str, tf.Tensor]:
    """A raw batch as ``serving_default`` inputs: [B, 1] each (a ragged multivalent list, as
    TFRecord data parses, becomes the "a|b|c" string the signature takes)."""
    out = {}
    for f in spec.features:
        value = raw[f.name]
        if isinstance(value, tf.RaggedTensor):
            value = _joined(value, f.separator)
        out[f.name] = tf.reshape(value, [-1, 1])
    return out


def _read_options(data: EvalData, batch_size: int) -> input_pipeline.ReadOptions:
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    return input_pipeline.ReadOptions(
        batch_size=batch_size,
        split=data.split,
        validation_fraction=data.validation_fraction,
        split_seed=data.split_seed,
        time_split=data.time_split if data.split else None,
    )


def collect(
    batches: Iterable, outputs: Callable[[Any], dict[str, np.ndarray]], steps: int | None = None
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels and named per-row outputs over (features, labels) batches: the one loop that
    turns a dataset into arrays for exact metrics (here and in training's evaluation).

    ``outputs(features)`` returns arrays with one value per row; each is concatenated.
    At most ``steps`` batches when given. A malformed row is a `DataError` naming it.
    """
    labels, columns = [], {}
    try:
        for i, (x, y) in enumerate(batches):
            if steps is not None and i >= steps:
                break
            for name, values in outputs(x).items():
                columns.setdefault(name, []).append(np.asarray(values).reshape(-1))
            labels.append(y.numpy().reshape(-1))
    except tf.errors.InvalidArgumentError as e:
        input_pipeline.raise_data_error(e)
    if not labels:
        raise ValueError("evaluation data has no rows")
    return np.concatenate(labels), {k: np.concatenate(v) for k, v in columns.items()}


def _collect(
    batches: Iterable, score: Callable[[dict], np.ndarray], user_feature: str | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(labels, scores, user ids or None) over every batch of (raw dict, labels)."""

    def outputs(raw):
        out = {"score": np.asarray(score(raw), dtype=np.float64)}
        if user_feature is not None:
            out["user"] = _user_column(raw[user_feature])
        return out

    labels, columns = collect(batches, outputs)
    return labels, columns["score"], columns.get("user")


def compute_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    user_ids: np.ndarray | None = None,
    k: int = 10,
    calibration_bins: int = 10,
) -> dict[str, Any]:
    """binary_metrics, plus ``calibration``, plus ``ranking`` when user ids are given."""
    result: dict[str, Any] = metrics.binary_metrics(labels, scores)
    result["calibration"] = metrics.calibration(labels, scores, bins=calibration_bins)
    if user_ids is not None:
        result["ranking"] = metrics.ranking_metrics(user_ids, labels, scores, k=k)
    return result


# ----------------------------------------------------------------------------------------
# The two model sources.


def _as_data(files) -> EvalData:
    return files if isinstance(files, EvalData) else EvalData(input_pipeline.resolve_files(files))


def evaluate_saved_model(
    path: str,
    spec: fs.FeatureSpec,
    files: str | list[str] | EvalData,
    batch_size: int = 2048,
    user_feature: str | None = None,
    k: int = 10,
) -> dict[str, Any]:
    """Metrics of a SavedModel's ``serving_default`` over ``files`` (see the module doc).

    Args:
      path: the SavedModel directory (``<export_base>/<version>``).
      spec: the feature spec that reads ``files`` (the export's
        ``assets.extra/feature_spec.json``, see `saved_model_spec`).
      files: comma-separated files/globs, a list of them, or an `EvalData`.
      user_feature: the feature holding the user id: adds the per-user ``ranking`` metrics.
      k: the cut-off of NDCG/HitRate/MAP.
    """
    _check_user_feature(spec, user_feature)
    data = _as_data(files)
    if not os.path.isdir(path):
        raise ValueError(f"saved_model: {path!r} is not a directory")
    serve = tf.saved_model.load(path).signatures["serving_default"]

    def score(raw):
        return serve(**_serving_inputs(spec, raw))["probabilities"].numpy()

    batches = input_pipeline.read_raw(spec, data.files, _read_options(data, batch_size))
    return compute_metrics(*_collect(batches, score, user_feature), k=k)


def load_model_dir(model_dir: str) -> tuple[TrainConfig, fs.FeatureSpec, Any, Any]:
    """(config, spec, preprocessor, model) of a model dir, with the weights it kept: the
    best validation epoch's (early stopping), else its latest checkpoint's."""
    config = TrainConfig.from_dict(run_dir.load_config_dict(model_dir))
    spec, preprocessor, model = run_dir.load_for_inference(model_dir, config.model)
    return config, spec, preprocessor, model


def default_eval_data(config: TrainConfig, model_dir: str | None = None) -> EvalData:
    """The data a training run evaluated on: its eval files, or (without any) its validation
    split (by time with the model dir's saved thresholds when the spec names a time column).

    A synthetic dataset's files are (re)made deterministically under ``model_dir`` (default:
    the config's), where training wrote them.

    Raises:
      ValueError: when the config names no evaluation data (dataset ``files`` without
        ``eval_files`` and no validation split).
    """
    data = config.data
    work_dir = model_dir or config.model_dir
    source = datasets.resolve(data, work_dir, config.seed)
    eval_files = source.eval_files()
    if eval_files:
        return EvalData(eval_files)
    if data.validation_fraction > 0:
        return EvalData(
            source.train_files(),
            split="validation",
            validation_fraction=data.validation_fraction,
            split_seed=config.seed,
            time_split=input_pipeline.TimeSplit.load(work_dir),
        )
    raise ValueError("eval_files: the model dir's config names no evaluation files")


def evaluate_model_dir(
    model_dir: str,
    files: str | list[str] | EvalData | None = None,
    batch_size: int = 2048,
    user_feature: str | None = None,
    k: int = 10,
    spec: fs.FeatureSpec | None = None,
) -> dict[str, Any]:
    """Metrics of a model dir's latest checkpoint over ``files`` (see the module doc).

    Args:
      model_dir: a training run's model dir.
      files: as in `evaluate_saved_model`; None = the run's own evaluation data
        (`default_eval_data`).
      spec: reads ``files`` (default: the model dir's feature_spec.json, which the model was
        built with; another spec must name the same features).
    """
    return _evaluate_model_dir(model_dir, files, batch_size, user_feature, k, spec)[0]


def _evaluate_model_dir(
    model_dir: str,
    files: str | list[str] | EvalData | None,
    batch_size: int,
    user_feature: str | None,
    k: int,
    spec: fs.FeatureSpec | None,
) -> tuple[dict[str, Any], EvalData]:
    """`evaluate_model_dir`'s metrics and the data they are on (the run's own data when
    ``files`` is None, resolved from the one read of its config.json)."""
    config, own_spec, preprocessor, model = load_model_dir(model_dir)
    spec = spec or own_spec
    _check_user_feature(spec, user_feature)
    data = default_eval_data(config, model_dir) if files is None else _as_data(files)

    @tf.function(reduce_retracing=True, autograph=False)
    def predict(raw):
        return model(preprocessor(raw), training=False)

    def score(raw):
        return predict(raw).numpy()

    batches = input_pipeline.read_raw(spec, data.files, _read_options(data, batch_size))
    return compute_metrics(*_collect(batches, score, user_feature), k=k), data


def saved_model_spec(path: str) -> str:
    """The feature spec file stored with an export (``assets.extra/feature_spec.json``)."""
    return os.path.join(path, SAVED_MODEL_SPEC)


# ----------------------------------------------------------------------------------------
# Output.


def write_json_atomic(path: str, obj: Any) -> None:
    """Writes ``obj`` as JSON to ``path`` via a temp file and a rename (no partial files)."""
    atomic.write_json(path, obj, default=_json_default)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


# ----------------------------------------------------------------------------------------
# The command (scripts/evaluate.py): resolve the defaults, check every path, evaluate.


def evaluate(
    *,
    model_dir: str | None = None,
    saved_model: str | None = None,
    eval_files: str = "",
    feature_spec: str = "",
    user_feature: str | None = None,
    k: int = 10,
    batch_size: int = 2048,
) -> dict[str, Any]:
    """Evaluates a model dir or a SavedModel (exactly one), defaults as scripts/evaluate.py.

    * ``eval_files``: empty = the model dir's own evaluation data (`default_eval_data`);
      required with a SavedModel.
    * ``feature_spec``: a preset or JSON file; empty = the model dir's feature_spec.json or
      the SavedModel's ``assets.extra/feature_spec.json``.

    The result also names what was evaluated (``model_dir`` or ``saved_model``,
    ``eval_files``, ``split``, ``k``, ``user_feature``).

    Raises:
      ValueError: a bad argument, named with its value (also `fs.FeatureSpecError` and
        `input_pipeline.DataError`).
    """
    if bool(model_dir) == bool(saved_model):
        given = "both" if model_dir else "neither"
        raise ValueError(
            f"give exactly one of --model_dir and --saved_model (got {given}: "
            f"model_dir={model_dir!r}, saved_model={saved_model!r})"
        )
    if int(k) != k or k < 1:
        raise ValueError(f"k: must be an integer >= 1, got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
    spec = fs.load(feature_spec) if feature_spec else None
    if model_dir:
        if not os.path.isdir(model_dir):
            raise ValueError(f"model_dir: {model_dir!r} does not exist or is not a directory")
        result, data = _evaluate_model_dir(
            model_dir,
            _as_data(eval_files) if eval_files else None,
            batch_size,
            user_feature,
            k,
            spec,
        )
        source = {"model_dir": model_dir}
    else:
        if not os.path.isfile(os.path.join(saved_model, "saved_model.pb")):
            raise ValueError(
                f"saved_model: {saved_model!r} is not a SavedModel directory (no saved_model.pb)"
            )
        if not eval_files:
            raise ValueError("eval_files: required with --saved_model (it names no data)")
        if spec is None:
            spec = fs.load(_required(saved_model, SAVED_MODEL_SPEC, "saved_model"))
        data = _as_data(eval_files)
        result = evaluate_saved_model(saved_model, spec, data, batch_size, user_feature, k)
        source = {"saved_model": saved_model}
    return {
        **source,
        "eval_files": data.files,
        "split": data.split,
        "user_feature": user_feature,
        "k": k,
        **result,
    }


def _required(directory: str, name: str, what: str) -> str:
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise ValueError(f"{what}: {directory!r} has no {name}")
    return path
