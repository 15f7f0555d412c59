"""Export for serving: rank, int literals in tf.Examples, warmup, the dry run before publish,
the AUC gate, version pruning, and the documented ways to load a SavedModel.

Expectations about TF Serving come from its source (rules in docs/export_contract.md): the
batching session concatenates requests along dim 0 and splits every output by request;
Classify with a context feeds context bytes + example bytes; the method-name check wants
``tensorflow/serving/classify`` and ``.../regress``.
"""

import dataclasses
import os
import shutil
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_script

from wdl_tf import (
    checkpoints,
    export_lib,
    export_versions,
    input_pipeline,
    train_lib,
    verify_export,
)
from wdl_tf import features as fs
from wdl_tf import model as model_lib
from wdl_tf import preprocessing as pp


@pytest.fixture(scope="module")
def exported(census_export):
    """A trained tiny model: (spec, preprocessor, model, raw sample batch, export path)."""
    config, result = census_export.config, census_export
    spec = fs.load(os.path.join(config.model_dir, "feature_spec.json"))
    state = pp.PreprocessingState.load(config.model_dir)
    preprocessor, model = train_lib.build_for_training(config, state, spec)
    ckpt = tf.train.latest_checkpoint(os.path.join(config.model_dir, "checkpoints"))
    checkpoints.make_checkpoint(model, epoch=tf.Variable(0, dtype=tf.int64)).restore(
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
    assert set(out) == {"scores"}
    explicit = {name: tf.broadcast_to(v, [5, 1]) for name, v in request.items()}
    expected = _expected(preprocessor, model, explicit)
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=1e-5)
    # The same request with the context repeated per candidate (what a batching server needs).
    repeated = loaded.signatures["rank"](**explicit)["scores"].numpy()
    np.testing.assert_allclose(repeated, expected, atol=1e-5)


def test_rank_answers_only_per_candidate_outputs(exported):
    """TF Serving's batching splits every output along dim 0 by request (batching_session.cc
    SplitOutputTensors): with 20 candidates, every output must have 20 rows."""
    spec, _, _, raw, path, _ = exported
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["rank"](**{f.name: raw[f.name][:20] for f in spec.features})
    for name, value in out.items():
        assert value.shape[0] == 20, f"rank output {name!r} has shape {value.shape}"


def test_top_k_picks_the_best_candidates_like_tf_math_top_k():
    rng = np.random.default_rng(0)
    scores = rng.choice([0.1, 0.2, 0.3, 0.9], size=50).astype(np.float32)  # many ties
    for k in (1, 3, 10, 50, 80):
        want = tf.math.top_k(scores, k=min(k, len(scores)))
        indices, values = export_lib.top_k(scores, k)
        np.testing.assert_array_equal(indices, want.indices.numpy())
        np.testing.assert_array_equal(values, want.values.numpy())
    with pytest.raises(ValueError, match="k: must be >= 1, got 0"):
        export_lib.top_k(scores, 0)


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


def _warmup_records(path):
    from tensorflow_serving.apis import prediction_log_pb2

    warmup = os.path.join(path, "assets.extra", export_lib.WARMUP_FILE)
    return [
        prediction_log_pb2.PredictionLog.FromString(r.numpy())
        for r in tf.data.TFRecordDataset(warmup)
    ]


def test_warmup_file_holds_every_signature_and_request_kind(exported):
    *_, path, _ = exported
    kinds = []
    for entry in _warmup_records(path):
        kind = entry.WhichOneof("log_type")
        request = getattr(entry, kind).request
        if kind == "multi_inference_log":
            kinds.append((kind, tuple(t.model_spec.signature_name for t in request.tasks)))
        elif kind == "predict_log":
            kinds.append((kind, request.model_spec.signature_name))
        else:
            kinds.append(
                (kind, request.model_spec.signature_name, request.input.WhichOneof("kind"))
            )
    assert kinds == [
        ("predict_log", "serving_default"),
        ("predict_log", "predict"),
        ("predict_log", "rank"),
        ("predict_log", "explain"),  # a model with a wide part
        ("classify_log", "classification", "example_list"),
        ("classify_log", "classification", "example_list_with_context"),
        ("regress_log", "regression", "example_list"),
        ("multi_inference_log", ("classification", "regression")),
    ]
    assert len(kinds) <= export_lib.MAX_WARMUP_RECORDS


def test_every_warmup_request_is_batch_safe_in_a_tf_serving_session(exported):
    """Replayed as TF Serving's warmup does (TF1 loader, Session::Run by tensor name), each
    request's inputs share their 0th dimension (batching_session.cc ComputeInputSize) and
    every output has it too (SplitOutputTensors); else --enable_batching fails the load."""
    *_, path, _ = exported
    session = verify_export.ServingSession(path)
    try:
        for i, entry in enumerate(_warmup_records(path)):
            kind = entry.WhichOneof("log_type")
            request = getattr(entry, kind).request
            if kind == "predict_log":
                sig = session.signatures[request.model_spec.signature_name]
                feeds = {sig.inputs[k].name: tf.make_ndarray(v) for k, v in request.inputs.items()}
                fetches = {k: t.name for k, t in sig.outputs.items()}
            else:
                names = (
                    [t.model_spec.signature_name for t in request.tasks]
                    if kind == "multi_inference_log"
                    else [request.model_spec.signature_name]
                )
                examples = request.input.example_list.examples
                context = b""
                if request.input.WhichOneof("kind") == "example_list_with_context":
                    examples = request.input.example_list_with_context.examples
                    context = request.input.example_list_with_context.context.SerializeToString()
                serialized = np.array([context + e.SerializeToString() for e in examples], object)
                feeds = {session.signatures[n].inputs["inputs"].name: serialized for n in names}
                fetches = {
                    f"{n}/{k}": t.name
                    for n in names
                    for k, t in session.signatures[n].outputs.items()
                }
            rows = {len(v) for v in feeds.values()}
            assert len(rows) == 1, f"record {i} ({kind}): inputs differ in dim 0: {rows}"
            n = rows.pop()
            for key, value in session.run(feeds, fetches).items():
                assert np.ndim(value) >= 1 and len(value) == n, (i, kind, key, value.shape)
    finally:
        session.close()


def test_method_names_are_what_tf_serving_checks(exported):
    """classifier.cc / regressor.cc with --enable_signature_method_name_check."""
    from tensorflow.core.protobuf import saved_model_pb2

    *_, path, _ = exported
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        (meta_graph,) = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs
    methods = {name: sig.method_name for name, sig in meta_graph.signature_def.items()}
    assert methods["classification"] == "tensorflow/serving/classify"
    assert methods["regression"] == "tensorflow/serving/regress"
    for name in ("serving_default", "predict", "rank"):
        assert methods[name] == "tensorflow/serving/predict"
    # The rewritten saved_model.pb still matches its fingerprint.
    from tensorflow.python.saved_model import fingerprinting_utils

    assert fingerprinting_utils.singleprint_from_saved_model_proto(
        path
    ) == fingerprinting_utils.singleprint_from_fingerprint_proto(path)


@pytest.mark.slow
def test_verification_rejects_wrong_predictions_and_publishes_nothing(exported, tmp_path):
    spec, preprocessor, model, raw, path, _ = exported
    inputs = export_lib.raw_inputs(spec, raw)
    examples = export_lib.serialized_examples(spec, inputs)
    good = _expected(preprocessor, model, raw)
    report = export_lib.verify_in_fresh_process(path, inputs, examples, good, 1e-5)
    assert report["ok"] and report["warmup_records"] == 8
    assert set(report["serving_path_max_abs_diff"]) >= set(export_lib.SIGNATURES)
    assert report["max_abs_diff"]["explain probability"] <= 1e-5  # explain checked there too
    with pytest.raises(export_lib.ExportError, match="differs from the in-memory model"):
        export_lib.verify_in_fresh_process(path, inputs, examples, good + 0.01, 1e-5)
    # The suite's in-process verification (tests/conftest.py) runs the same checks.
    assert os.environ[export_lib.VERIFY_IN_PROCESS_ENV] == "1"
    here = export_lib.verify_before_publish(path, inputs, examples, good, 1e-5)
    assert here.keys() == report.keys() and here["warmup_records"] == 8
    assert here["serving_path_max_abs_diff"].keys() == report["serving_path_max_abs_diff"].keys()
    with pytest.raises(export_lib.ExportError, match="differs from the in-memory model"):
        export_lib.verify_before_publish(path, inputs, examples, good + 0.01, 1e-5)


@pytest.mark.slow
def test_a_bfloat16_tower_exports_within_its_own_tolerance(exported, census_export, tmp_path):
    """``hidden_dtype="mixed_bfloat16"``: the same weights in a tower that computes in
    bfloat16 publish a SavedModel whose float32 answers match that model within
    `export_lib.BFLOAT16_ATOL` (the pre-publish check, explain identities included), and
    differ from the float32 model's by bfloat16's rounding, no more."""
    spec, preprocessor, model, raw, _, _ = exported
    config = dataclasses.replace(census_export.config.model, hidden_dtype="mixed_bfloat16")
    half = model_lib.build_model(preprocessor.encoded_features, config)
    half.set_weights(model.get_weights())
    base = str(tmp_path / "export")
    path = export_lib.export_model(spec, preprocessor, half, base, raw)
    assert path == os.path.join(base, "1")
    inputs = export_lib.raw_inputs(spec, raw)
    signature = tf.saved_model.load(path).signatures["serving_default"]
    served = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    served = served["probabilities"].numpy().reshape(-1)
    full = _expected(preprocessor, model, raw)
    np.testing.assert_allclose(served, _expected(preprocessor, half, raw), atol=1e-2)
    np.testing.assert_allclose(served, full, atol=1e-2)
    assert not np.array_equal(served, full)  # the export computes in bfloat16 too


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


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_auc_gate_and_keep_versions(exported, tmp_path):
    spec, preprocessor, model, raw, _, _ = exported
    base = tmp_path / "export"
    # Left by a killed export (its process gone), by a running one, and by another host.
    host = socket.gethostname()
    dead = f"temp-1700000000000-{_dead_pid()}@{host}"
    live = f"temp-1700000000000-{os.getpid()}@{host}"
    elsewhere = f"temp-1700000000000-{_dead_pid()}@not-{host}"
    for name in (dead, live, elsewhere):
        (base / name / "variables").mkdir(parents=True)
    gate = export_lib.ExportOptions(max_auc_drop=0.01, keep_versions=1)
    for auc in (0.81, 0.805):  # the second is worse, but within max_auc_drop
        export_lib.export_model(spec, preprocessor, model, str(base), raw, {"auc": auc}, gate)
    assert export_versions.versions(str(base)) == [2]  # two published, the older pruned
    with pytest.raises(export_lib.ExportError, match="worse than the published version"):
        export_lib.export_model(spec, preprocessor, model, str(base), raw, {"auc": 0.79}, gate)
    assert export_versions.versions(str(base)) == [2]
    # No temp-* of ours left behind; the dead process's removed; the others kept.
    assert sorted(os.listdir(base)) == sorted(["2", live, elsewhere])


def test_remove_stale_temps_only_removes_dead_local_owners(tmp_path):
    host = socket.gethostname()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        names = {
            "dead": f"temp-1-{_dead_pid()}@{host}",
            "live_child": f"temp-2-{sleeper.pid}@{host}",
            "live_self": f"temp-removing-3-{os.getpid()}@{host}",
            "other_host": f"temp-4-{_dead_pid()}@x{host}",
            "foreign": "temp-1700000000",  # e.g. TF's get_temp_export_dir
            "version": "7",
        }
        for name in names.values():
            (tmp_path / name).mkdir()
        assert export_versions.remove_stale_temps(str(tmp_path)) == [names["dead"]]
        assert sorted(os.listdir(tmp_path)) == sorted(v for k, v in names.items() if k != "dead")
    finally:
        sleeper.kill()
        sleeper.wait()


def test_publish_skips_a_version_taken_meanwhile(tmp_path):
    base = tmp_path / "export"
    (base / "1").mkdir(parents=True)
    (base / "not-a-version").mkdir()
    tmp = base / "temp-123"
    tmp.mkdir()
    (tmp / "saved_model.pb").write_text("x")
    assert export_lib.publish(str(tmp), str(base)) == str(base / "2")
    assert export_versions.versions(str(base)) == [1, 2]


def test_tfsmlayer_loads_the_export(exported):
    spec, preprocessor, model, raw, path, _ = exported
    layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
    out = layer({f.name: raw[f.name] for f in spec.features})
    np.testing.assert_allclose(
        np.asarray(out["probabilities"]).reshape(-1),
        _expected(preprocessor, model, raw),
        atol=1e-5,
    )


@pytest.mark.slow
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
    assert "outputs['scores'] tensor_info:" in proc.stdout
    assert "Method name is: tensorflow/serving/classify" in proc.stdout
    assert "Method name is: tensorflow/serving/regress" in proc.stdout


def test_each_serving_function_is_traced_once_and_reloads(exported, tmp_path, monkeypatch):
    # Saving from tf.functions traced every endpoint again (Keras' ExportArchive and
    # tf.saved_model.save each ask a tf.function for its concrete function anew), which was
    # about a fifth of an export; the writer saves the concrete functions it traced.
    spec, preprocessor, model, raw, _, _ = exported
    traces: dict[str, int] = {}
    real = export_lib.serving_functions

    def counting(name, fn):
        def traced(*inputs):
            traces[name] = traces.get(name, 0) + 1
            return fn(*inputs)

        return traced

    def counted(*args):
        return {name: (counting(name, fn), sig) for name, (fn, sig) in real(*args).items()}

    monkeypatch.setattr(export_lib, "serving_functions", counted)
    path = str(tmp_path / "sm")
    export_lib.write_saved_model(spec, preprocessor, model, path)
    assert traces == {name: 1 for name in real(spec, preprocessor, model)}
    # What was saved serves the in-memory model's answers (variables and vocabulary tables
    # restored), on every signature that takes raw features.
    loaded = tf.saved_model.load(path)
    expected = _expected(preprocessor, model, raw)
    inputs = {f.name: raw[f.name] for f in spec.features}
    for name, key in (("serving_default", "probabilities"), ("predict", "probabilities")):
        got = loaded.signatures[name](**inputs)[key].numpy().reshape(-1)
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------------------
# Classify/Regress on TF Serving's inputs: context merge, numeric types, non-finite numbers.

CONTEXT = ("age", "hours_per_week", "native_country", "race")  # the user; the rest: the item


def _census_example(raw, i: int, names) -> "tf.train.Example":
    """Row i's features ``names`` as a tf.Example, hand-built (floats, strings)."""
    example = tf.train.Example()
    for name in names:
        value = raw[name][i, 0].numpy()
        feature = example.features.feature[name]
        if isinstance(value, bytes):
            feature.bytes_list.value.append(value)
        else:
            feature.float_list.value.append(float(value))
    return example


def test_classify_with_context_scores_the_merged_example(exported):
    """TF Serving feeds ExampleListWithContext as serialized context + serialized example
    (util.cc InputToSerializedExampleTensor): numeric and categorical context features must
    count, exactly as in the one merged example."""
    from tensorflow_serving.apis import input_pb2

    spec, preprocessor, model, raw, path, _ = exported
    rest = [f.name for f in spec.features if f.name not in CONTEXT]
    request = input_pb2.Input()
    lists = request.example_list_with_context
    lists.context.CopyFrom(_census_example(raw, 0, CONTEXT))  # one user ...
    for i in range(6):  # ... and six items
        lists.examples.add().CopyFrom(_census_example(raw, i, rest))
    context = lists.context.SerializeToString()
    serialized = [context + e.SerializeToString() for e in lists.examples]
    # The merged examples, hand-built: the user's features with each item's.
    merged = []
    for i in range(6):
        example = tf.train.Example()
        example.MergeFrom(lists.context)
        example.MergeFrom(_census_example(raw, i, rest))
        merged.append(example.SerializeToString())
    user_items = {
        name: (raw[name][:6] if name in rest else tf.repeat(raw[name][:1], 6, axis=0))
        for name in raw
    }
    want = _expected(preprocessor, model, user_items)

    loaded = tf.saved_model.load(path)
    for inputs in (serialized, merged):
        scores = loaded.signatures["classification"](inputs=tf.constant(inputs))["scores"]
        np.testing.assert_allclose(scores[:, 1].numpy(), want, atol=1e-5)
        outputs = loaded.signatures["regression"](inputs=tf.constant(inputs))["outputs"]
        np.testing.assert_allclose(outputs.numpy(), want, atol=1e-5)
    # The same through TF Serving's own loading path (a session, tensors by name).
    session = verify_export.ServingSession(path)
    try:
        sig = session.signatures["classification"]
        got = session.run(
            {sig.inputs["inputs"].name: np.array(serialized, object)},
            {"scores": sig.outputs["scores"].name},
        )
        np.testing.assert_allclose(got["scores"][:, 1], want, atol=1e-5)
    finally:
        session.close()


@pytest.mark.parametrize(
    "set_age, message",
    [
        (lambda f: f.bytes_list.value.append(b"39"), "feature age is numeric: send a float"),
        (lambda f: f.float_list.value.extend([39.0, 40.0]), "feature age is numeric: it takes"),
        (lambda f: f.int64_list.value.extend([39, 40]), "feature age is numeric: it takes"),
    ],
    ids=["string", "two_floats", "two_ints"],
)
def test_numeric_feature_of_the_wrong_type_or_count_is_invalid_argument(exported, set_age, message):
    spec, _, _, raw, path, _ = exported
    example = _census_example(raw, 0, [f.name for f in spec.features])
    example.features.feature["age"].Clear()
    set_age(example.features.feature["age"])
    loaded = tf.saved_model.load(path)
    for signature in ("classification", "regression"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            loaded.signatures[signature](inputs=tf.constant([example.SerializeToString()]))


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_numbers_are_refused_by_every_signature(exported, value):
    """The project's one meaning of NaN/±Inf (docs/export_contract.md): refused, naming the
    feature (TF Serving answers InvalidArgument: REST 400)."""
    spec, _, _, raw, path, _ = exported
    loaded = tf.saved_model.load(path)
    message = "feature hours_per_week must be a finite number"
    rows = {f.name: raw[f.name][:3].numpy() for f in spec.features}
    rows["hours_per_week"][1, 0] = value
    for signature in ("serving_default", "predict", "rank"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            loaded.signatures[signature](**rows)
    example = _census_example(raw, 0, [f.name for f in spec.features])
    example.features.feature["hours_per_week"].float_list.value[0] = value
    for signature in ("classification", "regression"):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            loaded.signatures[signature](inputs=tf.constant([example.SerializeToString()]))


# ----------------------------------------------------------------------------------------
# Verification on TF Serving's path refuses what TF Serving would refuse.


def _copy(path, tmp_path) -> str:
    copy = str(tmp_path / "copy")
    shutil.copytree(path, copy)
    return copy


def _sample(exported):
    spec, preprocessor, model, raw, _, _ = exported
    inputs = export_lib.raw_inputs(spec, raw)
    examples = list(export_lib.serialized_examples(spec, inputs))
    return inputs, examples, _expected(preprocessor, model, raw)


def test_verification_refuses_a_warmup_request_that_batching_would_refuse(exported, tmp_path):
    """A rank request with a 1-row context: batching_session.cc refuses inputs whose 0th
    dimensions differ, and a failed warmup request fails the version's load."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    spec, _, _, raw, path, _ = exported
    copy = _copy(path, tmp_path)
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "rank"
    for f in spec.features:
        rows = 4 if f.name in ("occupation", "workclass") else 1
        request.inputs[f.name].CopyFrom(tf.make_tensor_proto(raw[f.name][:rows].numpy()))
    entry = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request)
    )
    with tf.io.TFRecordWriter(os.path.join(copy, "assets.extra", export_lib.WARMUP_FILE)) as w:
        w.write(entry.SerializeToString())
    with pytest.raises(verify_export.VerificationError, match="differ in their 0th dimension"):
        verify_export.check_serving_path(copy, *_sample(exported), 1e-5)


def test_verification_refuses_an_output_that_cannot_be_split_per_request(tmp_path):
    """batching_session.cc: 'Batched output tensor's 0th dimension does not equal the sum of
    the 0th dimension sizes of the input tensors' (the old rank's top-k outputs)."""

    class TopK(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def rank(self, x):
            return {"scores": x, "top": tf.math.top_k(x, k=2).values}

    module = TopK()
    path = str(tmp_path / "topk")
    tf.saved_model.save(module, path, signatures={"rank": module.rank})
    session = verify_export.ServingSession(path)
    try:
        feeds, fetches = session.predict_task("rank", {"x": np.arange(6, dtype=np.float32)})
        outputs = session.run(feeds, fetches)
        with pytest.raises(verify_export.VerificationError, match="output 'top' has shape"):
            verify_export.check_batch_safe(session, feeds, fetches, outputs, "rank", 1e-6)
        # and the per-row output alone passes
        fetches = {"scores": fetches["scores"]}
        outputs = session.run(feeds, fetches)
        verify_export.check_batch_safe(session, feeds, fetches, outputs, "rank", 1e-6)
    finally:
        session.close()


def test_verification_refuses_predict_method_names_for_classify_and_regress(exported, tmp_path):
    copy = _copy(exported[4], tmp_path)
    export_lib.set_method_names(
        copy, {name: "tensorflow/serving/predict" for name in export_lib.SIGNATURES}
    )
    with pytest.raises(verify_export.VerificationError, match="enable_signature_method_name_check"):
        verify_export.check_serving_path(copy, *_sample(exported), 1e-5)


# ----------------------------------------------------------------------------------------
# export_base: checked before training; failures after training are clean.


def test_check_export_base_refuses_a_file_in_the_way(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for base in (blocker, blocker / "export"):
        with pytest.raises(ValueError, match=f"export_base '{base}': '{blocker}' is not a dir"):
            export_versions.check_export_base(str(base))
    export_versions.check_export_base(str(tmp_path / "new" / "export"))  # creatable: fine
    assert not (tmp_path / "new").exists()  # and nothing created
    (tmp_path / "export").mkdir()
    export_versions.check_export_base(str(tmp_path / "export"))
    assert os.listdir(tmp_path / "export") == []  # the probe is gone


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into read-only directories")
def test_check_export_base_refuses_a_read_only_directory(tmp_path):
    for base in (tmp_path / "ro", tmp_path / "ro" / "export"):
        (tmp_path / "ro").mkdir(exist_ok=True)
        (tmp_path / "ro").chmod(0o555)
        try:
            with pytest.raises(ValueError, match=f"export_base '{base}'"):
                export_versions.check_export_base(str(base))
        finally:
            (tmp_path / "ro").chmod(0o755)


TINY_TRAIN = [
    "--dataset=census_synthetic",
    "--synthetic_rows=400",
    "--hidden_units=8",
    "--epochs=1",
    "--verbose=0",
]


def _train(*flags):
    return run_script("train", *TINY_TRAIN, *flags, timeout=600)


@pytest.mark.slow
def test_train_refuses_an_export_base_under_a_file_before_training(tmp_path):
    (tmp_path / "a_file").write_text("x")
    proc = _train(f"--model_dir={tmp_path}/model", f"--export_base={tmp_path}/a_file/export")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"error: export_base '{tmp_path}/a_file/export'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not os.path.exists(tmp_path / "model" / "checkpoints")  # nothing trained


@pytest.mark.slow
def test_train_reports_a_failed_export_after_the_metrics(tmp_path):
    """A gate that refuses the export: metrics printed (and written), then error, rc 2."""
    published = tmp_path / "export" / "1" / "assets.extra"
    published.mkdir(parents=True)
    (published / "metrics.json").write_text('{"auc": 1.0}')
    proc = _train(
        f"--model_dir={tmp_path}/model", f"--export_base={tmp_path}/export", "--max_auc_drop=0"
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "eval metrics" in proc.stdout
    assert "error: eval AUC" in proc.stderr and "not publishing" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.path.exists(tmp_path / "model" / "metrics.json")
    assert sorted(os.listdir(tmp_path / "export")) == ["1"]
