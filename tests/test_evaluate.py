"""Offline evaluation (wdl_tf.evaluate_lib, scripts/evaluate.py) of a tiny trained model: a
SavedModel and its model dir give the same metrics; defaults; bad flags are named."""

from __future__ import annotations

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, run_script

from wdl_tf import config as config_lib
from wdl_tf import evaluate_lib
from wdl_tf import features as fs

USER = "occupation"  # the census twin has no user id; occupation groups rows into "users"
EVAL_ROWS = 1000  # the test preset's census twin: 2,000 training rows, 1,000 eval rows


@pytest.fixture(scope="module")
def trained(census_export):
    """(model_dir, SavedModel path, eval file, training metrics) of the suite's tiny trained
    census model (conftest's ``census_export``): its model dir and the version it published."""
    model_dir = census_export.config.model_dir
    data = os.path.join(model_dir, "synthetic_data")
    eval_file = os.path.join(data, next(f for f in os.listdir(data) if "test" in f))
    return model_dir, census_export.export_path, eval_file, census_export.metrics


def test_saved_model_and_model_dir_agree(trained):
    model_dir, saved, eval_file, train_metrics = trained
    spec = fs.load(evaluate_lib.saved_model_spec(saved))
    from_saved = evaluate_lib.evaluate_saved_model(
        saved, spec, eval_file, batch_size=128, user_feature=USER, k=5
    )
    from_dir = evaluate_lib.evaluate_model_dir(
        model_dir, eval_file, batch_size=512, user_feature=USER, k=5
    )
    assert from_saved["examples"] == from_dir["examples"] == EVAL_ROWS
    assert from_saved["auc"] == pytest.approx(from_dir["auc"], abs=1e-6)
    assert from_saved["log_loss"] == pytest.approx(from_dir["log_loss"], abs=1e-5)
    # ... and the model dir's own evaluation at the end of training.
    assert from_dir["auc"] == pytest.approx(train_metrics["auc"], abs=1e-6)
    ranking_saved, ranking_dir = from_saved["ranking"], from_dir["ranking"]
    assert set(ranking_dir) == {
        "gauc", "ndcg@5", "hit_rate@5", "map@5", "users", "gauc_users", "ranked_users"
    }  # fmt: skip
    assert ranking_saved == pytest.approx(ranking_dir, abs=1e-6)
    assert 0.5 < ranking_dir["gauc"] <= 1.0 and ranking_dir["users"] > 1
    calibration = from_dir["calibration"]
    assert sum(b["count"] for b in calibration["bins"]) == EVAL_ROWS
    assert 0.0 <= calibration["ece"] < 0.5
    assert from_saved["calibration"]["ece"] == pytest.approx(calibration["ece"], abs=1e-5)
    # Without a user feature: no ranking section.
    assert "ranking" not in evaluate_lib.evaluate_model_dir(model_dir, eval_file)


def test_model_dir_defaults_to_its_own_eval_data(trained):
    model_dir, _, eval_file, train_metrics = trained
    out = evaluate_lib.evaluate(model_dir=model_dir, k=3, user_feature=USER)
    assert out["eval_files"] == [eval_file] and out["split"] is None
    assert out["model_dir"] == model_dir and out["k"] == 3 and "map@3" in out["ranking"]
    assert out["auc"] == pytest.approx(train_metrics["auc"], abs=1e-6)


def test_default_eval_data_of_a_validation_split(tmp_path):
    # With eval files, a run's final metrics are on them (the validation split only
    # selects the epoch); without any, on the validation split, seeded like the run's.
    with_test = config_lib.preset(
        "test", model_dir=str(tmp_path), data=config_lib.DataConfig(
            dataset="census_synthetic", synthetic_rows=200, validation_fraction=0.25
        ),
    )  # fmt: skip
    data = evaluate_lib.default_eval_data(with_test)
    assert data.split is None and "test" in os.path.basename(data.files[0])
    train_file = evaluate_lib.datasets.get_dataset(
        "census_synthetic", str(tmp_path), synthetic_rows=200
    ).train_files[0]
    config = config_lib.preset(
        "test", model_dir=str(tmp_path), seed=3, data=config_lib.DataConfig(
            dataset="files", train_files=train_file, feature_spec="census",
            validation_fraction=0.25,
        ),
    )  # fmt: skip
    data = evaluate_lib.default_eval_data(config)
    assert data.split == "validation" and data.validation_fraction == 0.25
    assert data.split_seed == 3 and data.files == [train_file]
    no_eval = config_lib.preset(
        "test",
        data=config_lib.DataConfig(
            dataset="files", train_files="x.csv", feature_spec="c", validation_fraction=0.0
        ),
    )
    with pytest.raises(ValueError, match="eval_files: the model dir's config names no"):
        evaluate_lib.default_eval_data(no_eval, str(tmp_path))


def test_ragged_multivalent_values_become_separated_strings():
    # TFRecord data parses a multivalent feature as a ragged list; serving_default takes
    # one "a|b" string per row.
    spec = types.SimpleNamespace(
        features=[types.SimpleNamespace(name="tags", separator=";")]
    )  # fmt: skip
    raw = {"tags": tf.ragged.constant([[1, 2], [], [3]], dtype=tf.int64)}
    out = evaluate_lib._serving_inputs(spec, raw)["tags"].numpy()
    assert out.shape == (3, 1)
    assert out[:, 0].tolist() == [b"1;2", b"", b"3"]
    assert evaluate_lib._user_column(raw["tags"]).tolist() == [b"1|2", b"", b"3"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "give exactly one of --model_dir and --saved_model (got neither"),
        ({"model_dir": "M", "saved_model": "S"}, "(got both"),
        ({"model_dir": "/no/such/dir"}, "model_dir: '/no/such/dir' does not exist"),
        ({"saved_model": "/no/model"}, "saved_model: '/no/model' is not a SavedModel"),
        ({"saved_model": "SAVED"}, "eval_files: required with --saved_model"),
        ({"saved_model": "SAVED", "eval_files": "/no/x.csv"}, "data file '/no/x.csv' does not"),
        ({"model_dir": "MODEL", "user_feature": "user_id"}, "user_feature: 'user_id' is not a"),
        ({"model_dir": "MODEL", "k": 0}, "k: must be an integer >= 1, got 0"),
        ({"model_dir": "MODEL", "feature_spec": "/no/s.json"}, "'/no/s.json' does not exist"),
    ],
)
def test_bad_arguments_are_named(trained, kwargs, message):
    model_dir, saved, _, _ = trained
    subst = {"MODEL": model_dir, "SAVED": saved}
    kwargs = {k: subst.get(v, v) for k, v in kwargs.items()}
    with pytest.raises(ValueError) as error:
        evaluate_lib.evaluate(**kwargs)
    assert message in str(error.value)


def test_write_json_atomic_leaves_no_temp_file(tmp_path):
    path = tmp_path / "sub" / "m.json"
    evaluate_lib.write_json_atomic(str(path), {"auc": np.float32(0.5), "n": np.int64(3)})
    assert json.loads(path.read_text()) == {"auc": 0.5, "n": 3}
    assert os.listdir(path.parent) == ["m.json"]


# ----------------------------------------------------------------------------------------
# The script, as a user runs it.


def _run(*flags, cwd=ROOT):
    return run_script("evaluate", *flags, cwd=cwd)


@pytest.mark.slow
def test_script_writes_the_metrics_json(trained, tmp_path):
    _, saved, eval_file, train_metrics = trained
    output = tmp_path / "out" / "metrics.json"
    proc = _run(
        f"--saved_model={saved}",
        f"--eval_files={eval_file}",
        f"--user_feature={USER}",
        "--k=4",
        "--batch_size=100",
        f"--output={output}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads(output.read_text())
    assert json.loads(proc.stdout) == written
    assert written["saved_model"] == saved and written["examples"] == EVAL_ROWS
    assert {"ndcg@4", "hit_rate@4", "map@4", "gauc"} <= set(written["ranking"])
    assert "ece" in written["calibration"]
    assert written["auc"] == pytest.approx(train_metrics["auc"], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "give exactly one of --model_dir and --saved_model (got neither"),
        (["--model_dir=/no/such/dir"], "model_dir: '/no/such/dir' does not exist"),
    ],
)
def test_script_bad_flags_exit_2_with_a_message(flags, message, tmp_path):
    proc = _run(*flags, f"--output={tmp_path}/m.json", cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr
    assert not os.path.exists(tmp_path / "m.json")
