"""Exact binary-classification metrics over a whole evaluation set (numpy).

Keras' streaming AUC is a thresholded approximation; the figures we report (metrics.json,
the benchmark tables) come from these exact versions over the collected predictions.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-7  # clip of probabilities in log loss, as keras.losses.BinaryCrossentropy


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative).

    Computed from ranks (Mann–Whitney U), ties counted as one half. NaN when the labels hold
    only one class.
    """
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n_pos = float(np.sum(labels > 0.5))
    n_neg = float(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(labels.size, dtype=np.float64)
    # Average rank (1-based) over each group of tied scores.
    _, starts, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(starts, counts):
        ranks[order[start : start + count]] = start + (count + 1) / 2.0
    rank_sum = float(np.sum(ranks[labels > 0.5]))
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean binary cross-entropy, probabilities clipped to [ε, 1 − ε]."""
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    p = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), EPSILON, 1 - EPSILON)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def accuracy(labels: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> float:
    y = np.asarray(labels).reshape(-1) > 0.5
    return float(np.mean((np.asarray(scores).reshape(-1) > threshold) == y))


def binary_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """The evaluation report: AUC, log loss, accuracy, mean prediction vs. label rate."""
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores).reshape(-1)
    return {
        "auc": auc(labels, scores),
        "log_loss": log_loss(labels, scores),
        "accuracy": accuracy(labels, scores),
        "mean_prediction": float(np.mean(scores)),
        "label_rate": float(np.mean(labels)),
        "examples": int(labels.size),
    }
