"""Tests of wdl_tf.metrics: exact AUC, log loss and accuracy on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wdl_tf import metrics


def brute_force_auc(labels, scores) -> float:
    """P(positive scores higher than negative) over all (positive, negative) pairs, ties 1/2."""
    pos = [s for y, s in zip(labels, scores) if y == 1]
    neg = [s for y, s in zip(labels, scores) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_hand_computed():
    # Positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35>0.1 yes, 0.35>0.4 no, 0.8 beats both.
    # 3 of 4 pairs ordered correctly -> 0.75.
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auc_ties_count_half():
    # One pair, tied -> 1/2.
    assert metrics.auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    # Positive 0.5 vs negatives 0.2 (win, 1) and 0.5 (tie, 1/2): 1.5 / 2 = 0.75.
    assert metrics.auc([0, 0, 1], [0.2, 0.5, 0.5]) == pytest.approx(0.75)
    # Everything tied: every pair counts 1/2.
    assert metrics.auc([1, 0, 1, 0, 0], [0.3] * 5) == pytest.approx(0.5)


def test_auc_perfect_and_reversed():
    assert metrics.auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert metrics.auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0


def test_auc_order_of_rows_does_not_matter():
    labels = np.array([0, 0, 1, 1, 0, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.35, 0.2])
    perm = np.array([5, 2, 0, 4, 1, 3])
    # 3 positives x 3 negatives: 0.35 vs (0.1 win, 0.4 loss, 0.35 tie) = 1.5; 0.8 wins 3;
    # 0.2 vs (0.1 win, 0.4 loss, 0.35 loss) = 1 -> 5.5 / 9.
    assert metrics.auc(labels, scores) == pytest.approx(5.5 / 9)
    assert metrics.auc(labels[perm], scores[perm]) == pytest.approx(5.5 / 9)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0], []])
def test_auc_single_class_is_nan(labels):
    assert math.isnan(metrics.auc(labels, np.linspace(0, 1, len(labels))))


def test_auc_accepts_column_vectors():
    # Keras predictions come as [N, 1]; labels from the pipeline too.
    labels = np.array([[0.0], [0.0], [1.0], [1.0]])
    scores = np.array([[0.1], [0.4], [0.35], [0.8]])
    assert metrics.auc(labels, scores) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 300
    labels = (rng.random(n) < 0.3).astype(int)
    # Rounded scores: many ties, which is where rank-based AUC is easiest to get wrong.
    scores = np.round(rng.random(n) * 0.5 + 0.3 * labels, 1)
    expected = brute_force_auc(labels.tolist(), scores.tolist())
    assert 0.5 < expected < 1.0  # a non-trivial case
    assert metrics.auc(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_log_loss_hand_computed():
    # -(ln 0.8 + ln(1 - 0.4)) / 2 = (0.2231436 + 0.5108256) / 2 = 0.3669846.
    assert metrics.log_loss([1, 0], [0.8, 0.4]) == pytest.approx(0.3669846, abs=1e-6)
    # p = 0.5 everywhere: ln 2 whatever the labels.
    assert metrics.log_loss([1, 0, 1], [0.5, 0.5, 0.5]) == pytest.approx(math.log(2))


def test_log_loss_clips_probabilities():
    # A confident right answer costs ~0; a confident wrong one is capped at -ln(1e-7) = 16.118.
    assert metrics.log_loss([1], [1.0]) == pytest.approx(0.0, abs=1e-6)
    assert metrics.log_loss([0], [1.0]) == pytest.approx(-math.log(1e-7), rel=1e-6)
    assert math.isfinite(metrics.log_loss([1, 0], [0.0, 1.0]))


def test_accuracy():
    # Predictions (score > 0.5): 1, 0, 0, 1 vs labels 1, 0, 1, 0 -> 2 of 4 right.
    assert metrics.accuracy([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6]) == 0.5
    assert metrics.accuracy([1, 0], [0.7, 0.1]) == 1.0
    # A score equal to the threshold is a negative prediction (keras' binary_accuracy: >).
    assert metrics.accuracy([0, 1], [0.5, 0.5]) == 0.5
    # With threshold 0.3, 0.4 becomes a positive prediction: 3 of 4 right.
    assert metrics.accuracy([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.6], threshold=0.3) == 0.75


def test_binary_metrics_report():
    report = metrics.binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert report["auc"] == pytest.approx(0.75)
    assert report["examples"] == 4
    # Mean of the scores 1.65 / 4; half the labels are positive.
    assert report["mean_prediction"] == pytest.approx(0.4125)
    assert report["label_rate"] == pytest.approx(0.5)
    # Predictions 0, 0, 0, 1 vs labels 0, 0, 1, 1 -> 3 of 4.
    assert report["accuracy"] == pytest.approx(0.75)
    expected_ll = -(math.log(0.9) + math.log(0.6) + math.log(0.35) + math.log(0.8)) / 4
    assert report["log_loss"] == pytest.approx(expected_ll)
    assert set(report) == {
        "auc",
        "log_loss",
        "accuracy",
        "mean_prediction",
        "label_rate",
        "examples",
    }
