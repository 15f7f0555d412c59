"""wdl_tf.benchmarks.quality: the ordering check on hand-made numbers, and its configs."""

import os

import pytest

from wdl_tf import config as config_lib
from wdl_tf.benchmarks import quality as bq


def _run(dataset, wide, deep, joint):
    metrics = {k: {"auc": v, "accuracy": 0.8} for k, v in
               (("wide", wide), ("deep", deep), ("wide_deep", joint))}  # fmt: skip
    return dict(dataset=dataset, seed=0, seconds=90.0, metrics=metrics)


def test_joint_at_least_the_better_part_everywhere():
    table, ok = bq.summarize([_run("a", 0.70, 0.75, 0.75), _run("b", 0.91, 0.90, 0.92)])
    assert ok  # a tie with the better part counts as holding (≥)
    assert "| a | 0 | 0.7000 | 0.7500 | 0.7500 | +0.0000 |" in table
    assert "| b | 0 | 0.9100 | 0.9000 | 0.9200 | +0.0100 |" in table
    table, ok = bq.summarize([_run("a", 0.70, 0.75, 0.76), _run("c", 0.70, 0.77, 0.76)])
    assert not ok
    assert "| c | 0 | 0.7000 | 0.7700 | 0.7600 | -0.0100 ✗ |" in table


def test_configs_are_train_py_defaults_and_unknown_datasets_are_named():
    config = bq.config_for("drifting_synthetic", 1, "/tmp/q", quick=False)
    defaults = config_lib.preset(config_lib.dataset_preset("drifting_synthetic"))
    assert (config.seed, config.data.dataset) == (1, "drifting_synthetic")
    assert config.model == defaults.model and config.epochs == defaults.epochs
    assert config.data.validation_fraction == defaults.data.validation_fraction > 0
    assert config.model_dir == "/tmp/q/drifting_synthetic_seed1"
    with pytest.raises(ValueError, match="datasets: unknown value 'imdb'; allowed values"):
        bq.config_for("imdb", 0, "/tmp/q", quick=False)


@pytest.mark.slow
def test_tuned_comparison_gives_each_type_the_same_budget(tmp_path):
    config = bq.config_for("census", 0, str(tmp_path), quick=True)
    results = bq.compare_tuned(config, trials=1, epochs=1)
    assert set(results) == {"wide", "deep", "wide_deep"}
    for model_type, metrics in results.items():
        # One trial each, on the validation split only; the final run is scored on the test
        # files (its own metrics), trained for the kept epoch count.
        trials = os.listdir(tmp_path / "census_seed0" / f"tune_{model_type}" / "trials")
        assert len(trials) == 1, (model_type, trials)
        assert 0.0 <= metrics["auc"] <= 1.0 and 0.0 <= metrics["best_validation_auc"] <= 1.0
        assert metrics["tuned"]["epochs"] == 1
    # A type is tuned only on the settings of the parts it has.
    assert "dnn_learning_rate" not in results["wide"]["tuned"]
    assert "linear_learning_rate" not in results["deep"]["tuned"]
    assert {"dnn_learning_rate", "linear_learning_rate"} <= set(results["wide_deep"]["tuned"])
