"""--negative_sampling_rate: the probabilities of evaluation and export are corrected to the
unsampled rate, p / (p + (1 - p) / rate), training sees the plain ones; a model trained on
down-sampled negatives is calibrated on the full data again."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from wdl_tf import config as config_lib
from wdl_tf import datasets, evaluate_lib, explain, input_pipeline, report, train_lib
from wdl_tf import features as fs
from wdl_tf import metrics as metrics_lib
from wdl_tf import model as model_lib
from wdl_tf import preprocessing as pp

RATE = 0.25


@pytest.fixture(scope="module")
def census_batch(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("negsample")
    ds = datasets.get_dataset("census_synthetic", str(tmp), synthetic_rows=2000)
    spec = fs.preset("census")
    raw = input_pipeline.read_raw(spec, ds.train_files, input_pipeline.ReadOptions(500))
    state = pp.adapt(spec, (x for x, _ in raw))
    batch, labels = next(
        iter(input_pipeline.read_raw(spec, ds.eval_files, input_pipeline.ReadOptions(64)))
    )
    return tmp, ds, spec, state, batch


def _model(spec, state, rate: float, weights=None):
    preprocessor = pp.FeaturePreprocessor(spec, state, name="preprocessor")
    config = model_lib.ModelConfig(hidden_units=(8,), negative_sampling_rate=rate)
    model = model_lib.build_model(preprocessor.encoded_features, config)
    if weights is not None:
        model.set_weights(weights)
    return preprocessor, model


def test_exported_probability_is_the_corrected_formula(census_batch):
    _, _, spec, state, batch = census_batch
    preprocessor, plain = _model(spec, state, 1.0)
    rng = np.random.default_rng(0)
    plain.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in plain.get_weights()])
    _, corrected = _model(spec, state, RATE, plain.get_weights())
    x = preprocessor(batch)
    p = plain(x, training=False).numpy().astype(np.float64)
    assert 0.05 < p.mean() < 0.95
    np.testing.assert_allclose(
        corrected(x, training=False).numpy(), p / (p + (1 - p) / RATE), atol=1e-6
    )
    # Training fits the sampled data: no correction there.
    np.testing.assert_allclose(corrected(x, training=True).numpy(), p, atol=1e-6)
    # explain folds ln(rate) into the bias, so its identities still hold.
    out = {k: v.numpy() for k, v in explain.explain_outputs(preprocessor, corrected, batch).items()}
    errors = explain.identity_errors(out, corrected(x, training=False).numpy())
    assert max(errors.values()) < 1e-5, errors
    plain_bias = plain.get_layer("wide").bias.numpy()[0]
    assert out["bias"][0] == pytest.approx(plain_bias + np.log(RATE), abs=1e-6)


@pytest.mark.parametrize("rate", [0.0, -0.5, 1.5])
def test_rate_outside_zero_one_is_named(rate):
    with pytest.raises(
        ValueError, match=rf"negative_sampling_rate: must be in \(0, 1\], got {rate}"
    ):
        model_lib.ModelConfig(negative_sampling_rate=rate).validate()


def test_flag_reaches_the_config():
    from absl import flags

    from wdl_tf import cli

    fv = flags.FlagValues()
    cli.define_train_flags(fv)
    fv(["train", "--negative_sampling_rate=0.1"])
    config = cli.config_from_flags(fv)
    assert config.model.negative_sampling_rate == 0.1
    restored = config_lib.TrainConfig.from_dict(json.loads(config.to_json()))
    assert restored.model.negative_sampling_rate == 0.1


def _downsample(src: str, dst: str, spec: fs.FeatureSpec, rate: float, seed: int = 0) -> None:
    """Keeps every positive row and each negative with probability ``rate``."""
    rng = np.random.default_rng(seed)
    label = spec.csv.columns.index(spec.label.name)
    with open(src) as f, open(dst, "w") as out:
        for line in f:
            fields = [x.strip() for x in line.split(spec.csv.delimiter)]
            if fields[label] in spec.label.positive_values or rng.random() < rate:
                out.write(line)


def test_training_on_downsampled_negatives_is_calibrated_again(census_batch):
    tmp, ds, spec, _, _ = census_batch
    train = str(tmp / "train_downsampled.csv")
    _downsample(ds.train_files[0], train, spec, RATE)
    config = config_lib.preset(
        "test",
        data=config_lib.DataConfig(
            dataset="files", feature_spec="census", train_files=train,
            eval_files=ds.eval_files[0], batch_size=64,
        ),
        model=config_lib.ModelConfig(hidden_units=(16,), negative_sampling_rate=RATE),
        model_dir=str(tmp / "model"), export_base="", epochs=3,
    )  # fmt: skip
    metrics = train_lib.train_and_evaluate(config).metrics
    saved = json.load(open(os.path.join(config.model_dir, "config.json")))
    assert saved["model"]["negative_sampling_rate"] == RATE
    # metrics.json and evaluate_lib score the corrected probabilities on the unsampled data.
    again = evaluate_lib.evaluate_model_dir(config.model_dir)
    assert again["mean_prediction"] == pytest.approx(metrics["mean_prediction"], abs=1e-6)
    # The same model without the correction (the logit less ln(rate)) on the same rows.
    _, spec, preprocessor, model = evaluate_lib.load_model_dir(config.model_dir)
    raw, y = next(
        iter(input_pipeline.read_raw(spec, ds.eval_files, input_pipeline.ReadOptions(10**6)))
    )
    logit = explain.part_logits(preprocessor, model, raw)["joint"].numpy() - np.log(RATE)
    p_uncorrected = 1 / (1 + np.exp(-logit))
    uncorrected = float(np.mean(p_uncorrected))
    label_rate = float(np.mean(y))
    assert label_rate == pytest.approx(metrics["label_rate"])
    assert abs(metrics["mean_prediction"] - label_rate) < 0.06, metrics
    assert abs(uncorrected - label_rate) > 0.15, (uncorrected, label_rate)
    before = metrics_lib.calibration(y.numpy(), p_uncorrected)["ece"]
    assert again["calibration"]["ece"] < before / 2, (again["calibration"]["ece"], before)
    # The report's calibration section shows the run before and after the correction.
    document = report.build_report([config.model_dir], importance_repeats=0)
    assert "before that correction is drawn for comparison" in document
    assert "<td>0.25</td>" in document  # the rate, in the metrics table
