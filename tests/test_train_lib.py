"""End to end on the tiny synthetic census twin: train → export → reload → same predictions;
resume from checkpoints; what a model dir holds; bad input stops before training."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import (
    checkpoints,
    encoded_cache,
    export_lib,
    export_versions,
    input_pipeline,
    run_dir,
    train_lib,
)
from wdl_tf import config as config_lib
from wdl_tf import features as fs


def _config(tmp_path, **overrides):
    paths = {"model_dir": str(tmp_path / "model"), "export_base": str(tmp_path / "export")}
    return config_lib.preset("test", **{**paths, **overrides})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    config = _config(tmp, epochs=3)
    return config, train_lib.train_and_evaluate(config)


def test_model_dir_holds_what_the_run_used(trained):
    config, result = trained
    md = config.model_dir
    for name in ("config.json", "feature_spec.json", "preprocessing.json", "metrics.json"):
        assert os.path.isfile(os.path.join(md, name)), name
    assert os.listdir(os.path.join(md, "vocabularies"))
    assert os.listdir(os.path.join(md, "logs"))
    saved = config_lib.TrainConfig.from_dict(json.load(open(os.path.join(md, "config.json"))))
    assert saved == config
    metrics = json.load(open(os.path.join(md, "metrics.json")))
    assert set(metrics) >= {"auc", "log_loss", "accuracy", "mean_prediction", "label_rate"}
    # The default validation split (10% of the training rows) chose the kept epoch.
    assert {"best_epoch", "validation_auc", "validation_log_loss"} <= set(metrics)
    assert metrics["eval_split"] == "eval_files"
    assert os.path.isfile(os.path.join(md, run_dir.BEST_FILE))
    assert metrics["examples"] == 1000  # the twin's test file has synthetic_rows // 2 rows
    # The encoded cache (on by default) is under the model dir, finished, and reported.
    path, size = result.encoded_cache
    assert os.path.dirname(path) == os.path.join(md, "encoded_cache") and size > 0
    assert encoded_cache.EncodedCache(os.path.dirname(path), os.path.basename(path)).is_complete()


def test_learns_the_planted_signal(trained):
    _, result = trained
    # The planted model's labels are learnable: far above chance after 3 tiny epochs.
    assert result.metrics["auc"] > 0.75
    # Calibration sanity: the mean prediction tracks the label rate.
    assert abs(result.metrics["mean_prediction"] - result.metrics["label_rate"]) < 0.1


def test_export_reloads_with_equal_predictions(trained):
    config, result = trained
    assert result.export_path == os.path.join(config.export_base, "1")
    assert export_versions.versions(config.export_base) == [1]
    assert not [n for n in os.listdir(config.export_base) if n.startswith("temp-")]

    spec = fs.load(os.path.join(config.model_dir, "feature_spec.json"))
    eval_files = [
        f for f in os.listdir(os.path.join(config.model_dir, "synthetic_data")) if "test" in f
    ]
    raw, labels = next(
        iter(
            input_pipeline.read_raw(
                spec,
                os.path.join(config.model_dir, "synthetic_data", eval_files[0]),
                input_pipeline.ReadOptions(batch_size=50),
            )
        )
    )
    # The in-memory model, rebuilt from the model dir's last checkpoint, then the kept
    # (best validation) epoch's weights.
    state = train_lib.pp.PreprocessingState.load(config.model_dir)
    preprocessor, model = train_lib.build_for_training(config, state, spec)
    ckpt = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    checkpoints.make_checkpoint(model, epoch=tf.Variable(0, dtype=tf.int64)).restore(
        ckpt
    ).assert_consumed()
    kept = run_dir.restore_kept_weights(model, config.model_dir)
    assert kept == result.metrics["best_epoch"]
    expected = model(preprocessor(raw)).numpy().reshape(-1)

    loaded = tf.saved_model.load(result.export_path)
    assert set(loaded.signatures) == {*export_lib.SIGNATURES, "explain"}
    inputs = {f.name: raw[f.name] for f in spec.features}
    serve = loaded.signatures["serving_default"](**inputs)["probabilities"].numpy().reshape(-1)
    np.testing.assert_allclose(serve, expected, atol=1e-5)
    pred = loaded.signatures["predict"](**inputs)
    np.testing.assert_array_equal(
        pred["class_ids"].numpy().reshape(-1), (expected > 0.5).astype(np.int64)
    )
    examples = tf.constant(
        list(export_lib.serialized_examples(spec, export_lib.raw_inputs(spec, raw)))
    )
    cls = loaded.signatures["classification"](inputs=examples)
    assert cls["classes"].numpy()[0].tolist() == [b"0", b"1"]
    np.testing.assert_allclose(cls["scores"].numpy()[:, 1], expected, atol=1e-5)
    np.testing.assert_allclose(cls["scores"].numpy().sum(axis=1), 1.0, atol=1e-6)
    reg = loaded.signatures["regression"](inputs=examples)["outputs"].numpy()
    np.testing.assert_allclose(reg, expected, atol=1e-5)


def test_rerun_resumes_from_checkpoint_and_publishes_next_version(trained, tmp_path):
    config, first = trained
    more = dataclasses.replace(config, epochs=4)
    second = train_lib.train_and_evaluate(more)
    assert second.initial_epoch == 3  # resumed after the 3 finished epochs
    assert second.export_path == os.path.join(config.export_base, "2")
    assert export_versions.versions(config.export_base) == [1, 2]


def test_resume_continues_optimizer_state(tmp_path):
    """Two epochs in one run, or one epoch then a resumed second, end in the same place.

    Without weight averaging: a run that ends after one epoch swaps in its averaged weights
    (by design), which a straight two-epoch run does not do at that point.
    """
    data = config_lib.DataConfig(
        dataset="census_synthetic", synthetic_rows=600, batch_size=100, shuffle_buffer=1
    )
    model = config_lib.ModelConfig(hidden_units=(32, 16), ema_momentum=0.0)
    straight = train_lib.train_and_evaluate(
        _config(tmp_path / "a", epochs=2, export_base="", data=data, model=model)
    )
    split_cfg = _config(tmp_path / "b", epochs=1, export_base="", data=data, model=model)
    train_lib.train_and_evaluate(split_cfg)
    resumed = train_lib.train_and_evaluate(dataclasses.replace(split_cfg, epochs=2))
    assert resumed.initial_epoch == 1
    # Same data order (no shuffling) and restored FTRL/AdaGrad slots: same metrics.
    assert resumed.metrics["log_loss"] == pytest.approx(straight.metrics["log_loss"], rel=1e-6)


def test_wrong_spec_for_existing_model_dir(trained, tmp_path):
    config, _ = trained
    other = tmp_path / "spec.json"
    spec = fs.load(os.path.join(config.model_dir, "feature_spec.json"))
    obj = spec.to_dict()
    obj["crosses"] = []
    other.write_text(json.dumps(obj))
    bad = dataclasses.replace(
        config, data=dataclasses.replace(config.data, feature_spec=str(other))
    )
    with pytest.raises(ValueError, match="another feature spec"):
        train_lib.train_and_evaluate(bad)


def test_missing_data_file_fails_before_training(tmp_path):
    config = _config(
        tmp_path,
        data=config_lib.DataConfig(dataset="census", train_files=str(tmp_path / "nope.csv")),
    )
    with pytest.raises(input_pipeline.DataError, match="nope.csv"):
        train_lib.train_and_evaluate(config)
    assert not os.path.exists(os.path.join(config.model_dir, "checkpoints"))


def test_malformed_row_names_file_line_and_field(tmp_path):
    good = (
        "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, "
        "White, Male, 2174, 0, 40, United-States, <=50K\n"
    )
    bad = good.replace("39,", "thirty-nine,")
    path = tmp_path / "train.csv"
    path.write_text(good * 5 + bad + good * 5)
    config = _config(
        tmp_path,
        data=config_lib.DataConfig(
            dataset="files",
            feature_spec="census",
            train_files=str(path),
            eval_files=str(path),
            batch_size=4,
        ),
    )
    with pytest.raises(input_pipeline.DataError) as err:
        train_lib.train_and_evaluate(config)
    message = str(err.value)
    assert f"{path}:6:" in message and "'age'" in message and "thirty-nine" in message

    skipping = dataclasses.replace(
        config,
        model_dir=str(tmp_path / "model2"),
        data=dataclasses.replace(config.data, skip_bad_rows=True),
    )
    result = train_lib.train_and_evaluate(dataclasses.replace(skipping, export_base=""))
    # One bad row, read once by every pass: adapt is one pass, then 2 epochs, then eval.
    assert result.bad_rows >= 1
    assert result.metrics["examples"] == 10


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": 0}, "epochs: must be >= 1, got 0"),
        ({"data": config_lib.DataConfig(dataset="imagenet")}, "dataset: unknown value 'imagenet'"),
        ({"data": config_lib.DataConfig(batch_size=0)}, "batch_size: must be >= 1, got 0"),
        ({"data": config_lib.DataConfig(feature_spec="nope")}, "unknown feature spec preset"),
    ],
)
def test_bad_config_fails_before_training(tmp_path, overrides, message):
    config = _config(tmp_path, **overrides)
    with pytest.raises(ValueError, match=message):
        train_lib.train_and_evaluate(config)
