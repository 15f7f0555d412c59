"""wdl_tf.benchmarks.insights: its checks on a hand-made importance result."""

from wdl_tf.benchmarks import insights as bi

CROSS = "installed_apps_X_impression_app"


def _result(tokens, ranking, language_mean, language_std):
    return {
        "top_tokens": {CROSS: {"top_positive": [{"token": t} for t in tokens]}},
        "ranking": {"joint": ranking},
        "features": {"language": {"joint": {"mean": language_mean, "std": language_std}}},
    }


def test_planted_pairs_strong_features_and_the_unused_one():
    planted = {"a1 × a2", "a3 × a4", "a5 × a6"}
    seen = {"a1 × a2", "a7 × a8", "a9 × a10", "a11 × a12"}
    good = _result(
        ["a1 × a2", "a3 × a4", "a9 × a10"],
        ["rating", "price", "developer", "language"],
        0.0005,
        0.0010,
    )
    figure = bi.check(good, planted, seen, CROSS, top=3)
    assert abs(figure["planted_share_of_top"] - 2 / 3) < 1e-12
    assert figure["planted_share_of_seen_pairs"] == 0.25
    assert all(figure["checks"].values())

    # Only the top `top` tokens count; the two strong features swapped; language matters.
    bad = _result(
        ["a9 × a10", "a7 × a8", "a1 × a2", "a3 × a4"],
        ["price", "rating", "developer"],
        0.02,
        0.001,
    )
    checks = bi.check(bad, planted, seen, CROSS, top=2)["checks"]
    assert checks == {
        "top_tokens_mostly_planted": False,
        "strong_features_first": False,
        "unused_feature_no_drop": False,
    }
