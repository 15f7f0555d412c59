"""scripts/tune.py and tune_lib: real KerasTuner oracles over real training runs, tiny data."""

import dataclasses
import json
import os

import pytest
from absl import flags
from helpers import run_script

from wdl_tf import cli, tune_lib
from wdl_tf.config import DataConfig, ModelConfig, preset

ROWS = 600
SPACE = {
    "linear_learning_rate": {"min": 0.01, "max": 1.0, "log": True},
    "hidden_units": {"values": ["4", "2"]},
}


def _base(**data):
    return preset(
        "test",
        epochs=2,
        export_base="",
        data=DataConfig(
            dataset="census_synthetic",
            synthetic_rows=ROWS,
            batch_size=128,
            validation_fraction=data.pop("validation_fraction", 0.25),
        ),
        model=ModelConfig(hidden_units=(4,), model_type=data.pop("model_type", "wide_deep")),
    )


def _space_file(tmp_path, space):
    path = tmp_path / "space.json"
    path.write_text(space if isinstance(space, str) else json.dumps(space))
    return str(path)


@pytest.mark.parametrize(
    "space, message",
    [
        ({"learning_rate": {"min": 0.1, "max": 1}}, "unknown setting 'learning_rate'"),
        ({"dropout": {"min": 0.4, "max": 0.1}}, "dropout: min 0.4 > max 0.1"),
        ({"linear_l1": {"min": 0, "max": 1, "log": True}}, "needs min > 0, got min 0.0"),
        ({}, "empty"),
        ({"batch_size": {"values": []}}, "'values' must be a non-empty list, got []"),
        ({"dropout": {"min": 0.0, "max": 1.0}}, "dropout: value 1.0 is invalid"),
        ({"hidden_units": {"values": ["64,x"]}}, "expected layer sizes like"),
        ({"embedding_dim": {"values": [16.5]}}, "expected int values, got 16.5"),
        ({"batch_size": {"values": [0, 64]}}, "batch_size: value 0 is invalid"),
        ({"dropout": {"min": 0.0}}, "needs 'values' or both 'min' and 'max'"),
        ({"dropout": {"min": 0.0, "max": 0.5, "step": 0.1}}, "unknown keys ['step']"),
        ("{not json", "not JSON"),
    ],
)
def test_bad_search_space_fails_before_training(tmp_path, space, message):
    options = tune_lib.TuneOptions(
        str(tmp_path / "tune"), search_space=_space_file(tmp_path, space)
    )
    with pytest.raises(ValueError) as e:
        tune_lib.tune(_base(), options)
    assert message in str(e.value)
    assert not os.path.exists(tmp_path / "tune" / "trials")


@pytest.mark.parametrize(
    "base, options, message",
    [
        (
            {"validation_fraction": 0.0},
            {},
            "validation_fraction: tuning needs a validation split",
        ),
        ({}, {"tune_params": ("dropout", "momentum")}, "tune_params: ['momentum'] not in"),
        (
            {"model_type": "wide"},
            {"tune_params": ("dropout",)},
            "default search space: empty for model_type 'wide' (it has no part for ['dropout'])",
        ),
        ({}, {"max_trials": 0}, "max_trials: must be >= 1, got 0"),
        ({}, {"algorithm": "random"}, "algorithm: unknown value 'random'"),
    ],
)
def test_bad_options_fail_before_training(tmp_path, base, options, message):
    opts = tune_lib.TuneOptions(str(tmp_path / "tune"), **options)
    with pytest.raises(ValueError) as e:
        tune_lib.tune(_base(**base), opts)
    assert message in str(e.value)
    assert not os.path.exists(tmp_path / "tune" / "trials")


def test_missing_training_files_fail_before_the_search_starts(tmp_path):
    base = _base()
    base = dataclasses.replace(
        base,
        data=dataclasses.replace(
            base.data, dataset="files", feature_spec="census", train_files="/no/such.csv"
        ),
    )
    with pytest.raises(ValueError, match="data file '/no/such.csv' does not exist"):
        tune_lib.tune(base, tune_lib.TuneOptions(str(tmp_path / "tune")))
    assert not os.path.exists(tmp_path / "tune" / "search.json")


def test_settings_of_a_part_the_model_lacks_are_left_out():
    """One space serves every model type: what a model lacks is not searched (nor refused)."""
    options = tune_lib.TuneOptions("unused")
    wide, wide_out = tune_lib.load_space(options, "wide")
    deep, deep_out = tune_lib.load_space(options, "deep")
    joint, joint_out = tune_lib.load_space(options, "wide_deep")
    wide, deep, joint = ({p.name for p in s} for s in (wide, deep, joint))
    assert wide == {"linear_learning_rate", "linear_l1", "linear_l2", "batch_size"}
    assert deep == {"dnn_learning_rate", "hidden_units", "embedding_dim", "dropout", "batch_size"}
    assert joint == wide | deep and joint_out == []
    assert set(wide_out) == deep - wide and set(deep_out) == wide - deep


def test_a_space_of_only_settings_the_model_lacks_is_refused(tmp_path):
    options = tune_lib.TuneOptions(
        str(tmp_path / "tune"),
        search_space=_space_file(tmp_path, {"hidden_units": SPACE["hidden_units"]}),
    )
    with pytest.raises(ValueError, match=r"empty for model_type 'wide' \(it has no part for"):
        tune_lib.tune(_base(model_type="wide"), options)
    assert not os.path.exists(tmp_path / "tune" / "trials")


def test_best_flags_from_numpy_values_parse_as_train_flags(tmp_path):
    """KerasTuner's Bayesian oracle proposes np.float64 / np.int64 values."""
    import numpy as np

    values = {"dropout": np.float64(0.28810321684616), "batch_size": np.int64(512)}
    best = tune_lib.TrialResult("3", values, 0.7, 0.5, 4, 3, 0, None, 1.0, "unused")
    path = str(tmp_path / "best.flags")
    tune_lib.write_best_flags(path, tune_lib.best_config(_base(), best), _base(), best, 5)
    train_flags = flags.FlagValues()
    cli.define_train_flags(train_flags)
    train_flags(["train.py", f"--flagfile={path}"])
    assert (train_flags.dropout, train_flags.batch_size) == (0.28810321684616, 512)
    assert train_flags.epochs == 3 and train_flags.hidden_units == ["4"]


def _json(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.slow
def test_hyperband_resumes_and_continues_the_best_checkpoint(tmp_path):
    """Hyperband with max_epochs 2, factor 2 (KerasTuner's bracket arithmetic): two 1-epoch
    trials, then the better one continued to epoch 2. Run as 2 trials, then resumed with
    max_trials=3: only the continuation runs."""
    tune_dir = str(tmp_path / "tune")
    options = tune_lib.TuneOptions(
        tune_dir,
        algorithm="hyperband",
        max_trials=2,
        hyperband_factor=2,
        search_space=_space_file(tmp_path, SPACE),
    )
    lines = []
    first = tune_lib.tune(_base(), options, report=lines.append)
    assert first.new_trials == 2 and len(first.results) == 2
    trial_lines = [line.split(" [")[0] for line in lines if line.startswith("trial ")]
    assert trial_lines == ["trial 1/2", "trial 2/2"]
    assert all(r.epochs == 1 and r.initial_epoch == 0 for r in first.results)
    before = {
        r.trial_id: _json(os.path.join(tune_dir, "trials", r.trial_id, "result.json"))
        for r in first.results
    }

    lines = []
    second = tune_lib.tune(_base(), dataclasses.replace(options, max_trials=3), lines.append)
    assert second.new_trials == 1, lines
    assert lines[0].startswith(f"resuming the search in {tune_dir}: 2 trials so far")
    assert [line for line in lines if line.startswith("trial ")][0].startswith("trial 3/3 ")
    for trial_id, result in before.items():  # the earlier trials were not run again
        assert _json(os.path.join(tune_dir, "trials", trial_id, "result.json")) == result
    new = next(r for r in second.results if r.trial_id not in before)
    better = max(first.results, key=lambda r: r.validation_auc)
    assert new.continues == better.trial_id and new.hyperparameters == better.hyperparameters
    assert (new.initial_epoch, new.epochs) == (1, 2)
    ckpts = os.listdir(os.path.join(new.model_dir, "checkpoints"))
    assert "ckpt-1.index" in ckpts and "ckpt-2.index" in ckpts  # continued, not restarted

    # KerasTuner's own record agrees: every trial completed with our AUC as its score.
    for r in second.results:
        trial = _json(os.path.join(tune_dir, "oracle", f"trial_{r.trial_id}", "trial.json"))
        assert trial["status"] == "COMPLETED" and trial["score"] == r.validation_auc

    # Validation rows only, the same ones for every trial; the test file is never named.
    seen = set()
    for r in second.results:
        metrics = _json(os.path.join(r.model_dir, "metrics.json"))
        config = _json(os.path.join(r.model_dir, "config.json"))
        assert metrics["eval_split"] == "validation" and config["data"]["eval_files"] == ""
        assert (
            os.path.basename(config["data"]["train_files"])
            == f"census_synthetic_train_{ROWS}_0.csv"
        )
        seen.add((metrics["examples"], metrics["label_rate"]))
    assert len(seen) == 1 and 0.15 * ROWS < seen.pop()[0] < 0.35 * ROWS

    # Results sorted by validation AUC, in JSON and Markdown.
    table = _json(second.results_json)
    aucs = [t["validation_auc"] for t in table["trials"]]
    assert aucs == sorted(aucs, reverse=True) and len(aucs) == 3
    assert table["best"]["trial_id"] == table["trials"][0]["trial_id"]
    rows = [
        line for line in open(second.results_md) if line.startswith("| ") and "rank" not in line
    ]
    assert [row.split(" | ")[1] for row in rows] == [t["trial_id"] for t in table["trials"]]

    # best.flags parses with the real training flags and holds the best trial's settings.
    train_flags = flags.FlagValues()
    cli.define_train_flags(train_flags)
    train_flags(["train.py", f"--flagfile={second.best_flags}"])
    best = second.best
    assert train_flags.linear_learning_rate == best.hyperparameters["linear_learning_rate"]
    assert train_flags.hidden_units == best.hyperparameters["hidden_units"].split(",")
    assert train_flags.epochs == best.best_epoch
    assert (train_flags.dataset, train_flags.synthetic_rows) == ("census_synthetic", ROWS)
    assert train_flags.validation_fraction == 0.0  # the final run trains on all rows
    assert not train_flags["model_dir"].present

    # Resuming with other settings is refused, naming what changed.
    with pytest.raises(ValueError, match="algorithm: was 'hyperband', now 'bayesian'"):
        tune_lib.tune(_base(), dataclasses.replace(options, algorithm="bayesian"))


@pytest.mark.slow
def test_tune_script_then_train_with_best_flags(tmp_path):
    tune_dir = tmp_path / "tune"
    tune = run_script(
        "tune",
        "--dataset=census_synthetic",
        f"--synthetic_rows={ROWS}",
        "--epochs=1",
        "--batch_size=128",
        "--algorithm=bayesian",
        "--max_trials=2",
        "--initial_points=1",  # the second trial comes from the Gaussian process
        "--tune_params=linear_learning_rate,dnn_learning_rate",
        "--hidden_units=4",
        f"--tune_dir={tune_dir}",
    )
    assert tune.returncode == 0, tune.stderr[-3000:]
    assert "trial 1/2 [0] linear_learning_rate=" in tune.stdout
    assert "trial 2/2 [1] linear_learning_rate=" in tune.stdout
    assert "| rank | trial | validation AUC |" in tune.stdout
    best = _json(tune_dir / "results.json")["best"]

    train = run_script(
        "train",
        f"--flagfile={tune_dir / 'best.flags'}",
        f"--model_dir={tmp_path / 'final'}",
        "--export_base=",
        "--verbose=0",
    )
    assert train.returncode == 0, train.stderr[-3000:]
    config = _json(tmp_path / "final" / "config.json")
    assert (
        config["model"]["linear_learning_rate"] == best["hyperparameters"]["linear_learning_rate"]
    )
    assert config["model"]["dnn_learning_rate"] == best["hyperparameters"]["dnn_learning_rate"]
    assert config["model"]["hidden_units"] == [4] and config["epochs"] == best["best_epoch"]
    assert _json(tmp_path / "final" / "metrics.json")["eval_split"] == "eval_files"
