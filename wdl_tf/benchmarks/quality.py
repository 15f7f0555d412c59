"""Do the defaults hold across datasets? Wide, deep and joint with train.py's defaults.

For each dataset and seed, `train_lib.compare_model_types` trains wide-only, deep-only and
Wide & Deep with the same defaults (early stopping on the validation split carved from the
training files; the test files are only evaluated), and the table says whether the joint
model's test AUC is at least the better part's: the paper's ordering, the quality target of
BENCHMARKS.md. The seed seeds the synthetic data and the model alike.

`compare_tuned` compares the *tuned* models instead (issue 10's second figure): for each
model type, `tune_lib.tune` runs N trials on the validation split, the first half random and
the rest Bayesian (the same budget for each type: N trials of at most ``epochs`` epochs, early
stopping inside each, the default search space less the settings of a part the type does not
have), then the best settings are trained on all training rows for the best trial's epoch
count, as ``train.py --flagfile=best.flags`` does, and evaluated once on the test files.

``quick`` runs a tiny census twin for one epoch: a smoke check, not a figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

from wdl_tf import config as config_lib
from wdl_tf import datasets

# Rows of the synthetic datasets measured (their DEFAULT_ROWS are test-sized).
ROWS = {"apps_synthetic": 50_000, "drifting_synthetic": 0, "census": 0}


def config_for(dataset: str, seed: int, work_dir: str, quick: bool) -> config_lib.TrainConfig:
    """train.py's defaults for ``dataset``: its preset (`config.dataset_preset`)."""
    if dataset not in datasets.DATASETS or dataset == "files":
        allowed = [d for d in datasets.DATASETS if d != "files"]
        raise ValueError(f"datasets: unknown value {dataset!r}; allowed values are {allowed}")
    config = config_lib.preset(config_lib.dataset_preset(dataset), seed=seed, verbose=0)
    data = dataclasses.replace(config.data, dataset=dataset, synthetic_rows=ROWS.get(dataset, 0))
    if quick:
        config = config_lib.preset("test", seed=seed)
        data = dataclasses.replace(config.data, dataset="census_synthetic", synthetic_rows=400)
        config = dataclasses.replace(config, epochs=1)
    return dataclasses.replace(
        config, data=data, model_dir=os.path.join(work_dir, f"{dataset}_seed{seed}")
    )


def compare_tuned(
    config: config_lib.TrainConfig, trials: int, epochs: int
) -> dict[str, dict[str, float]]:
    """Tunes each model type with the same budget on the validation split, then trains the
    best settings on every training row and evaluates them on the test files.

    Each type's metrics gain ``tuned`` (the searched settings, the epochs kept) and
    ``best_validation_auc`` (the best trial's).
    """
    from wdl_tf import model as model_lib
    from wdl_tf import train_lib, tune_lib

    results = {}
    for model_type in model_lib.MODEL_TYPES:
        base = dataclasses.replace(
            config,
            model=dataclasses.replace(config.model, model_type=model_type),
            epochs=epochs,
            export_base="",
        )
        options = tune_lib.TuneOptions(
            tune_dir=os.path.join(config.model_dir, f"tune_{model_type}"),
            algorithm="bayesian",
            max_trials=trials,
            initial_points=max(1, trials // 2),  # then half the budget is Bayesian
            tuner_seed=config.seed + 1,
        )
        summary = tune_lib.tune(base, options, report=lambda line: print(line, flush=True))
        final = tune_lib.best_config(base, summary.best)
        final = dataclasses.replace(
            final,
            data=dataclasses.replace(final.data, validation_fraction=0.0),
            model_dir=os.path.join(config.model_dir, f"tuned_{model_type}"),
        )
        metrics = dict(train_lib.train_and_evaluate(final).metrics)
        metrics["tuned"] = {**summary.best.hyperparameters, "epochs": final.epochs}
        metrics["best_validation_auc"] = summary.best.validation_auc
        results[model_type] = metrics
    return results


def summarize(runs: list[dict]) -> tuple[str, bool]:
    """A Markdown table of the runs and whether the joint model is never below either part.

    Each run: ``dataset``, ``seed``, ``seconds`` and ``metrics`` (model type → metrics).
    """
    lines = [
        "| dataset | seed | wide AUC | deep AUC | wide_deep AUC | joint − best part "
        "| wide_deep accuracy | wide_deep epochs | minutes (3 runs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ok = True
    for run in runs:
        m = run["metrics"]
        auc = {k: m[k]["auc"] for k in ("wide", "deep", "wide_deep")}
        margin = auc["wide_deep"] - max(auc["wide"], auc["deep"])
        ok &= margin >= 0
        lines.append(
            f"| {run['dataset']} | {run['seed']} | {auc['wide']:.4f} | {auc['deep']:.4f} "
            f"| {auc['wide_deep']:.4f} | {margin:+.4f}{'' if margin >= 0 else ' ✗'} "
            f"| {m['wide_deep']['accuracy']:.4f} | {m['wide_deep'].get('epochs_trained', '—')} "
            f"| {run['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines), ok


def plan(
    dataset_names: list[str], seeds: list[str], work_dir: str, quick: bool
) -> list[tuple[str, int, config_lib.TrainConfig]]:
    """(dataset, seed, config) of every run, all checked before the first one trains; raises
    ValueError on an unknown dataset or a seed that is not an integer."""
    ints = [int(s) for s in seeds]
    return [(d, s, config_for(d, s, work_dir, quick)) for d in dataset_names for s in ints]


def measure(
    plans: list[tuple[str, int, config_lib.TrainConfig]], tune_trials: int, tune_epochs: int
) -> list[dict]:
    """Trains (or, with ``tune_trials`` > 0, tunes) the three model types of each plan; one
    run dict per plan, as `summarize` reads them. Prints each run's AUCs as it ends."""
    from wdl_tf import train_lib

    runs = []
    for dataset, seed, config in plans:
        start = time.perf_counter()
        if tune_trials > 0:
            results = compare_tuned(config, tune_trials, tune_epochs)
        else:
            results = train_lib.compare_model_types(config)
        runs.append(
            dict(dataset=dataset, seed=seed, seconds=time.perf_counter() - start, metrics=results)
        )
        print(f"{dataset} seed {seed}: " + ", ".join(
            f"{k} {v['auc']:.4f}" for k, v in results.items()
        ), flush=True)  # fmt: skip
    return runs


def write_report(runs: list[dict], work_dir: str) -> bool:
    """Prints the table and writes ``<work_dir>/quality.json`` and ``quality.md``; returns
    whether the ordering holds everywhere."""
    table, ok = summarize(runs)
    print(table)
    os.makedirs(work_dir, exist_ok=True)
    with open(os.path.join(work_dir, "quality.json"), "w") as f:
        json.dump(runs, f, indent=2)
    with open(os.path.join(work_dir, "quality.md"), "w") as f:
        f.write(table + "\n")
    return ok
