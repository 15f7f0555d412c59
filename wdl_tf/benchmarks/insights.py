"""Does importance find what the app-store generator planted? (issue 11's figure)

Trains Wide & Deep on the synthetic app store (`wdl_tf.datasets.apps`), whose planted model is
known, then runs `wdl_tf.importance` on its evaluation rows and holds the answers to it:

* **Memorized pairs**: the planted (installed app, impression app) pairs add
  `apps.PAIR_WEIGHT` to the logit and nothing else predicts them, so the largest positive
  weights of the wide cross ``installed_apps × impression_app`` should be planted pairs. The
  figure is the share of the cross's top tokens that are planted, against the share of
  planted pairs among all pairs seen in the evaluation rows (what a random pick would get).
* **Strong features**: the planted logit (`apps.logit`, `apps.planted_model`) has two large
  terms that one feature carries alone: ``rating`` (1.2 × (rating − 4), std ≈ 0.54 over apps)
  and ``price`` (−1.0 if paid − 0.25 × log1p(price), std ≈ 0.4); the others are smaller
  (app age 0.28, hour 0.21, slot) or spread over many features (the affinity, the pairs).
  ``language`` enters no term. Permutation importance should rank ``rating`` and ``price``
  first and second, and give ``language`` no AUC drop beyond its noise.

`measure` writes ``<work_dir>/insights.json``; ``quick`` trains a tiny model for one epoch (a
smoke check, not the figure).
"""

from __future__ import annotations

import dataclasses
import json
import os

from wdl_tf import config as config_lib

STRONG = ("rating", "price")  # in this order
UNUSED = "language"


def train_config(work_dir: str, rows: int, epochs: int, seed: int) -> config_lib.TrainConfig:
    """The app store with the settings of BENCHMARKS.md's app-store table (hidden (64, 32))."""
    base = config_lib.TrainConfig(seed=seed, verbose=0, epochs=epochs, export_base="")
    return dataclasses.replace(
        base,
        model_dir=os.path.join(work_dir, "apps_wide_deep"),
        data=dataclasses.replace(base.data, dataset="apps_synthetic", synthetic_rows=rows),
        model=dataclasses.replace(base.model, hidden_units=(64, 32)),
    )


def planted_share(tokens: list[str], planted: set[str]) -> float:
    return sum(t in planted for t in tokens) / len(tokens) if tokens else 0.0


def check(result: dict, planted: set[str], seen_pairs: set[str], cross: str, top: int) -> dict:
    """The figure's numbers and whether each check holds (see the module doc)."""
    tokens = [e["token"] for e in result["top_tokens"][cross]["top_positive"][:top]]
    ranking = result["ranking"]["joint"]
    language = result["features"][UNUSED]["joint"]
    return {
        "top_cross_tokens": tokens,
        "planted_share_of_top": planted_share(tokens, planted),
        "planted_share_of_seen_pairs": planted_share(sorted(seen_pairs), planted),
        "ranking": ranking,
        "language_drop": language["mean"],
        "language_drop_std": language["std"],
        "checks": {
            "top_tokens_mostly_planted": planted_share(tokens, planted) >= 0.5,
            "strong_features_first": tuple(ranking[: len(STRONG)]) == STRONG,
            "unused_feature_no_drop": language["mean"] <= max(2 * language["std"], 0.002),
        },
    }


def measure(work_dir: str, rows: int, epochs: int, seed: int, top: int, quick: bool) -> dict:
    """Trains, runs importance, checks it against the planted model and writes
    ``<work_dir>/insights.json``; returns the figure (`check`'s, with ``cross``, the run's
    sizes and its test AUC) and prints what it found."""
    from wdl_tf import evaluate_lib, importance, samples, train_lib
    from wdl_tf import features as fs
    from wdl_tf.datasets import apps

    rows, epochs = (4000, 1) if quick else (rows, epochs)
    config = train_config(work_dir, rows, epochs, seed)
    result = train_lib.train_and_evaluate(config)
    print(f"trained: test AUC {result.metrics['auc']:.4f}", flush=True)
    found = importance.importance(
        model_dir=config.model_dir, options=importance.ImportanceOptions(repeats=3)
    )
    spec = fs.load(os.path.join(config.model_dir, "feature_spec.json"))
    (cross,) = [c for c in found["top_tokens"] if "_X_" in c]
    world = apps.planted_model(seed)
    planted = {f"{apps.app_token(a)} × {apps.app_token(b)}" for a, b in world.pairs}
    eval_files = evaluate_lib.default_eval_data(config).files  # what importance scored
    sample = samples.read_rows(spec, eval_files, max_rows=20_000)
    seen = {
        f"{i} × {m}"
        for installed, m in zip(sample.columns["installed_apps"], sample.columns["impression_app"])
        for i in installed
    }
    figure = check(found, planted, seen, cross, top)
    figure.update(rows=rows, epochs=epochs, seed=seed, test_auc=result.metrics["auc"])
    os.makedirs(work_dir, exist_ok=True)
    with open(os.path.join(work_dir, "insights.json"), "w") as f:
        json.dump(figure, f, indent=2)
    print(
        f"top {len(figure['top_cross_tokens'])} tokens of {cross}: "
        f"{figure['planted_share_of_top']:.0%} planted (of all pairs seen in the eval rows: "
        f"{figure['planted_share_of_seen_pairs']:.1%})"
    )
    print(f"permutation ranking (joint): {', '.join(figure['ranking'])}")
    print(
        f"{UNUSED} (unused by the planted model): drop {figure['language_drop']:+.4f} "
        f"± {figure['language_drop_std']:.4f}"
    )
    print(json.dumps(figure["checks"]))
    return figure
