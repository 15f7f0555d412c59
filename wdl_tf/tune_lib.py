"""Hyperparameter search on the validation split, driven by KerasTuner's oracles.

`tune(base, options)` asks a KerasTuner oracle (Bayesian optimization or Hyperband) for
settings, trains each trial with `train_lib.train_and_evaluate` into its own model dir and
reports the trial's validation AUC back as the objective. Our own loop drives the oracle
(rather than a `keras_tuner.Tuner`) because a trial is a whole `train_and_evaluate` run: its
own data pipeline, preprocessing, two optimizers and checkpoints.

Only the validation split is ever read. The base config must hold out
``data.validation_fraction`` > 0 of the training rows, and every trial is given the training
files only (``eval_files`` empty), so the test files never reach a trial. Synthetic data is
generated once under ``tune_dir``: the validation split hashes the file path, so every trial
must read the same files to be scored on the same rows.

``tune_dir`` holds::

    search.json          the settings of the search; a rerun with others is refused
    oracle/              KerasTuner's state (oracle.json, trial_*/trial.json): a rerun resumes
    trials/<id>/model/   each trial's model dir; trials/<id>/result.json when it finished
    best.flags           the best trial as an absl flagfile for scripts/train.py
    results.md, .json    every finished trial, sorted by validation AUC

The tunable settings keep their `scripts/train.py` flag names, so the search space, the
results and ``best.flags`` all use one vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from wdl_tf import atomic, datasets
from wdl_tf.config import DataConfig, ModelConfig, TrainConfig, check_choice
from wdl_tf.evaluate_lib import write_json_atomic

ALGORITHMS = ("bayesian", "hyperband")
OBJECTIVE = "validation_auc"

# The default search space, in the JSON form a --search_space file uses. Ranges bracket each
# default (see ModelConfig) by one to two orders of magnitude; the rating data needed
# linear_learning_rate 0.02 where census wants 0.2.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "linear_learning_rate": {"min": 0.005, "max": 1.0, "log": True},
    "linear_l1": {"min": 1e-5, "max": 1.0, "log": True},
    "linear_l2": {"min": 1e-5, "max": 10.0, "log": True},
    "dnn_learning_rate": {"min": 0.005, "max": 0.5, "log": True},
    "hidden_units": {"values": ["1024,512,256", "512,256,128", "256,128,64", "256,128", "128,64"]},
    "embedding_dim": {"values": [8, 16, 32, 64]},
    "dropout": {"min": 0.0, "max": 0.5},
    "batch_size": {"values": [128, 256, 512, 1024]},
}
# Which part of the model a setting acts on (None: both), to leave out what a model type
# does not have: tuning the FTRL step of a deep-only model would spend trials on noise.
_PART = {
    "linear_learning_rate": "wide",
    "linear_l1": "wide",
    "linear_l2": "wide",
    "dnn_learning_rate": "deep",
    "hidden_units": "deep",
    "embedding_dim": "deep",
    "dropout": "deep",
    "batch_size": None,
}
_FLOATS = ("linear_learning_rate", "linear_l1", "linear_l2", "dnn_learning_rate", "dropout")
_INTS = ("embedding_dim", "batch_size")
# Flags of the base config that best.flags leaves out: where a run writes, how chatty it
# is, and the validation split (the final run trains on all training rows).
_NOT_IN_FLAGFILE = ("model_dir", "export_base", "verbose", "validation_fraction")


@dataclasses.dataclass(frozen=True)
class Param:
    """One searched setting: a range (``min``/``max``, optionally ``log``) or ``values``."""

    name: str
    min: float | None = None
    max: float | None = None
    log: bool = False
    values: tuple[Any, ...] = ()

    def candidates(self) -> list[Any]:
        """The values a trial can take at the edges (all of them for a choice)."""
        return list(self.values) if self.values else [self.min, self.max]

    def to_json(self) -> dict[str, Any]:
        if self.values:
            return {"values": list(self.values)}
        return {"min": self.min, "max": self.max, "log": self.log}


@dataclasses.dataclass(frozen=True)
class TuneOptions:
    """How to search.

    Attributes:
      tune_dir: the search's state and outputs (see the module docstring); rerunning with the
        same tune_dir resumes.
      algorithm: ``bayesian`` (KerasTuner's Gaussian-process BayesianOptimizationOracle) or
        ``hyperband`` (HyperbandOracle: many short trials, the best continued from their
        checkpoints; its largest budget is the base config's ``epochs``).
      max_trials: at most this many trials in all, counting those of a resumed search.
      search_space: a JSON file ``{name: {"min", "max", "log"} | {"values": [...]}}`` naming
        exactly the settings to search; empty = `DEFAULT_SPACE`. Settings of a part the model
        type does not have are left out.
      tune_params: when set, search only these names of the space.
      hyperband_factor: Hyperband's reduction factor (keeps 1/factor of each round).
      initial_points: random trials before the Bayesian model is used (0 = KerasTuner's
        default, 3 × the number of searched settings).
      tuner_seed: seed of the oracle's sampling (>= 1: KerasTuner takes 0 as "random").
      overwrite: delete a previous search in tune_dir instead of resuming it.
    """

    tune_dir: str
    algorithm: str = "bayesian"
    max_trials: int = 20
    search_space: str = ""
    tune_params: tuple[str, ...] = ()
    hyperband_factor: int = 3
    initial_points: int = 0
    tuner_seed: int = 1
    overwrite: bool = False

    def validate(self) -> None:
        if not self.tune_dir:
            raise ValueError("tune_dir: must not be empty")
        check_choice("algorithm", self.algorithm, ALGORITHMS)
        if self.max_trials < 1:
            raise ValueError(f"max_trials: must be >= 1, got {self.max_trials}")
        if self.hyperband_factor < 2:
            raise ValueError(f"hyperband_factor: must be >= 2, got {self.hyperband_factor}")
        if self.initial_points < 0:
            raise ValueError(f"initial_points: must be >= 0, got {self.initial_points}")
        if self.tuner_seed < 1:
            raise ValueError(f"tuner_seed: must be >= 1, got {self.tuner_seed}")


@dataclasses.dataclass
class TrialResult:
    """One finished trial, as results.json lists it."""

    trial_id: str
    hyperparameters: dict[str, Any]
    validation_auc: float
    validation_log_loss: float
    epochs: int  # the trial's epoch budget
    best_epoch: int  # the epoch its metrics (and best.flags' --epochs) come from
    initial_epoch: int  # > 0 when it continued a checkpoint (Hyperband)
    continues: str | None  # the trial whose checkpoint it continued
    seconds: float
    model_dir: str


@dataclasses.dataclass
class TuneSummary:
    results: list[TrialResult]  # best first
    best: TrialResult
    new_trials: int  # trials run by this call (a resumed search ran the others before)
    best_flags: str
    results_md: str
    results_json: str


# ----------------------------------------------------------------------------------------
# The search space.


def load_space(options: TuneOptions, model_type: str) -> tuple[list[Param], list[str]]:
    """The validated search space and the names left out because model_type lacks their part.

    The space is the file's or the default, restricted to tune_params. A setting of a part
    the model does not have (``dropout`` of a wide-only model) is left out rather than
    refused, so one space file or --tune_params list serves all three model types (the
    same budget for each in a comparison); a space left empty by that is refused.
    """
    if options.search_space:
        if not os.path.exists(options.search_space):
            raise ValueError(f"search_space: file {options.search_space!r} does not exist")
        with open(options.search_space) as f:
            try:
                obj = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"search_space {options.search_space!r}: not JSON: {e}") from None
        where = f"search_space {options.search_space!r}"
    else:
        obj = DEFAULT_SPACE
        where = "default search space"
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object {{name: range}}, got {obj!r}")
    if options.tune_params:
        unknown = [n for n in options.tune_params if n not in obj]
        if unknown:
            raise ValueError(f"tune_params: {unknown} not in the {where}; it has {sorted(obj)}")
        obj = {n: obj[n] for n in options.tune_params}
    unknown = [n for n in obj if n not in DEFAULT_SPACE]
    if unknown:
        raise ValueError(
            f"{where}: unknown setting {unknown[0]!r}; allowed names are {sorted(DEFAULT_SPACE)}"
        )
    left_out = [n for n in obj if _PART[n] and not _applies(_PART[n], model_type)]
    if not obj or len(left_out) == len(obj):
        raise ValueError(
            f"{where}: empty for model_type {model_type!r}"
            + (f" (it has no part for {left_out})" if left_out else "")
            + f"; name at least one of {sorted(n for n in DEFAULT_SPACE if n not in left_out)}"
        )
    params = [_parse_param(n, spec) for n, spec in obj.items() if n not in left_out]
    return params, left_out


def _applies(part: str, model_type: str) -> bool:
    return model_type == "wide_deep" or model_type == part


def _parse_param(name: str, spec: Any) -> Param:
    if not isinstance(spec, dict):
        raise ValueError(f"search space {name}: expected an object, got {spec!r}")
    allowed = {"values"} if name == "hidden_units" else {"min", "max", "log", "values"}
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ValueError(
            f"search space {name}: unknown keys {extra}; allowed are {sorted(allowed)}"
        )
    if "values" in spec:
        if set(spec) != {"values"}:
            raise ValueError(f"search space {name}: give either 'values' or 'min'/'max', not both")
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise ValueError(
                f"search space {name}: 'values' must be a non-empty list, got {values!r}"
            )
        if len(set(map(repr, values))) != len(values):
            raise ValueError(f"search space {name}: 'values' has duplicates: {values!r}")
        return Param(name, values=tuple(_check_value(name, v) for v in values))
    if "min" not in spec or "max" not in spec:
        raise ValueError(
            f"search space {name}: needs 'values' or both 'min' and 'max', got {spec!r}"
        )
    lo, hi = (_check_value(name, spec[k]) for k in ("min", "max"))
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"search space {name}: 'log' must be true or false, got {log!r}")
    if lo > hi:
        raise ValueError(f"search space {name}: min {lo!r} > max {hi!r}")
    if log and lo <= 0:
        raise ValueError(f"search space {name}: a log range needs min > 0, got min {lo!r}")
    return Param(name, min=lo, max=hi, log=log)


def _check_value(name: str, value: Any) -> Any:
    """A value of the right type for ``name`` (hidden_units: "256,128" or [256, 128])."""
    if name == "hidden_units":
        units = value.split(",") if isinstance(value, str) else value
        try:
            if not isinstance(units, list) or not all(int(u) == float(u) for u in units):
                raise ValueError
            return ",".join(str(int(u)) for u in units)
        except (TypeError, ValueError):
            raise ValueError(
                f'search space hidden_units: expected layer sizes like "256,128" or '
                f"[256, 128], got {value!r}"
            ) from None
    kind = int if name in _INTS else float
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and not float(value).is_integer())
    ):
        raise ValueError(f"search space {name}: expected {kind.__name__} values, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"search space {name}: expected a finite number, got {value!r}")
    return kind(value)


def apply_values(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """``base`` with the searched settings of ``values`` (KerasTuner's ``tuner/*`` ignored)."""
    model, data = {}, {}
    for name, value in values.items():
        if name.startswith("tuner/"):
            continue
        if name == "hidden_units":
            value = tuple(int(u) for u in str(value).split(","))
        if name in _fields(ModelConfig):
            model[name] = value
        elif name in _fields(DataConfig):
            data[name] = value
        else:
            raise ValueError(f"search space: unknown setting {name!r}")
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, **model),
        data=dataclasses.replace(base.data, **data),
    )


def check_space(base: TrainConfig, space: list[Param]) -> None:
    """Every edge of every range gives a valid config, or ValueError naming the value."""
    for param in space:
        for value in param.candidates():
            try:
                apply_values(base, {param.name: value}).validate()
            except ValueError as e:
                raise ValueError(
                    f"search space {param.name}: value {value!r} is invalid: {e}"
                ) from None


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _hyperparameters(space: list[Param]):
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for p in space:
        if p.values:
            if len(p.values) == 1:
                hp.Fixed(p.name, p.values[0])
            else:
                hp.Choice(
                    p.name, list(p.values), ordered=False if p.name == "hidden_units" else None
                )
        elif p.min == p.max:
            hp.Fixed(p.name, p.min)
        elif p.name in _INTS:
            hp.Int(p.name, int(p.min), int(p.max), sampling="log" if p.log else "linear")
        else:
            hp.Float(p.name, p.min, p.max, sampling="log" if p.log else "linear")
    return hp


# ----------------------------------------------------------------------------------------
# The search.


def tune(
    base: TrainConfig, options: TuneOptions, report: Callable[[str], None] = print
) -> TuneSummary:
    """Runs (or resumes) the search; writes best.flags and the results after every trial.

    Bad input (options, the base config, the search space, a validation split that is off,
    a tune_dir that holds another search) is a ValueError before any training.
    """
    options.validate()
    base.validate()
    if base.data.validation_fraction <= 0:
        raise ValueError(
            f"validation_fraction: tuning needs a validation split carved from the training "
            f"files (a value in (0, 1)), got {base.data.validation_fraction}; the test files "
            "are never used to choose settings"
        )
    space, left_out = load_space(options, base.model.model_type)
    check_space(base, space)
    if left_out:
        report(f"not searched: {left_out} (model_type {base.model.model_type!r} has no such part)")
    if options.overwrite:
        _remove_search(options.tune_dir)
    trial_base = _trial_base(base, options.tune_dir)  # missing files fail here, named
    _check_same_search(base, options, space)

    import keras_tuner as kt

    oracle = _make_oracle(kt, options, base, space)
    oracle.verbose = 0  # we print one line per trial instead of its tables
    oracle._set_project_dir(options.tune_dir, "oracle")  # what keras_tuner.Tuner does
    if os.path.exists(os.path.join(options.tune_dir, "oracle", "oracle.json")):
        oracle.reload()  # an interrupted trial is queued again, and resumes its checkpoint
        report(f"resuming the search in {options.tune_dir}: {len(oracle.trials)} trials so far")
    oracle.max_trials = options.max_trials  # HyperbandOracle takes no max_trials argument
    results = _load_results(options.tune_dir)
    new_trials = 0
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == kt.engine.trial.TrialStatus.STOPPED:
            break
        if trial.status != kt.engine.trial.TrialStatus.RUNNING:  # IDLE: only with workers
            raise RuntimeError(f"oracle returned a {trial.status} trial with no trial running")
        result = _run_trial(trial_base, trial.trial_id, trial.hyperparameters.values, options)
        oracle.update_trial(
            trial.trial_id,
            {OBJECTIVE: result.validation_auc, "validation_log_loss": result.validation_log_loss},
            step=result.best_epoch,
        )
        trial.status = kt.engine.trial.TrialStatus.COMPLETED
        oracle.end_trial(trial)
        oracle.save()  # end_trial saves before it drops the trial from the ongoing ones
        new_trials += 1
        if math.isfinite(result.validation_auc):  # else KerasTuner marked it failed
            results[result.trial_id] = result
        best = _write_outputs(base, options, space, results, new_trials).best if results else None
        report(_progress_line(len(oracle.trials), options.max_trials, result, best))
    if not results:
        raise RuntimeError(f"no trial finished with a validation AUC in {options.tune_dir}")
    summary = _write_outputs(base, options, space, results, new_trials)
    report(
        f"best of {len(results)} trials: trial {summary.best.trial_id}, validation AUC "
        f"{summary.best.validation_auc:.4f}; wrote {summary.best_flags}, {summary.results_md}"
    )
    return summary


def _make_oracle(kt, options: TuneOptions, base: TrainConfig, space: list[Param]):
    common = dict(
        objective=kt.Objective(OBJECTIVE, direction="max"),
        hyperparameters=_hyperparameters(space),
        seed=options.tuner_seed,
        tune_new_entries=False,
        allow_new_entries=False,
    )
    if options.algorithm == "hyperband":
        return kt.oracles.HyperbandOracle(
            max_epochs=base.epochs, factor=options.hyperband_factor, **common
        )
    return kt.oracles.BayesianOptimizationOracle(
        max_trials=options.max_trials, num_initial_points=options.initial_points or None, **common
    )


def _trial_base(base: TrainConfig, tune_dir: str) -> TrainConfig:
    """The base config every trial starts from: the training files only, made once.

    The dataset's files are resolved (synthetic data generated) under tune_dir, so every
    trial hashes the same paths into the same validation rows, and no trial is told where
    the test files are.
    """
    source = datasets.resolve(base.data, tune_dir, base.seed)
    source.train_files()  # every file exists, or ValueError naming it
    data = dataclasses.replace(
        base.data,
        dataset="files",
        feature_spec=source.feature_spec,
        train_files=",".join(source.train_patterns),
        eval_files="",
    )
    return dataclasses.replace(base, data=data, export_base="")


def _trial_dir(options: TuneOptions, trial_id: str) -> str:
    return os.path.join(options.tune_dir, "trials", trial_id)


def _run_trial(
    trial_base: TrainConfig, trial_id: str, values: dict[str, Any], options: TuneOptions
) -> TrialResult:
    from wdl_tf import train_lib

    # The Bayesian oracle proposes numpy scalars (np.float64): make them plain Python values,
    # or their repr ("np.float64(0.28)") would end up in best.flags.
    values = {k: v.item() if hasattr(v, "item") else v for k, v in values.items()}
    trial_dir = _trial_dir(options, trial_id)
    model_dir = os.path.join(trial_dir, "model")
    continues = values.get("tuner/trial_id")
    if continues and not os.path.isdir(os.path.join(model_dir, "checkpoints")):
        # Hyperband continues a trial: start from its checkpoint (weights, optimizer slots,
        # epoch), so the run trains only epochs tuner/initial_epoch..tuner/epochs.
        _copy_model_dir(os.path.join(_trial_dir(options, continues), "model"), model_dir)
    config = dataclasses.replace(
        apply_values(trial_base, values),
        model_dir=model_dir,
        epochs=int(values.get("tuner/epochs", trial_base.epochs)),
    )
    start = time.time()
    run = train_lib.train_and_evaluate(config)
    auc, log_loss = validation_metrics(run.metrics)
    result = TrialResult(
        trial_id=trial_id,
        hyperparameters={k: v for k, v in values.items() if not k.startswith("tuner/")},
        validation_auc=auc,
        validation_log_loss=log_loss,
        epochs=config.epochs,
        best_epoch=int(run.metrics.get("best_epoch", run.metrics["epochs"])),
        initial_epoch=run.initial_epoch,
        continues=continues,
        seconds=round(time.time() - start, 1),
        model_dir=model_dir,
    )
    write_json_atomic(os.path.join(trial_dir, "result.json"), dataclasses.asdict(result))
    return result


def validation_metrics(metrics: dict[str, Any]) -> tuple[float, float]:
    """(AUC, log loss) on the validation split from a run's metrics; refuses any other split."""
    if "validation_auc" in metrics:
        return float(metrics["validation_auc"]), float(metrics["validation_log_loss"])
    if metrics.get("eval_split") != "validation":
        raise RuntimeError(
            f"a trial was evaluated on {metrics.get('eval_split')!r}, not on the validation "
            "split; tuning must never score on the test files"
        )
    return float(metrics["auc"]), float(metrics["log_loss"])


def _copy_model_dir(src: str, dst: str) -> None:
    """Copies a trial's model dir (less its logs and metrics) to dst, atomically."""
    tmp = f"{dst}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("logs", "metrics.json"))
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)


def _load_results(tune_dir: str) -> dict[str, TrialResult]:
    results = {}
    trials = os.path.join(tune_dir, "trials")
    for trial_id in sorted(os.listdir(trials)) if os.path.isdir(trials) else []:
        path = os.path.join(trials, trial_id, "result.json")
        if os.path.exists(path):
            with open(path) as f:
                result = TrialResult(**json.load(f))
            if math.isfinite(result.validation_auc):
                results[trial_id] = result
    return results


def _search_settings(base: TrainConfig, options: TuneOptions, space: list[Param]) -> dict:
    """What must not change when a search resumes (max_trials may grow)."""
    config = base.to_dict()
    for name in ("model_dir", "export_base", "verbose"):
        config.pop(name)
    settings = {
        "algorithm": options.algorithm,
        "space": {p.name: p.to_json() for p in space},
        "hyperband_factor": options.hyperband_factor,
        "initial_points": options.initial_points,
        "tuner_seed": options.tuner_seed,
        "base_config": config,
    }
    return json.loads(json.dumps(settings))  # tuples as lists, as when read back


def _check_same_search(base: TrainConfig, options: TuneOptions, space: list[Param]) -> None:
    path = os.path.join(options.tune_dir, "search.json")
    settings = _search_settings(base, options, space)
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        changed = _differences(saved, settings)
        started = os.path.exists(os.path.join(options.tune_dir, "oracle", "oracle.json"))
        if changed and started:
            raise ValueError(
                f"tune_dir {options.tune_dir!r} holds a search with other settings "
                f"({'; '.join(changed[:5])}); use another tune_dir, or --overwrite to start over"
            )
        if not changed:
            return
    write_json_atomic(path, settings)  # (again, when no trial has started yet)


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: was {old!r}, now {new!r}"]


def _remove_search(tune_dir: str) -> None:
    """Deletes what a search wrote to tune_dir (nothing else there)."""
    for name in ("oracle", "trials", "synthetic_data"):
        shutil.rmtree(os.path.join(tune_dir, name), ignore_errors=True)
    for name in ("search.json", "best.flags", "results.md", "results.json"):
        path = os.path.join(tune_dir, name)
        if os.path.exists(path):
            os.remove(path)


# ----------------------------------------------------------------------------------------
# Outputs: progress, the results table, best.flags.


def _progress_line(number: int, total: int, r: TrialResult, best: TrialResult | None) -> str:
    values = " ".join(f"{k}={_short(v)}" for k, v in r.hyperparameters.items())
    resumed = f" continuing trial {r.continues} from epoch {r.initial_epoch}" if r.continues else ""
    return (
        f"trial {number}/{total} [{r.trial_id}] {values} epochs={r.epochs}{resumed}: "
        f"validation AUC {r.validation_auc:.4f} (best epoch {r.best_epoch}, {r.seconds:.0f}s); "
        + (f"best so far {best.validation_auc:.4f} (trial {best.trial_id})" if best else "")
    )


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_results(results: list[TrialResult], space: list[Param], title: str) -> str:
    """A Markdown table of the trials (best first) with their settings as columns."""
    names = [p.name for p in space]
    head = ["rank", "trial", "validation AUC", "validation log loss", "best epoch / epochs"]
    lines = [f"# {title}", "", "| " + " | ".join(head + names) + " |"]
    lines.append("|" + "---|" * (len(head) + len(names)))
    for rank, r in enumerate(results, 1):
        cells = [
            str(rank),
            r.trial_id,
            f"{r.validation_auc:.4f}",
            f"{r.validation_log_loss:.4f}",
            f"{r.best_epoch} / {r.epochs}",
        ] + [_short(r.hyperparameters.get(n, "")) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_outputs(
    base: TrainConfig,
    options: TuneOptions,
    space: list[Param],
    results: dict[str, TrialResult],
    new_trials: int,
) -> TuneSummary:
    ranked = sorted(results.values(), key=lambda r: (-r.validation_auc, r.trial_id))
    best = ranked[0]
    paths = {
        n: os.path.join(options.tune_dir, n) for n in ("best.flags", "results.md", "results.json")
    }
    title = (
        f"{options.algorithm} search, model_type {base.model.model_type}: {len(ranked)} trials "
        f"by validation AUC (validation_fraction {base.data.validation_fraction})"
    )
    write_json_atomic(
        paths["results.json"],
        {
            "objective": OBJECTIVE,
            "algorithm": options.algorithm,
            "model_type": base.model.model_type,
            "validation_fraction": base.data.validation_fraction,
            "best": dataclasses.asdict(best),
            "trials": [dataclasses.asdict(r) for r in ranked],
        },
    )
    atomic.write_text(paths["results.md"], format_results(ranked, space, title))
    write_best_flags(paths["best.flags"], best_config(base, best), base, best, len(ranked))
    return TuneSummary(
        ranked, best, new_trials, paths["best.flags"], paths["results.md"], paths["results.json"]
    )


def best_config(base: TrainConfig, best: TrialResult) -> TrainConfig:
    """The base config with the best trial's settings, trained for its best epoch count."""
    return dataclasses.replace(apply_values(base, best.hyperparameters), epochs=best.best_epoch)


def flag_values(config: TrainConfig) -> dict[str, Any]:
    """Every setting of a config by name: the names scripts/train.py's flags use."""
    out: dict[str, Any] = {}
    for part in (config.export, config.data, config.model, config):
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if not dataclasses.is_dataclass(value):
                out[f.name] = value
    return out


def write_best_flags(
    path: str, config: TrainConfig, base: TrainConfig, best: TrialResult, num_trials: int
) -> None:
    """Writes config as an absl flagfile for scripts/train.py, checked by parsing it.

    The file names every setting that differs from the defaults plus every searched one and
    ``--epochs``; it is parsed with the real training flags before it replaces the old one.
    """
    from absl import flags

    from wdl_tf import cli

    train_flags = flags.FlagValues()
    cli.define_train_flags(train_flags)
    defaults, wanted = flag_values(TrainConfig()), flag_values(config)
    lines = [
        f"# Best of {num_trials} trials by validation AUC: trial {best.trial_id}, "
        f"validation AUC {best.validation_auc:.4f} at epoch {best.best_epoch}.",
        f"# Chosen on the validation split (validation_fraction={base.data.validation_fraction})"
        " of the training files only;",
        "# this file trains on all training rows and evaluates on the test files:",
        "#   python scripts/train.py --flagfile=best.flags --model_dir=DIR --export_base=DIR",
    ]
    written = {}
    for name in train_flags:
        if name not in wanted or name in _NOT_IN_FLAGFILE or wanted[name] is None:
            continue
        searched = name in best.hyperparameters or name == "epochs"
        if wanted[name] == defaults.get(name) and not searched:
            continue
        written[name] = _flag_text(wanted[name])
        if isinstance(wanted[name], bool):
            lines.append(f"--{name}" if wanted[name] else f"--no{name}")
        else:
            lines.append(f"--{name}={written[name]}")
    # The epochs were chosen on the validation split; the final run uses every training row
    # (so no split, and no early stopping, which needs one).
    written["validation_fraction"] = _flag_text(0.0)
    lines.append(f"--validation_fraction={written['validation_fraction']}")
    with atomic.atomic_path(path) as tmp:  # replaces path only once it parses back
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        train_flags(["train.py", f"--flagfile={tmp}"])
        parsed = {name: _flag_text(train_flags[name].value) for name in written}
        if parsed != written:
            raise RuntimeError(f"best.flags parsed back as {parsed}, expected {written}")


def _flag_text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(float(value)) if isinstance(value, float) else str(value)
