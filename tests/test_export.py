"""Export for serving: rank, int literals in tf.Examples, warmup, the dry run before publish,
the AUC gate, version pruning, and the documented ways to load a SavedModel."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import config as config_lib
from wdl_tf import export_lib, input_pipeline, train_lib
from wdl_tf import features as fs
from wdl_tf import preprocessing as pp


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A trained tiny model: (spec, preprocessor, model, raw sample batch, export path)."""
    tmp = tmp_path_factory.mktemp("export")
    config = config_lib.preset(
        "test", model_dir=str(tmp / "model"), export_base=str(tmp / "export"), epochs=1
    )
    result = train_lib.train_and_evaluate(config)
    spec = fs.load(os.path.join(config.model_dir, "feature_spec.json"))
    state = pp.PreprocessingState.load(config.model_dir)
    preprocessor, model = train_lib.build_for_training(config, state, spec)
    ckpt = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    train_lib.model_lib.make_checkpoint(model, epoch=tf.Variable(0, dtype=tf.int64)).restore(
        ckpt
    ).assert_consumed()
    data = os.path.join(config.model_dir, "synthetic_data")
    test_file = os.path.join(data, next(f for f in os.listdir(data) if "test" in f))
    raw, _ = next(
        iter(input_pipeline.read_raw(spec, test_file, input_pipeline.ReadOptions(batch_size=20)))
    )
    return spec, preprocessor, model, raw, result.export_path, result.metrics


def _expected(preprocessor, model, raw):
    return model(preprocessor(raw), training=False).numpy().reshape(-1)


def test_rank_broadcasts_the_context_row(exported):
    spec, preprocessor, model, raw, path, _ = exported
    loaded = tf.saved_model.load(path)
    # The "user" part (age, education, ...) from row 0; the 5 candidates differ in occupation
    # and workclass (the "items").
    items = {"occupation", "workclass"}
    request = {
        f.name: (raw[f.name][:5] if f.name in items else raw[f.name][:1]) for f in spec.features
    }
    out = loaded.signatures["rank"](**request)
    explicit = {name: tf.broadcast_to(v, [5, 1]) for name, v in request.items()}
    expected = _expected(preprocessor, model, explicit)
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(out["top_k_indices"].numpy(), np.argsort(-expected)[:5])
    np.testing.assert_allclose(out["top_k_scores"].numpy(), np.sort(expected)[::-1], atol=1e-5)


def test_rank_rejects_a_feature_with_the_wrong_row_count(exported):
    spec, _, _, raw, path, _ = exported
    loaded = tf.saved_model.load(path)
    request = {f.name: raw[f.name][:5] for f in spec.features}
    request["age"] = raw["age"][:3]
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature age must have 1 row"):
        loaded.signatures["rank"](**request)


def test_classify_accepts_integer_literals_for_float_features(exported):
    """TF Serving's JSON → tf.Example turns 39 into an int64_list: it must score as 39.0."""
    spec, preprocessor, model, raw, path, _ = exported
    loaded = tf.saved_model.load(path)
    inputs = export_lib.raw_inputs(spec, raw)
    as_float = export_lib.serialized_examples(spec, inputs)
    as_int = []
    for serialized in as_float:
        example = tf.train.Example.FromString(serialized)
        for f in spec.features:
            if f.kind == fs.NUMERIC:
                value = example.features.feature[f.name].float_list.value[0]
                example.features.feature[f.name].ClearField("float_list")
                example.features.feature[f.name].int64_list.value.append(int(value))
        as_int.append(example.SerializeToString())
    scores = loaded.signatures["classification"](inputs=tf.constant(as_int))["scores"][:, 1]
    np.testing.assert_allclose(scores.numpy(), _expected(preprocessor, model, raw), atol=1e-5)
    # A missing numeric feature takes the spec's default (0.0), like a missing CSV field.
    example = tf.train.Example.FromString(as_float[0])
    del example.features.feature["age"]
    filled = {k: v[:1] for k, v in raw.items()}
    filled["age"] = tf.constant([[0.0]])
    got = loaded.signatures["regression"](inputs=tf.constant([example.SerializeToString()]))
    np.testing.assert_allclose(
        got["outputs"].numpy(), _expected(preprocessor, model, filled), atol=1e-5
    )


def test_warmup_file_holds_predict_rank_classify_and_regress(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    *_, path, _ = exported
    warmup = os.path.join(path, "assets.extra", export_lib.WARMUP_FILE)
    kinds = []
    for record in tf.data.TFRecordDataset(warmup):
        entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        kind = entry.WhichOneof("log_type")
        signature = getattr(entry, kind).request.model_spec.signature_name
        kinds.append((kind, signature))
    assert kinds == [
        ("predict_log", "serving_default"),
        ("predict_log", "rank"),
        ("predict_log", "explain"),  # a model with a wide part
        ("classify_log", "classification"),
        ("regress_log", "regression"),
    ]
    assert len(kinds) <= export_lib.MAX_WARMUP_RECORDS


def test_verification_rejects_wrong_predictions_and_publishes_nothing(exported, tmp_path):
    spec, preprocessor, model, raw, path, _ = exported
    inputs = export_lib.raw_inputs(spec, raw)
    examples = export_lib.serialized_examples(spec, inputs)
    good = _expected(preprocessor, model, raw)
    report = export_lib.verify_in_fresh_process(path, inputs, examples, good, 1e-5)
    assert report["ok"] and report["warmup_records"] == 5
    assert report["max_abs_diff"]["explain probability"] <= 1e-5  # explain checked there too
    with pytest.raises(export_lib.ExportError, match="differs from the in-memory model"):
        export_lib.verify_in_fresh_process(path, inputs, examples, good + 0.01, 1e-5)


def test_nan_model_is_not_published(exported, tmp_path):
    spec, preprocessor, model, raw, _, _ = exported
    table = model.get_layer("wide").tables["education"]
    saved = table.numpy()
    base = str(tmp_path / "export")
    table.assign(tf.fill(table.shape, np.nan))
    try:
        with pytest.raises(export_lib.ExportError, match="NaN"):
            export_lib.export_model(spec, preprocessor, model, base, raw)
    finally:
        table.assign(saved)
    assert not os.path.exists(base) or os.listdir(base) == []  # no version, no temp-*


def test_auc_gate_and_keep_versions(exported, tmp_path):
    spec, preprocessor, model, raw, _, _ = exported
    base = str(tmp_path / "export")
    gate = export_lib.ExportOptions(max_auc_drop=0.01, keep_versions=2)
    for auc in (0.80, 0.81, 0.805):
        export_lib.export_model(spec, preprocessor, model, base, raw, {"auc": auc}, gate)
    assert export_lib.versions(base) == [2, 3]  # three published, the oldest pruned
    with pytest.raises(export_lib.ExportError, match="worse than the published version"):
        export_lib.export_model(spec, preprocessor, model, base, raw, {"auc": 0.79}, gate)
    assert export_lib.versions(base) == [2, 3]
    assert sorted(os.listdir(base)) == ["2", "3"]  # no temp-* left behind


def test_publish_skips_a_version_taken_meanwhile(tmp_path):
    base = tmp_path / "export"
    (base / "1").mkdir(parents=True)
    (base / "not-a-version").mkdir()
    tmp = base / "temp-123"
    tmp.mkdir()
    (tmp / "saved_model.pb").write_text("x")
    assert export_lib.publish(str(tmp), str(base)) == str(base / "2")
    assert export_lib.versions(str(base)) == [1, 2]


def test_tfsmlayer_loads_the_export(exported):
    spec, preprocessor, model, raw, path, _ = exported
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    out = layer({f.name: raw[f.name] for f in spec.features})
    np.testing.assert_allclose(
        np.asarray(out["probabilities"]).reshape(-1),
        _expected(preprocessor, model, raw),
        atol=1e-5,
    )


def test_saved_model_cli_lists_the_signatures(exported):
    *_, path, _ = exported
    cli = shutil.which("saved_model_cli") or os.path.join(
        os.path.dirname(sys.executable), "saved_model_cli"
    )
    proc = subprocess.run(
        [cli, "show", "--dir", path, "--all"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for signature in export_lib.SIGNATURES:
        assert f"signature_def['{signature}']" in proc.stdout
    assert "inputs['inputs'] tensor_info:" in proc.stdout
    assert "outputs['top_k_indices'] tensor_info:" in proc.stdout
