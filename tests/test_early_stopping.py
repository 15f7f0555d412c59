"""Early stopping with the best epoch kept, and which part of a joint model dominates.

The kept epoch is checked on hand-made sequences of validation metrics; end to end, the
export must score exactly like the kept epoch's saved weights (not the last epoch's), a
rerun must know the best so far, and the reported wide/deep logit statistics must satisfy
logit = wide + deep + bias against the exported model's own probabilities."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import checkpoints, input_pipeline, metrics, run_dir, train_lib
from wdl_tf import config as config_lib
from wdl_tf import features as fs
from wdl_tf import preprocessing as pp


def _history(metric, values):
    return [{"epoch": i + 1, metric: v} for i, v in enumerate(values)]


@pytest.mark.parametrize(
    "metric, values, patience, expected",
    [
        # AUC: higher is better. Best at epoch 2; epochs 3 and 4 are no better -> stop.
        ("auc", [0.70, 0.72, 0.71, 0.72], 2, (2, True)),
        ("auc", [0.70, 0.72, 0.71], 2, (2, False)),  # one epoch without gain: go on
        ("auc", [0.70, 0.72, 0.71, 0.73], 2, (4, False)),  # a later gain resets patience
        ("auc", [0.70, 0.72, 0.71, 0.72], 0, (2, False)),  # patience 0: never stop
        # Log loss: lower is better.
        ("log_loss", [0.60, 0.55, 0.56, 0.54, 0.57, 0.58, 0.59], 3, (4, True)),
        ("log_loss", [0.60, 0.55, 0.56, 0.54, 0.57, 0.58], 3, (4, False)),
        # NaN (a validation split with one class) is never best.
        ("auc", [math.nan, 0.6, math.nan], 2, (2, False)),
        ("auc", [math.nan, math.nan], 2, (None, True)),
        ("auc", [], 2, (None, False)),
    ],
)
def test_choose_epoch_on_hand_made_sequences(metric, values, patience, expected):
    assert train_lib.choose_epoch(_history(metric, values), metric, patience) == expected


def test_logit_parts_by_hand():
    labels = np.array([0, 1, 0, 1])
    wide = np.array([0.0, 2.0, 1.0, 1.0])  # mean 1, std sqrt(0.5)
    deep = np.array([1.0, 1.0, -1.0, 3.0])  # mean 1, std sqrt(2)
    out = metrics.logit_parts(labels, wide, deep, bias=-0.5)
    assert out["wide_logit_mean"] == 1.0 and out["deep_logit_mean"] == 1.0
    assert out["wide_logit_std"] == pytest.approx(math.sqrt(0.5))
    assert out["deep_logit_std"] == pytest.approx(math.sqrt(2.0))
    # Covariance: mean((w - 1)(d - 1)) = (0 + 0 + 0 + 0 * 2) / 4 = 0 -> correlation 0.
    assert out["logit_correlation"] == pytest.approx(0.0)
    # Wide alone: positives score 2 and 1, negatives 0 and 1: pairs won 1 + 1 + 1 + 0.5 = 3.5
    # of 4. Deep alone: positives 1 and 3, negatives 1 and -1: 0.5 + 1 + 1 + 1 = 3.5 of 4.
    assert out["wide_logit_auc"] == 0.875 and out["deep_logit_auc"] == 0.875
    assert out["bias"] == -0.5
    constant = metrics.logit_parts(labels, np.ones(4), deep, 0.0)
    assert math.isnan(constant["logit_correlation"])


def _config(tmp_path, **overrides):
    data = config_lib.DataConfig(
        dataset="census_synthetic", synthetic_rows=800, batch_size=50, validation_fraction=0.25
    )
    base = {
        "model_dir": str(tmp_path / "model"),
        "export_base": str(tmp_path / "export"),
        "data": data,
        "epochs": 6,
        "early_stopping_patience": 2,
        "early_stopping_metric": "log_loss",
    }
    return config_lib.preset("test", **{**base, **overrides})


def _eval_batch(config):
    spec = fs.load(os.path.join(config.model_dir, "feature_spec.json"))
    test_file = [
        f for f in os.listdir(os.path.join(config.model_dir, "synthetic_data")) if "test" in f
    ][0]
    raw, labels = next(
        iter(
            input_pipeline.read_raw(
                spec,
                os.path.join(config.model_dir, "synthetic_data", test_file),
                input_pipeline.ReadOptions(batch_size=400),
            )
        )
    )
    return spec, raw, labels.numpy().reshape(-1)


def _model_from(config, spec, path, weights_only):
    state = pp.PreprocessingState.load(config.model_dir)
    preprocessor, model = train_lib.build_for_training(config, state, spec)
    if weights_only:
        checkpoints.restore_weights(model, path)
    else:
        ckpt = checkpoints.make_checkpoint(model, epoch=tf.Variable(0, dtype=tf.int64))
        ckpt.restore(path).assert_consumed()
    return preprocessor, model


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """A run whose validation log loss is best early and then worsens: 300 training rows,
    small batches and high learning rates without regularization overfit after epoch 2
    (measured: 0.96, 0.71, 1.03, 0.80, ...), so training stops early and the best epoch is
    not the last."""
    tmp = tmp_path_factory.mktemp("overfit")
    config = _config(
        tmp,
        epochs=8,
        data=config_lib.DataConfig(
            dataset="census_synthetic", synthetic_rows=400, batch_size=20, validation_fraction=0.25
        ),
        model=config_lib.ModelConfig(
            hidden_units=(64, 32),
            linear_learning_rate=2.0,
            linear_l1=0.0,
            linear_l2=0.0,
            dnn_learning_rate=0.3,
            ema_momentum=0.0,
        ),
    )
    return config, train_lib.train_and_evaluate(config)


def test_model_dir_and_metrics_say_which_epoch_was_kept(overfit):
    config, result = overfit
    state = json.load(open(os.path.join(config.model_dir, run_dir.BEST_FILE)))
    history = state["history"]
    losses = [e["log_loss"] for e in history]
    best = int(np.argmin(losses)) + 1
    assert state["best_epoch"] == best == result.metrics["best_epoch"]
    # The validation loss got worse after its best: training stopped after `patience` more
    # epochs, before the 6 asked for.
    assert state["stopped"] and len(history) == best + 2 < config.epochs
    assert result.metrics["epochs_trained"] == len(history)
    assert result.metrics["validation_log_loss"] == losses[best - 1]
    assert result.metrics["validation_auc"] == history[best - 1]["auc"]
    on_disk = json.load(open(os.path.join(config.model_dir, "metrics.json")))
    assert on_disk["best_epoch"] == best and on_disk["eval_split"] == "eval_files"


def test_export_is_the_kept_epoch_not_the_last(overfit):
    config, result = overfit
    best = result.metrics["best_epoch"]
    spec, raw, _ = _eval_batch(config)
    assert best < result.metrics["epochs_trained"]
    kept = _model_from(
        config, spec, os.path.join(config.model_dir, "best", f"ckpt-{best}"), weights_only=True
    )
    last = _model_from(
        config,
        spec,
        tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints")),
        weights_only=False,
    )
    expected = kept[1](kept[0](raw)).numpy().reshape(-1)
    last_scores = last[1](last[0](raw)).numpy().reshape(-1)
    loaded = tf.saved_model.load(result.export_path)
    served = loaded.signatures["serving_default"](**{f.name: raw[f.name] for f in spec.features})
    served = served["probabilities"].numpy().reshape(-1)
    np.testing.assert_allclose(served, expected, atol=1e-5)
    assert np.max(np.abs(served - last_scores)) > 1e-3  # the last epoch scores differently


def test_rerun_of_a_stopped_run_trains_no_more_and_keeps_the_best(overfit):
    config, first = overfit
    again = train_lib.train_and_evaluate(dataclasses.replace(config, export_base=""))
    assert again.initial_epoch == first.metrics["epochs_trained"]
    assert again.metrics["best_epoch"] == first.metrics["best_epoch"]
    assert again.metrics["auc"] == pytest.approx(first.metrics["auc"], abs=1e-9)


def _parts_add_up(m: dict, logit: np.ndarray) -> None:
    """logit = wide + deep + bias, so mean(logit) = sum of the means and var(logit) =
    var(wide) + var(deep) + 2 corr std(wide) std(deep)."""
    mean = m["wide_logit_mean"] + m["deep_logit_mean"] + m["bias"]
    variance = (
        m["wide_logit_std"] ** 2
        + m["deep_logit_std"] ** 2
        + 2 * m["logit_correlation"] * m["wide_logit_std"] * m["deep_logit_std"]
    )
    assert np.mean(logit) == pytest.approx(mean, abs=1e-4)
    assert np.var(logit) == pytest.approx(variance, rel=1e-3)


@pytest.mark.slow
def test_resumed_run_knows_the_best_so_far_and_reports_parts_that_add_up(tmp_path):
    config = _config(tmp_path, epochs=2, early_stopping_patience=5)
    train_lib.train_and_evaluate(dataclasses.replace(config, export_base=""))
    path = os.path.join(config.model_dir, run_dir.BEST_FILE)
    before = json.load(open(path))["history"]
    more = train_lib.train_and_evaluate(dataclasses.replace(config, epochs=3))
    after = json.load(open(path))
    assert more.initial_epoch == 2
    assert after["history"][:2] == before and len(after["history"]) == 3
    losses = [e["log_loss"] for e in after["history"]]
    assert after["best_epoch"] == int(np.argmin(losses)) + 1 == more.metrics["best_epoch"]

    # Which part dominates: the reported statistics against the exported model's own
    # probabilities on the whole test file.
    m = more.metrics
    spec, raw, labels = _eval_batch(config)
    assert m["examples"] == len(labels)
    loaded = tf.saved_model.load(more.export_path)
    p = loaded.signatures["serving_default"](**{f.name: raw[f.name] for f in spec.features})
    p = p["probabilities"].numpy().reshape(-1).astype(np.float64)
    assert 1e-5 < p.min() and p.max() < 1 - 1e-5  # no float32 saturation
    _parts_add_up(m, np.log(p / (1 - p)))
    assert metrics.auc(labels, p) == pytest.approx(m["auc"], abs=1e-6)
    assert m["wide_logit_std"] > 0 and m["deep_logit_std"] > 0
    assert -1.0 <= m["logit_correlation"] <= 1.0
    for part in ("wide", "deep"):
        assert 0.5 < m[f"{part}_logit_auc"] <= 1.0  # each part alone learned something


def test_no_validation_split_keeps_the_last_epoch(tmp_path):
    config = _config(
        tmp_path,
        epochs=1,
        export_base="",
        data=config_lib.DataConfig(dataset="census_synthetic", synthetic_rows=200, batch_size=50,
                                   validation_fraction=0.0),
    )  # fmt: skip
    m = train_lib.train_and_evaluate(config).metrics
    assert m["best_epoch"] == 1 and "validation_auc" not in m
    assert not os.path.exists(os.path.join(config.model_dir, run_dir.BEST_FILE))
