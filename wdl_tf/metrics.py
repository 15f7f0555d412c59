"""Exact binary-classification metrics over a whole evaluation set (numpy).

Keras' streaming AUC is a thresholded approximation; the figures we report (metrics.json,
the benchmark tables) come from these exact versions over the collected predictions.

Recommender metrics over each user's candidate list (`gauc`, `ndcg_at_k`, `hit_rate_at_k`,
`map_at_k`, all four via `ranking_metrics`) and `calibration` by score quantile are here too.
"""

from __future__ import annotations

import dataclasses

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


def logit_parts(
    labels: np.ndarray, wide: np.ndarray, deep: np.ndarray, bias: float
) -> dict[str, float]:
    """Which part of a joint model dominates: logit = wide + deep + bias, part by part.

    A part whose logit barely varies (small std) contributes little to the ranking; a high
    correlation says both parts learned the same thing; each part's AUC alone says how
    much of the signal it holds. When one part starves the other (issue 10: fast-fitting
    wide crosses take the gradient the deep part needed), this shows it.

    Args:
      labels: [n] binary labels.
      wide: [n] the wide part's logit, without the bias.
      deep: [n] the deep part's logit.
      bias: the joint model's one bias b.

    Returns:
      ``wide_logit_mean``/``_std``, ``deep_logit_mean``/``_std`` (population std), ``bias``,
      ``logit_correlation`` (Pearson; NaN when a part is constant), ``wide_logit_auc``,
      ``deep_logit_auc``.
    """
    wide = np.asarray(wide, dtype=np.float64).reshape(-1)
    deep = np.asarray(deep, dtype=np.float64).reshape(-1)
    w_std, d_std = float(np.std(wide)), float(np.std(deep))
    covariance = float(np.mean((wide - wide.mean()) * (deep - deep.mean())))
    return {
        "wide_logit_mean": float(np.mean(wide)),
        "wide_logit_std": w_std,
        "deep_logit_mean": float(np.mean(deep)),
        "deep_logit_std": d_std,
        "bias": float(bias),
        "logit_correlation": covariance / (w_std * d_std) if w_std and d_std else float("nan"),
        "wide_logit_auc": auc(labels, wide),
        "deep_logit_auc": auc(labels, deep),
    }


def format_logit_parts(m: dict[str, float]) -> str:
    """One line of `logit_parts` for the end-of-run summary ("" without them)."""
    if "wide_logit_std" not in m:
        return ""
    return (
        f"which part dominates: wide logit std {m['wide_logit_std']:.3f} "
        f"(AUC alone {m['wide_logit_auc']:.4f}), deep logit std {m['deep_logit_std']:.3f} "
        f"(AUC alone {m['deep_logit_auc']:.4f}), correlation {m['logit_correlation']:.3f}"
    )


# ----------------------------------------------------------------------------------------
# Per-user (grouped) metrics: GAUC, NDCG@k, HitRate@k, MAP@k; calibration by score decile.
#
# Every grouped metric treats the examples sharing a user id as that user's candidate list
# (one impression log row = one candidate). Work is vectorized: one sort by (user, score),
# then group boundaries, cumulative sums and `np.bincount` per user; there is no Python loop
# over examples or users.


def _check_inputs(user_ids, labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user codes 0..U-1 [n], binary labels bool [n], scores float64 [n]), validated."""
    user_ids = np.asarray(user_ids).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not (user_ids.size == labels.size == scores.size):
        raise ValueError(
            f"user_ids, labels and scores must have the same length, got "
            f"{user_ids.size}, {labels.size} and {scores.size}"
        )
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN: a ranking is undefined")
    # Any id type numpy can sort (ints, strings, bytes) becomes a dense code 0..U-1.
    _, codes = np.unique(user_ids, return_inverse=True)
    return codes.reshape(-1).astype(np.int64), labels > 0.5, scores


def _group_starts(sorted_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For codes sorted ascending: (index of each row's group start [n], group sizes [G])."""
    n = sorted_codes.size
    is_start = np.ones(n, dtype=bool)
    is_start[1:] = sorted_codes[1:] != sorted_codes[:-1]
    starts = np.flatnonzero(is_start)
    sizes = np.diff(np.append(starts, n))
    row_start = np.repeat(starts, sizes)
    return row_start, sizes


def gauc(user_ids, labels, scores) -> tuple[float, int]:
    """Group AUC: the per-user ROC AUC, averaged over users weighted by their example count.

    For each user u with n_u examples, of which P_u > 0 are positive (label > 0.5) and
    N_u > 0 negative, AUC_u = P(score of a random positive of u > score of a random negative
    of u), ties counted as one half (as `auc`). Then

        GAUC = sum_u n_u * AUC_u / sum_u n_u,

    the sums running only over users that have both classes; users with a single class have
    no AUC and are skipped (neither numerator nor denominator).

    Returns:
      (GAUC, the number of users counted). GAUC is NaN when no user has both classes.
    """
    return _gauc(*_check_inputs(user_ids, labels, scores))


def _gauc(codes: np.ndarray, y: np.ndarray, s: np.ndarray) -> tuple[float, int]:
    if codes.size == 0:
        return float("nan"), 0
    # Ascending by user, then by score: ranks within a user are 1-based positions.
    order = np.lexsort((s, codes))
    codes, y, s = codes[order], y[order], s[order]
    n = codes.size
    user_start, _ = _group_starts(codes)
    # Tie groups: consecutive rows with the same user and the same score.
    new_tie = np.ones(n, dtype=bool)
    new_tie[1:] = (codes[1:] != codes[:-1]) | (s[1:] != s[:-1])
    tie_starts = np.flatnonzero(new_tie)
    tie_sizes = np.diff(np.append(tie_starts, n))
    tie_start = np.repeat(tie_starts, tie_sizes)
    tie_size = np.repeat(tie_sizes, tie_sizes)
    # Average 1-based rank of a tie group inside its user's list.
    rank = (tie_start - user_start) + (tie_size + 1) / 2.0
    users = int(codes[-1]) + 1
    n_pos = np.bincount(codes, weights=y, minlength=users)
    n_all = np.bincount(codes, minlength=users).astype(np.float64)
    n_neg = n_all - n_pos
    rank_sum = np.bincount(codes, weights=np.where(y, rank, 0.0), minlength=users)
    both = (n_pos > 0) & (n_neg > 0)
    if not both.any():
        return float("nan"), 0
    per_user = (rank_sum[both] - n_pos[both] * (n_pos[both] + 1) / 2.0) / (
        n_pos[both] * n_neg[both]
    )
    weights = n_all[both]
    return float(np.sum(per_user * weights) / np.sum(weights)), int(both.sum())


@dataclasses.dataclass(frozen=True)
class _Ranked:
    """Each user's list ranked by score, descending (see `_rank_lists`)."""

    codes: np.ndarray  # user code per row, rows grouped by user [n]
    relevant: np.ndarray  # label per row (bool) [n]
    position: np.ndarray  # 0-based rank of the row within its user's list [n]
    positives: np.ndarray  # positives per user [U]
    users: int


def _rank_lists(user_ids, labels, scores) -> _Ranked:
    """Sorts by user, then score descending; ties keep the original (input) order."""
    return _rank(*_check_inputs(user_ids, labels, scores))


def _rank(codes: np.ndarray, y: np.ndarray, s: np.ndarray) -> _Ranked:
    # np.lexsort is stable: rows with equal (user, score) stay in input order, so among tied
    # scores the example that comes first in the input is ranked higher.
    order = np.lexsort((-s, codes))
    codes, y = codes[order], y[order]
    user_start, _ = _group_starts(codes)
    position = np.arange(codes.size) - user_start
    users = int(codes[-1]) + 1 if codes.size else 0
    positives = np.bincount(codes, weights=y, minlength=users)
    return _Ranked(codes, y, position, positives, users)


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k: must be an integer >= 1, got {k}")
    return int(k)


def _per_user_mean(values: np.ndarray, keep: np.ndarray) -> float:
    return float(np.mean(values[keep])) if keep.any() else float("nan")


def _ndcg(r: _Ranked, k: int) -> np.ndarray:
    top = r.position < k
    discount = 1.0 / np.log2(r.position + 2.0)
    dcg = np.bincount(r.codes, weights=np.where(top & r.relevant, discount, 0.0), minlength=r.users)
    # Ideal DCG: the user's positives in the first min(P_u, k) places.
    ideal_cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
    idcg = ideal_cum[np.minimum(r.positives, k).astype(np.int64)]
    with np.errstate(invalid="ignore", divide="ignore"):
        return dcg / idcg


def _hit_rate(r: _Ranked, k: int) -> np.ndarray:
    hits = np.bincount(
        r.codes, weights=(r.relevant & (r.position < k)).astype(np.float64), minlength=r.users
    )
    return (hits > 0).astype(np.float64)


def _average_precision(r: _Ranked, k: int) -> np.ndarray:
    # Positives at or above each row, within its user: a cumulative sum restarted per user.
    cum = np.cumsum(r.relevant)
    start_index = np.arange(r.codes.size) - r.position
    before = np.where(start_index > 0, cum[np.maximum(start_index - 1, 0)], 0)
    hits_so_far = cum - before
    precision = hits_so_far / (r.position + 1.0)
    summed = np.bincount(
        r.codes, weights=np.where(r.relevant & (r.position < k), precision, 0.0), minlength=r.users
    )
    with np.errstate(invalid="ignore", divide="ignore"):
        return summed / np.minimum(r.positives, k)


def ndcg_at_k(user_ids, labels, scores, k: int) -> float:
    """Mean NDCG@k over users.

    DCG@k_u = sum over ranks r = 1..k of rel_r / log2(r + 1) (rel_r = 1 for a positive at
    rank r, else 0); IDCG@k_u = sum_{r=1..min(P_u, k)} 1 / log2(r + 1), the DCG of the
    ideal order (all P_u positives first); NDCG@k_u = DCG@k_u / IDCG@k_u.

    Each user's examples form one candidate list, ranked by score descending; among tied
    scores the example that comes first in the input ranks higher (a stable sort: ties are
    broken by original order, not averaged). Relevance is binary: label > 0.5. Users with
    no positive are skipped; the result is the unweighted mean over the remaining users
    (NaN when there are none). A list shorter than k is used whole.
    """
    k = _check_k(k)
    r = _rank_lists(user_ids, labels, scores)
    return _per_user_mean(_ndcg(r, k), r.positives > 0)


def hit_rate_at_k(user_ids, labels, scores, k: int) -> float:
    """Mean HitRate@k over users: 1 if any positive is in the user's top k, else 0.

    Each user's examples form one candidate list, ranked by score descending; among tied
    scores the example that comes first in the input ranks higher (a stable sort: ties are
    broken by original order, not averaged). Relevance is binary: label > 0.5. Users with
    no positive are skipped; the result is the unweighted mean over the remaining users
    (NaN when there are none). A list shorter than k is used whole.
    """
    k = _check_k(k)
    r = _rank_lists(user_ids, labels, scores)
    return _per_user_mean(_hit_rate(r, k), r.positives > 0)


def map_at_k(user_ids, labels, scores, k: int) -> float:
    """MAP@k: the mean over users of AP@k.

    AP@k_u = (1 / min(P_u, k)) * sum over ranks r = 1..k holding a positive of
    Precision@r, where Precision@r = (positives in the top r) / r and P_u is the user's
    number of positives (so a user whose top min(P_u, k) are all positive scores 1).

    Each user's examples form one candidate list, ranked by score descending; among tied
    scores the example that comes first in the input ranks higher (a stable sort: ties are
    broken by original order, not averaged). Relevance is binary: label > 0.5. Users with
    no positive are skipped; the result is the unweighted mean over the remaining users
    (NaN when there are none). A list shorter than k is used whole.
    """
    k = _check_k(k)
    r = _rank_lists(user_ids, labels, scores)
    return _per_user_mean(_average_precision(r, k), r.positives > 0)


def ranking_metrics(user_ids, labels, scores, k: int = 10) -> dict[str, float | int]:
    """GAUC and NDCG/HitRate/MAP at k of the same per-user lists.

    Returns a dict with ``gauc``, ``ndcg@k``, ``hit_rate@k``, ``map@k`` (k written out, e.g.
    ``ndcg@10``), ``users`` (distinct user ids), ``gauc_users`` (users with both classes,
    those GAUC averages over) and ``ranked_users`` (users with at least one positive, those
    the @k metrics average over). Definitions: `gauc`, `ndcg_at_k`, `hit_rate_at_k`,
    `map_at_k`.
    """
    k = _check_k(k)
    checked = _check_inputs(user_ids, labels, scores)
    g, gauc_users = _gauc(*checked)
    r = _rank(*checked)
    keep = r.positives > 0
    return {
        "gauc": g,
        f"ndcg@{k}": _per_user_mean(_ndcg(r, k), keep),
        f"hit_rate@{k}": _per_user_mean(_hit_rate(r, k), keep),
        f"map@{k}": _per_user_mean(_average_precision(r, k), keep),
        "users": r.users,
        "gauc_users": gauc_users,
        "ranked_users": int(keep.sum()),
    }


def calibration(labels, scores, bins: int = 10) -> dict:
    """Reliability by score quantile: per bin the mean prediction, observed rate and count.

    Bin edges are the 0, 1/bins, ..., 1 quantiles of the predictions (linear
    interpolation, `np.quantile`'s default), so with ``bins=10`` each bin is a score decile.
    Bin i holds the scores s with edge_i <= s < edge_{i+1} (the last bin also holds the
    maximum); equal scores always fall in the same bin, so with many ties a bin may be
    empty or larger than n / bins. Empty bins are left out of the list.

    Returns a dict:
      ``bins``: a list of {``bin`` (index), ``lower``, ``upper`` (its edges),
        ``mean_prediction``, ``observed_rate`` (share of labels > 0.5), ``count``};
      ``ece``: expected calibration error, sum_i (count_i / n) * |mean_prediction_i -
        observed_rate_i|;
      ``max_calibration_error``: the largest |mean_prediction_i - observed_rate_i|;
      ``examples``: n.
    """
    if int(bins) != bins or bins < 1:
        raise ValueError(f"bins: must be an integer >= 1, got {bins}")
    y = (np.asarray(labels, dtype=np.float64).reshape(-1) > 0.5).astype(np.float64)
    p = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.size != p.size:
        raise ValueError(f"labels and scores must have the same length, got {y.size} and {p.size}")
    if p.size == 0:
        return {
            "bins": [],
            "ece": float("nan"),
            "max_calibration_error": float("nan"),
            "examples": 0,
        }
    edges = np.quantile(p, np.linspace(0.0, 1.0, int(bins) + 1))
    index = np.searchsorted(edges[1:-1], p, side="right")
    count = np.bincount(index, minlength=bins)
    pred_sum = np.bincount(index, weights=p, minlength=bins)
    pos_sum = np.bincount(index, weights=y, minlength=bins)
    out, gaps = [], []
    for i in np.flatnonzero(count):
        mean_p, rate = pred_sum[i] / count[i], pos_sum[i] / count[i]
        gaps.append((count[i], abs(mean_p - rate)))
        out.append(
            {
                "bin": int(i),
                "lower": float(edges[i]),
                "upper": float(edges[i + 1]),
                "mean_prediction": float(mean_p),
                "observed_rate": float(rate),
                "count": int(count[i]),
            }
        )
    ece = sum(c * g for c, g in gaps) / p.size
    return {
        "bins": out,
        "ece": float(ece),
        "max_calibration_error": float(max(g for _, g in gaps)),
        "examples": int(p.size),
    }
