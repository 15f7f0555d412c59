"""Do the defaults hold across datasets? Wide, deep and joint with train.py's defaults.

    python scripts/benchmark_quality.py --work_dir=/tmp/quality \\
        --datasets=census,apps_synthetic,drifting_synthetic --seeds=0,1

For each dataset and seed, `train_lib.compare_model_types` trains wide-only, deep-only and
Wide & Deep with the same defaults (early stopping on the validation split carved from the
training files; the test files are only evaluated), and the table says whether the joint
model's test AUC is at least the better part's: the paper's ordering, the quality target of
BENCHMARKS.md. The seed seeds the synthetic data and the model alike. Writes
``<work_dir>/quality.json`` and ``quality.md``; exit status 1 when the ordering fails
anywhere (so it can gate a change of defaults).

``--tune_trials=N`` compares the *tuned* models instead (issue 10's second figure): for each
model type, `tune_lib.tune` runs N trials on the validation split, the first half random and
the rest Bayesian (the same budget for each type: N trials of at most ``--tune_epochs``
epochs, early stopping inside each, the default search space less
the settings of a part the type does not have), then the best settings are trained on all
training rows for the best trial's epoch count, as ``train.py --flagfile=best.flags`` does,
and evaluated once on the test files.

``--quick`` runs a tiny census twin for one epoch: a smoke check of this script, not a figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from absl import app, flags, logging

from wdl_tf import config as config_lib
from wdl_tf import datasets

# Rows of the synthetic datasets measured (their DEFAULT_ROWS are test-sized).
ROWS = {"apps_synthetic": 50_000, "drifting_synthetic": 0, "census": 0}

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defined by the main only, so tests can import this module beside other scripts."""
    flags.DEFINE_string("work_dir", "/tmp/wdl_quality", "Where the runs and the tables go.")
    flags.DEFINE_list("datasets", ["census", "apps_synthetic", "drifting_synthetic"], "Datasets.")
    flags.DEFINE_list("seeds", ["0", "1"], "Seeds (of the synthetic data and of the model).")
    flags.DEFINE_bool("quick", False, "A tiny census twin for one epoch (smoke check only).")
    flags.DEFINE_integer(
        "tune_trials", 0, "When > 0: compare tuned models, this many trials per model type."
    )
    flags.DEFINE_integer("tune_epochs", 10, "Epoch budget of each tuning trial.")


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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from wdl_tf import train_lib

    try:
        seeds = [int(s) for s in FLAGS.seeds]
        plans = [
            (d, s, config_for(d, s, FLAGS.work_dir, FLAGS.quick))
            for d in FLAGS.datasets
            for s in seeds
        ]
    except ValueError as e:
        raise app.UsageError(str(e)) from None
    runs = []
    for dataset, seed, config in plans:
        start = time.perf_counter()
        if FLAGS.tune_trials > 0:
            results = compare_tuned(config, FLAGS.tune_trials, FLAGS.tune_epochs)
        else:
            results = train_lib.compare_model_types(config)
        runs.append(
            dict(dataset=dataset, seed=seed, seconds=time.perf_counter() - start, metrics=results)
        )
        print(f"{dataset} seed {seed}: " + ", ".join(
            f"{k} {v['auc']:.4f}" for k, v in results.items()
        ), flush=True)  # fmt: skip
    table, ok = summarize(runs)
    print(table)
    os.makedirs(FLAGS.work_dir, exist_ok=True)
    with open(os.path.join(FLAGS.work_dir, "quality.json"), "w") as f:
        json.dump(runs, f, indent=2)
    with open(os.path.join(FLAGS.work_dir, "quality.md"), "w") as f:
        f.write(table + "\n")
    if not ok:
        print("the joint model is below one of its parts somewhere (✗)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    define_flags()
    logging.set_verbosity(logging.WARNING)
    app.run(main)
