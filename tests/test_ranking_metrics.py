"""Per-user ranking metrics (GAUC, NDCG@k, HitRate@k, MAP@k) and calibration: hand-computed
cases, ties, and a brute-force per-user loop on random data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from wdl_tf import metrics

# ----------------------------------------------------------------------------------------
# Brute force: a plain Python loop per user, straight from the definitions.


def _lists(user_ids, labels, scores):
    """user → [(score, label, input index)] in input order."""
    out: dict = {}
    for i, (u, y, s) in enumerate(zip(user_ids, labels, scores)):
        out.setdefault(u, []).append((float(s), int(y > 0.5), i))
    return out


def brute_gauc(user_ids, labels, scores):
    num = den = 0.0
    users = 0
    for rows in _lists(user_ids, labels, scores).values():
        pos = [s for s, y, _ in rows if y]
        neg = [s for s, y, _ in rows if not y]
        if not pos or not neg:
            continue
        wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
        num += len(rows) * wins / (len(pos) * len(neg))
        den += len(rows)
        users += 1
    return (num / den if users else float("nan")), users


def _ranked(rows):
    """Relevances in ranked order: score descending, ties by input order."""
    return [y for _, y, _ in sorted(rows, key=lambda r: (-r[0], r[2]))]


def brute_ranking(user_ids, labels, scores, k):
    ndcg, hit, ap = [], [], []
    for rows in _lists(user_ids, labels, scores).values():
        rel = _ranked(rows)
        n_pos = sum(rel)
        if n_pos == 0:
            continue
        dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rel[:k]))
        idcg = sum(1 / math.log2(i + 2) for i in range(min(n_pos, k)))
        ndcg.append(dcg / idcg)
        hit.append(float(any(rel[:k])))
        precisions, seen = [], 0
        for i, r in enumerate(rel[:k]):
            if r:
                seen += 1
                precisions.append(seen / (i + 1))
        ap.append(sum(precisions) / min(n_pos, k))
    return np.mean(ndcg), np.mean(hit), np.mean(ap), len(ndcg)


# ----------------------------------------------------------------------------------------
# GAUC.


def test_gauc_hand_computed_skips_single_class_users_and_weights_by_size():
    # Rows of four users, interleaved:
    #   user 0: labels 1 0 0, scores .9 .5 .95 -> the positive .9 beats .5, loses to .95:
    #           AUC 1/2, weight 3.
    #   user 1: labels 0 1 1 0, scores .1 .4 .3 .2 -> positives .4, .3 beat both .1, .2:
    #           AUC 1, weight 4.
    #   user 2: labels 1 1 (no negative) and user 3: label 0 (no positive): skipped.
    # GAUC = (3 * 1/2 + 4 * 1) / (3 + 4) = 5.5 / 7.
    users = [0, 1, 0, 2, 1, 0, 1, 2, 3, 1]
    labels = [1, 0, 0, 1, 1, 0, 1, 1, 0, 0]
    scores = [0.9, 0.1, 0.5, 0.3, 0.4, 0.95, 0.3, 0.7, 0.1, 0.2]
    value, counted = metrics.gauc(users, labels, scores)
    assert value == pytest.approx(5.5 / 7)
    assert counted == 2
    # Unweighted, the mean would be 0.75: the weighting matters.
    assert value != pytest.approx(0.75)


def test_gauc_ties_count_half_and_is_auc_for_one_user():
    # One pair, tied: 1/2.
    assert metrics.gauc([7, 7], [1, 0], [0.5, 0.5]) == (pytest.approx(0.5), 1)
    # One user: GAUC is that user's AUC; positive .5 vs .2 (win) and .5 (tie): 1.5 / 2.
    labels, scores = [0, 0, 1], [0.2, 0.5, 0.5]
    assert metrics.gauc(["u"] * 3, labels, scores)[0] == pytest.approx(0.75)
    assert metrics.gauc(["u"] * 3, labels, scores)[0] == pytest.approx(metrics.auc(labels, scores))


def test_gauc_nan_when_no_user_has_both_classes():
    value, counted = metrics.gauc([1, 1, 2], [1, 1, 0], [0.1, 0.2, 0.3])
    assert math.isnan(value) and counted == 0
    value, counted = metrics.gauc([], [], [])
    assert math.isnan(value) and counted == 0


# ----------------------------------------------------------------------------------------
# NDCG, HitRate, MAP at k.

# One user's list, already in score order: positives at ranks 2 and 4.
ONE_USER = dict(user_ids=[0] * 5, labels=[0, 1, 0, 1, 0], scores=[0.9, 0.8, 0.7, 0.6, 0.5])
L3, L5 = 1 / math.log2(3), 1 / math.log2(5)  # discounts of ranks 2 and 4


def test_ndcg_with_known_ideal_dcg():
    # DCG@5 = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068; with 2 positives the ideal list puts
    # them at ranks 1, 2: IDCG = 1 + 1/log2(3) = 1.63093. NDCG@5 = 1.06161 / 1.63093 = 0.65092.
    assert metrics.ndcg_at_k(**ONE_USER, k=5) == pytest.approx((L3 + L5) / (1 + L3))
    assert metrics.ndcg_at_k(**ONE_USER, k=5) == pytest.approx(0.650921, abs=1e-6)
    # k=3 < list length: only rank 2 counts; IDCG@3 still has 2 positives: 0.63093 / 1.63093.
    assert metrics.ndcg_at_k(**ONE_USER, k=3) == pytest.approx(L3 / (1 + L3))
    # k larger than the list: the whole list, same as k=5.
    assert metrics.ndcg_at_k(**ONE_USER, k=50) == pytest.approx((L3 + L5) / (1 + L3))
    # k=1: the top item is negative.
    assert metrics.ndcg_at_k(**ONE_USER, k=1) == 0.0
    # One positive, at rank 3, k=3: IDCG = 1, DCG = 1/log2(4) = 1/2.
    assert metrics.ndcg_at_k([0, 0, 0], [0, 0, 1], [3, 2, 1], k=3) == pytest.approx(0.5)


def test_hit_rate_at_k_smaller_than_the_list():
    # First positive at rank 2.
    assert metrics.hit_rate_at_k(**ONE_USER, k=1) == 0.0
    assert metrics.hit_rate_at_k(**ONE_USER, k=2) == 1.0
    assert metrics.hit_rate_at_k(**ONE_USER, k=5) == 1.0


def test_map_at_k_smaller_than_the_list():
    # k=5: positives at ranks 2 and 4, Precision@2 = 1/2, Precision@4 = 2/4;
    # AP = (1/2 + 1/2) / min(2, 5) = 1/2.
    assert metrics.map_at_k(**ONE_USER, k=5) == pytest.approx(0.5)
    # k=3: only rank 2 is in: (1/2) / min(2, 3) = 1/4.
    assert metrics.map_at_k(**ONE_USER, k=3) == pytest.approx(0.25)
    # k=1: no positive in the top 1.
    assert metrics.map_at_k(**ONE_USER, k=1) == 0.0
    # Top min(P, k) all positive -> 1: 3 positives ranked 1, 2, 3 and k=2.
    assert metrics.map_at_k([0] * 4, [1, 1, 1, 0], [4, 3, 2, 1], k=2) == pytest.approx(1.0)


def test_means_over_users_skip_users_without_positives():
    # User "a" is ONE_USER; user "b": labels 1 0 with the positive on top -> every metric 1;
    # user "c" has no positive and is skipped. Scores are given shuffled across users.
    users = ["b", "a", "c", "a", "a", "b", "a", "c", "a"]
    labels = [1, 1, 0, 0, 0, 0, 1, 0, 0]
    scores = [0.3, 0.8, 0.99, 0.7, 0.9, 0.1, 0.6, 0.98, 0.5]
    # Means over users a and b (each weight 1/2):
    assert metrics.ndcg_at_k(users, labels, scores, 5) == pytest.approx(
        ((L3 + L5) / (1 + L3) + 1) / 2
    )
    assert metrics.hit_rate_at_k(users, labels, scores, 1) == pytest.approx(0.5)  # a 0, b 1
    assert metrics.map_at_k(users, labels, scores, 3) == pytest.approx((0.25 + 1) / 2)
    out = metrics.ranking_metrics(users, labels, scores, k=5)
    assert out["ndcg@5"] == pytest.approx(((L3 + L5) / (1 + L3) + 1) / 2)
    assert out["hit_rate@5"] == 1.0
    assert out["map@5"] == pytest.approx((0.5 + 1) / 2)
    assert (out["users"], out["ranked_users"]) == (3, 2)
    # GAUC: a has AUC 3/6 = 1/2 (positives .8, .6 vs negatives .9, .7, .5: .8 beats .7, .5;
    # .6 beats .5 -> 3 of 6 pairs), weight 5; b has AUC 1, weight 2 -> (2.5 + 2) / 7.
    assert out["gauc"] == pytest.approx(4.5 / 7)
    assert out["gauc_users"] == 2


def test_ties_are_broken_by_input_order():
    # All three scores tie: the ranking is the input order, so the positive is at rank 2.
    assert metrics.hit_rate_at_k([0, 0, 0], [0, 1, 0], [0.5] * 3, k=1) == 0.0
    assert metrics.ndcg_at_k([0, 0, 0], [0, 1, 0], [0.5] * 3, k=3) == pytest.approx(L3)
    assert metrics.map_at_k([0, 0, 0], [0, 1, 0], [0.5] * 3, k=3) == pytest.approx(0.5)
    # Moved to the front of the input, the positive ranks first.
    assert metrics.hit_rate_at_k([0, 0, 0], [1, 0, 0], [0.5] * 3, k=1) == 1.0
    # Input order counts within a user even when other users' rows come between.
    assert metrics.hit_rate_at_k([0, 1, 0, 1], [0, 1, 1, 0], [0.5, 0.2, 0.5, 0.2], k=1) == 0.5
    # GAUC, in contrast, counts tied pairs as one half (it is an AUC).
    assert metrics.gauc([0, 0, 0], [0, 1, 0], [0.5] * 3)[0] == pytest.approx(0.5)


def test_no_positive_anywhere_gives_nan():
    out = metrics.ranking_metrics([1, 2], [0, 0], [0.1, 0.2], k=3)
    assert math.isnan(out["ndcg@3"]) and math.isnan(out["map@3"]) and math.isnan(out["gauc"])
    assert out["ranked_users"] == 0 and out["users"] == 2


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_matches_brute_force_on_random_data(seed, k):
    rng = np.random.default_rng(seed)
    n = 600
    users = rng.integers(0, 40, n)
    # Users with very different positive rates, scores on a coarse grid (many ties).
    rate = rng.uniform(0, 0.5, 40)[users]
    labels = (rng.random(n) < rate).astype(np.float32)
    scores = np.round(rng.random(n) * 0.5 + 0.3 * labels, 1)
    expected_gauc, expected_users = brute_gauc(users, labels, scores)
    ndcg, hit, ap, ranked = brute_ranking(users, labels, scores, k)
    out = metrics.ranking_metrics(users, labels, scores, k=k)
    assert out["gauc"] == pytest.approx(expected_gauc, abs=1e-12)
    assert out["gauc_users"] == expected_users
    assert out[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)
    assert out[f"hit_rate@{k}"] == pytest.approx(hit, abs=1e-12)
    assert out[f"map@{k}"] == pytest.approx(ap, abs=1e-12)
    assert out["ranked_users"] == ranked
    assert out["users"] == len(set(users.tolist()))
    # The single functions agree with the combined one.
    assert metrics.gauc(users, labels, scores) == (pytest.approx(out["gauc"]), expected_users)
    assert metrics.ndcg_at_k(users, labels, scores, k) == pytest.approx(out[f"ndcg@{k}"])
    assert metrics.hit_rate_at_k(users, labels, scores, k) == pytest.approx(out[f"hit_rate@{k}"])
    assert metrics.map_at_k(users, labels, scores, k) == pytest.approx(out[f"map@{k}"])


def test_string_and_bytes_user_ids_group_like_integers():
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 10, 200)
    labels = rng.random(200) < 0.3
    scores = rng.random(200)
    as_int = metrics.ranking_metrics(ids, labels, scores, k=5)
    as_bytes = metrics.ranking_metrics(
        np.array([f"user{i}".encode() for i in ids], dtype=object), labels, scores, k=5
    )
    assert as_bytes == pytest.approx(as_int)


def test_bad_arguments():
    with pytest.raises(ValueError, match="same length"):
        metrics.gauc([0, 1], [1], [0.5, 0.5])
    with pytest.raises(ValueError, match="k: must be an integer >= 1, got 0"):
        metrics.ndcg_at_k([0], [1], [0.5], k=0)
    with pytest.raises(ValueError, match="NaN"):
        metrics.map_at_k([0, 0], [1, 0], [float("nan"), 0.5], k=1)
    with pytest.raises(ValueError, match="bins: must be an integer >= 1"):
        metrics.calibration([1], [0.5], bins=0)


# ----------------------------------------------------------------------------------------
# Calibration.


def test_calibration_tiny_case():
    # bins=2: the edges are the 0, 0.5, 1 quantiles of .1 .2 .3 .4 = .1, .25, .4.
    # Bin 0 holds .1, .2 (labels 0, 0): mean prediction .15, observed 0, gap .15.
    # Bin 1 holds .3, .4 (labels 1, 1): mean prediction .35, observed 1, gap .65.
    # ECE = 2/4 * .15 + 2/4 * .65 = .4; the largest gap .65.
    out = metrics.calibration([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4], bins=2)
    assert [b["count"] for b in out["bins"]] == [2, 2]
    assert [b["mean_prediction"] for b in out["bins"]] == pytest.approx([0.15, 0.35])
    assert [b["observed_rate"] for b in out["bins"]] == [0.0, 1.0]
    assert [(b["lower"], b["upper"]) for b in out["bins"]] == [
        pytest.approx((0.1, 0.25)),
        pytest.approx((0.25, 0.4)),
    ]
    assert out["ece"] == pytest.approx(0.4)
    assert out["max_calibration_error"] == pytest.approx(0.65)
    assert out["examples"] == 4


def test_calibration_ties_share_a_bin_and_empty_bins_are_left_out():
    # The median of .2 .2 .2 .8 is .2, an edge: scores equal to an edge go to the bin above,
    # so all four rows land in bin 1 and bin 0 is empty (left out).
    # Mean prediction (.6 + .8) / 4 = .35, observed 2/4: ECE |.35 - .5| = .15.
    out = metrics.calibration([1, 0, 0, 1], [0.2, 0.2, 0.2, 0.8], bins=2)
    assert [(b["bin"], b["count"]) for b in out["bins"]] == [(1, 4)]
    assert out["ece"] == pytest.approx(0.15)


def test_calibration_deciles_of_random_scores():
    rng = np.random.default_rng(0)
    p = rng.random(10_000)
    y = rng.random(10_000) < p  # calibrated by construction
    out = metrics.calibration(y, p)
    assert len(out["bins"]) == 10
    assert sum(b["count"] for b in out["bins"]) == 10_000
    assert all(abs(b["count"] - 1000) <= 1 for b in out["bins"])
    assert out["ece"] < 0.03
    # Overconfident scores are visibly miscalibrated.
    assert metrics.calibration(y, np.clip(p * 2 - 0.5, 0, 1))["ece"] > 0.1
