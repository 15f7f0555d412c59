"""The ``explain`` signature: exact identities through the SavedModel, contributions that are
the sum of the wide weights of the row's ids (checked by hand from the checkpoint and the
vocabulary), batch safety, warmup, wide-only / multivalent / deep-only models, the script."""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_script

from wdl_tf import explain, export_lib, input_pipeline, samples
from wdl_tf import features as fs
from wdl_tf import model as model_lib
from wdl_tf import preprocessing as pp
from wdl_tf.datasets import apps

ATOL = 1e-5


def _eval_file(model_dir: str) -> str:
    data = os.path.join(model_dir, "synthetic_data")
    return os.path.join(data, next(f for f in os.listdir(data) if "test" in f))


@pytest.fixture(scope="module")
def census(census_export):
    """The suite's tiny Wide & Deep census model (conftest's ``census_export``), exported
    (dry run included) by training: (model dir, export path, spec, 40 eval rows)."""
    model_dir = census_export.config.model_dir
    spec = fs.load(os.path.join(model_dir, "feature_spec.json"))
    sample = samples.read_rows(spec, _eval_file(model_dir), max_rows=40)
    return model_dir, census_export.export_path, spec, sample


@functools.cache
def _load(path: str):
    return tf.saved_model.load(path)


def _call(path: str, signature: str, sample: samples.Sample) -> dict[str, np.ndarray]:
    fn = _load(path).signatures[signature]
    inputs = {k: tf.constant(v) for k, v in sample.serving_inputs().items()}
    return {k: v.numpy() for k, v in fn(**inputs).items()}


def _wide_names(spec: fs.FeatureSpec) -> set[str]:
    """What the spec says the wide part reads: its wide features and every cross."""
    return {f.name for f in spec.features if f.wide} | {c.key for c in spec.crosses}


def test_census_explain_identities_through_the_saved_model(census):
    _, path, spec, sample = census
    out = _call(path, "explain", sample)
    p = _call(path, "serving_default", sample)["probabilities"].reshape(-1)
    assert set(out) == {"logit", "bias", "wide_logit", "deep_logit"} | {
        explain.CONTRIBUTION + n for n in _wide_names(spec)
    }
    for key, value in out.items():
        assert value.shape == (sample.rows,), key  # every output has the batch dimension
    contributions = sum(v.astype(np.float64) for k, v in out.items() if k.startswith("contrib"))
    np.testing.assert_allclose(out["wide_logit"], contributions, atol=ATOL)
    np.testing.assert_allclose(
        out["logit"], out["bias"] + out["wide_logit"] + out["deep_logit"], atol=ATOL
    )
    np.testing.assert_allclose(1 / (1 + np.exp(-out["logit"].astype(np.float64))), p, atol=ATOL)
    assert np.any(out["deep_logit"] != 0) and np.ptp(out["bias"]) == 0


def test_contribution_is_the_rows_weight_read_by_hand(census):
    """education: its vocabulary id (1 + position; id 0 is the OOV bucket, Keras StringLookup's
    layout); age: its bucket among the spec's boundaries; weights read from the checkpoint."""
    model_dir, path, spec, sample = census
    out = _call(path, "explain", sample)
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))

    def table(name):
        return reader.get_tensor(f"model/wide..{name}/.ATTRIBUTES/VARIABLE_VALUE").reshape(-1)

    vocab = json.load(open(os.path.join(model_dir, "preprocessing.json")))["features"]
    education = vocab["education"]["vocabulary"]
    boundaries = spec.feature("age").bucketize.boundaries
    for i in range(sample.rows):
        token = sample.columns["education"][i]
        row_id = education.index(token) + 1 if token in education else 0
        assert out["contribution_education"][i] == pytest.approx(table("education")[row_id])
        bucket = sum(b <= sample.columns["age"][i] for b in boundaries)
        assert out["contribution_age"][i] == pytest.approx(table("age_bucket")[bucket])
    assert out["bias"][0] == pytest.approx(table("bias")[0])


def test_explain_is_batch_safe(census):
    """Rows explained one at a time or in one batch give the same outputs (TF Serving's
    batching concatenates requests and splits every output along dimension 0)."""
    _, path, _, sample = census
    together = _call(path, "explain", sample.take(6))
    for i in range(6):
        one = dataclasses.replace(
            sample, columns={k: v[i : i + 1] for k, v in sample.columns.items()}
        )
        alone = _call(path, "explain", one)
        for key in together:
            assert alone[key].shape == (1,)
            assert alone[key][0] == pytest.approx(together[key][i], abs=1e-6)


def test_export_warms_up_explain_and_carries_the_training_stats(census):
    model_dir, path, _, _ = census
    stats = os.path.join(path, "assets.extra", "training_stats.json")
    assert open(stats).read() == open(os.path.join(model_dir, "training_stats.json")).read()
    from tensorflow_serving.apis import prediction_log_pb2

    names = []
    warmup = os.path.join(path, "assets.extra", export_lib.WARMUP_FILE)
    for record in tf.data.TFRecordDataset(warmup):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        if entry.WhichOneof("log_type") == "predict_log":
            names.append(entry.predict_log.request.model_spec.signature_name)
    assert "explain" in names


def _random_model(spec, state, sample, model_type, tmp, seed=0):
    """A model with random wide weights (zeros would make every contribution 0), exported."""
    preprocessor = pp.FeaturePreprocessor(spec, state, name="preprocessor")
    config = model_lib.ModelConfig(model_type=model_type, hidden_units=(8,))
    model = model_lib.build_model(preprocessor.encoded_features, config)
    model(preprocessor({k: tf.constant(v) for k, v in sample.serving_inputs().items()}))
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(rng.normal(0, 0.3, v.shape).astype(np.float32))
    path = str(tmp / model_type / "1")
    export_lib.write_saved_model(spec, preprocessor, model, path)
    return model, path


@pytest.fixture(scope="module")
def apps_data(tmp_path_factory):
    """The app store's spec (a multivalent feature crossed with the impression app), adapted
    on 2000 generated rows, and 30 eval rows."""
    tmp = tmp_path_factory.mktemp("explain_apps")
    train, test = apps.get_files(str(tmp / "data"), 2000)
    spec = fs.preset("apps")
    raw = input_pipeline.read_raw(spec, train, input_pipeline.ReadOptions(batch_size=1000))
    state = pp.adapt(spec, (x for x, _ in raw))
    return tmp, spec, state, samples.read_rows(spec, test, max_rows=30)


def test_multivalent_contribution_is_the_sum_over_the_list(apps_data):
    """installed_apps: the SUM of its apps' weights (not the deep part's mean combiner)."""
    tmp, spec, state, sample = apps_data
    model, path = _random_model(spec, state, sample, "wide_deep", tmp)
    out = _call(path, "explain", sample)
    p = _call(path, "serving_default", sample)["probabilities"].reshape(-1)
    errors = explain.identity_errors(out, p)
    assert max(errors.values()) <= ATOL, errors
    weights = model.get_layer("wide").tables["installed_apps"].numpy().reshape(-1)
    vocab = state.features["installed_apps"].vocabulary
    assert sum(len(v) > 1 for v in sample.columns["installed_apps"]) >= 3  # real lists
    for i, apps_list in enumerate(sample.columns["installed_apps"]):
        # Lookup id: 1 + position (0 = OOV); multivalent ids shift by one more (0 = padding).
        ids = [(vocab.index(a) + 1 if a in vocab else 0) + 1 for a in apps_list]
        expected = float(np.sum(weights[ids])) if ids else 0.0
        assert out["contribution_installed_apps"][i] == pytest.approx(expected, abs=1e-5)


def test_wide_model_has_zero_deep_logit(apps_data):
    tmp, spec, state, sample = apps_data
    _, path = _random_model(spec, state, sample, "wide", tmp)
    out = _call(path, "explain", sample)
    p = _call(path, "serving_default", sample)["probabilities"].reshape(-1)
    assert np.all(out["deep_logit"] == 0)
    assert max(explain.identity_errors(out, p).values()) <= ATOL
    assert "contribution_installed_apps_X_impression_app" in out


@pytest.fixture(scope="module")
def deep_export(apps_data):
    tmp, spec, state, sample = apps_data
    return _random_model(spec, state, sample, "deep", tmp)[1]


def test_deep_only_model_has_no_explain_signature(apps_data, deep_export):
    _, _, _, sample = apps_data
    path = deep_export
    assert "explain" not in _load(path).signatures
    with pytest.raises(explain.NoWidePartError, match="deep-only model: it has no wide part"):
        explain.explain_sample(path, sample)


@pytest.mark.slow
def test_script_ranks_contributions_and_names_a_deep_only_model(census, deep_export, tmp_path):
    _, path, spec, _ = census
    rows = tmp_path / "rows.csv"
    # A header naming the columns, the label left out, one field missing (native_country).
    names = list(spec.feature_names)
    values = {
        "age": "52", "workclass": "Private", "education": "Doctorate", "education_num": "16",
        "marital_status": "Married-civ-spouse", "occupation": "Prof-specialty",
        "relationship": "Husband", "race": "White", "gender": "Male", "capital_gain": "15024",
        "capital_loss": "0", "hours_per_week": "60", "native_country": "",
    }  # fmt: skip
    rows.write_text(",".join(names) + "\n" + ",".join(values[n] for n in names) + "\n")
    out_json = tmp_path / "explained.json"
    proc = run_script("explain", f"--saved_model={path}", f"--input={rows}", f"--output={out_json}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "row 0: probability" in proc.stdout
    assert "education_X_occupation" in proc.stdout and "Doctorate × Prof-specialty" in proc.stdout
    assert "native_country" in proc.stdout and "(missing)" in proc.stdout
    explained = json.load(open(out_json))[0]
    magnitudes = [abs(c["contribution"]) for c in explained["contributions"]]
    assert magnitudes == sorted(magnitudes, reverse=True)

    proc = run_script(
        "explain",
        f"--saved_model={deep_export}",
        f"--input={rows}",
        f"--feature_spec={path}/assets.extra/feature_spec.json",
    )
    assert proc.returncode == 2
    assert "deep-only model: it has no wide part" in proc.stderr
