"""Training/serving skew: training statistics checked against the raw file by hand, PSI and
Jensen–Shannon by hand, a shifted sample flagged (ages + 20, a new country) and an unshifted
one passed, request logs in TF Serving's PredictionLog format (our writer and hand-built
protos), and every bad input named."""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_script
from tensorflow_serving.apis import (
    classification_pb2,
    predict_pb2,
    prediction_log_pb2,
)

from tf_serving.request_log import RequestLogConfig, RequestLogWriter
from wdl_tf import datasets, input_pipeline, samples, skew, tfrecord
from wdl_tf import features as fs
from wdl_tf import preprocessing as pp


@pytest.fixture(scope="module")
def census(tmp_path_factory):
    """The census twin's files, its adapted state and training statistics saved in a 'model
    dir' (as training does, with the same hook)."""
    tmp = tmp_path_factory.mktemp("skew")
    ds = datasets.get_dataset("census_synthetic", str(tmp), synthetic_rows=2000)
    spec = fs.preset("census")
    raw = input_pipeline.read_raw(spec, ds.train_files, input_pipeline.ReadOptions(1000))
    state = pp.adapt(spec, (x for x, _ in raw))
    model_dir = tmp / "model"
    model_dir.mkdir()
    spec.save(str(model_dir / "feature_spec.json"))
    path = skew.save_training_stats(str(model_dir), spec, state, list(ds.train_files), 10**6)
    return tmp, ds, spec, state, str(model_dir), json.load(open(path))


def _raw_column(path: str, spec: fs.FeatureSpec, name: str) -> list[str]:
    """A column of the CSV file, read with nothing but str.split."""
    j = spec.csv.columns.index(name)
    with open(path) as f:
        return [line.split(",")[j].strip() for line in f if line.strip()]


def test_training_statistics_match_the_file(census):
    _, ds, spec, state, _, stats = census
    train = ds.train_files[0]
    assert stats["rows"] == 2000
    ages = np.array([float(v) for v in _raw_column(train, spec, "age")])
    age = stats["features"]["age"]
    assert (age["min"], age["max"]) == (ages.min(), ages.max())
    assert sum(age["bin_shares"]) == pytest.approx(1.0)
    # Decile bins: each holds about a tenth of the rows (ties aside).
    assert max(age["bin_shares"]) < 0.2
    assert age["adapted_quantiles"] == state.features["age"].cdf_boundaries
    country = _raw_column(train, spec, "native_country")
    missing = sum(v in ("", "?") for v in country) / len(country)
    st = stats["features"]["native_country"]
    assert st["missing_rate"] == pytest.approx(missing)
    assert st["vocabulary"] == state.features["native_country"].vocabulary
    present = [v for v in country if v not in ("", "?")]
    rare = sum(v not in st["vocabulary"] for v in present) / len(present)  # below min_count
    assert st["oov_rate"] == pytest.approx(rare)
    top = max(set(present), key=present.count)
    assert st["top_tokens"][top] == pytest.approx(present.count(top) / len(present))
    assert stats["features"]["occupation"]["oov_rate"] is None  # hashed: no OOV


def test_tfrecord_rows_equal_the_csv_rows_and_a_truncated_file_is_named(census, tmp_path):
    """The same 2,000 rows (two read batches of 1,024) from the CSV file and from its
    TFRecord conversion; a file cut mid-record is refused with its name."""
    _, ds, spec, *_ = census
    csv = samples.read_rows(spec, ds.train_files)
    (path,) = tfrecord.convert_csv_to_tfrecord(
        spec, ds.train_files, str(tmp_path / "train"), num_shards=1, compress=False
    )
    records = samples.read_rows(spec, path)
    assert records.rows == csv.rows == 2000
    for f in spec.features:
        np.testing.assert_array_equal(records.columns[f.name], csv.columns[f.name], f.name)
    data = open(path, "rb").read()
    cut = tmp_path / "cut.tfrecord"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(samples.SampleError, match=f"{cut} is not a \\(complete\\) TFRecord"):
        samples.read_rows(spec, str(cut))


def test_psi_and_js_by_hand():
    # PSI = 0.4 ln(0.9/0.5) + (-0.4) ln(0.1/0.5)
    assert skew.psi([0.5, 0.5], [0.9, 0.1]) == pytest.approx(
        0.4 * math.log(1.8) + 0.4 * math.log(5)
    )
    assert skew.js_distance([0.3, 0.7], [0.3, 0.7]) == 0.0
    assert skew.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    # m = (0.75, 0.25): KL(p||m) = log2(4/3), KL(q||m) = 0.5 log2(2/3) + 0.5 log2(2)
    jsd = (math.log2(4 / 3) + 0.5 * math.log2(2 / 3) + 0.5) / 2
    assert skew.js_distance([1, 0], [0.5, 0.5]) == pytest.approx(math.sqrt(jsd))
    scipy = pytest.importorskip("scipy.spatial.distance")
    p, q = [0.1, 0.2, 0.7], [0.3, 0.3, 0.4]
    assert skew.js_distance(p, q) == pytest.approx(scipy.jensenshannon(p, q, base=2))


def _shifted(sample: samples.Sample) -> samples.Sample:
    columns = dict(sample.columns)
    columns["age"] = columns["age"] + 20
    country = columns["native_country"].copy()
    country[::4] = "Atlantis"
    columns["native_country"] = country
    return dataclasses.replace(sample, columns=columns)


def test_unshifted_sample_passes_and_shifted_one_is_flagged(census):
    _, ds, spec, _, _, stats = census
    same = samples.read_rows(spec, ds.eval_files)
    report = skew.compare(stats, same)
    assert report["passed"], skew.format_report(report)
    assert max(f["psi"] for f in report["features"].values()) < 0.1

    shifted = skew.compare(stats, _shifted(same))
    assert not shifted["passed"]
    flagged = {n for n, f in shifted["features"].items() if f["flags"]}
    assert flagged == {"age", "native_country"}
    age = " ".join(shifted["features"]["age"]["flags"])
    assert "psi" in age and "outside the training range" in age
    country = " ".join(shifted["features"]["native_country"]["flags"])
    assert "OOV rate" in country and "'Atlantis'" in country
    text = skew.format_report(shifted)
    assert "FLAGGED age" in text and text.endswith("FAILED: skew above thresholds")


def _predict_request(spec: fs.FeatureSpec, inputs: dict, rows: slice, context=()) -> object:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "census"
    request.model_spec.signature_name = "rank" if context else "serving_default"
    for name, value in inputs.items():
        part = value[:1] if name in context else value[rows]
        request.inputs[name].CopyFrom(tf.make_tensor_proto(part))
    return request


def _write(path: str, *protos) -> None:
    with tf.io.TFRecordWriter(path) as w:
        for proto in protos:
            w.write(proto.SerializeToString())


def test_request_log_written_by_the_writer_is_read_back(census, tmp_path):
    _, ds, spec, _, model_dir, stats = census
    sample = samples.read_rows(spec, ds.eval_files, max_rows=200)
    inputs = sample.serving_inputs()
    config = RequestLogConfig(str(tmp_path / "log"), sampling_rate=0.5, max_records_per_file=7,
                              seed=1)  # fmt: skip
    with RequestLogWriter(config) as writer:
        assert writer.log(_predict_request(spec, inputs, slice(0, 4)), None, "predict") in (
            True,
            False,
        )
        for i in range(4, 200, 4):
            writer.log(_predict_request(spec, inputs, slice(i, i + 4)), None, "predict")
        in_progress = [n for n in os.listdir(tmp_path / "log") if n.endswith(".inprogress")]
        assert len(in_progress) <= 1
    names = sorted(os.listdir(tmp_path / "log"))
    assert names and all(n.endswith(".tfrecord") for n in names)  # all finished after close
    assert 15 <= writer.logged <= 35  # 50 requests at 0.5 (binomial: ~5 sd either side)
    assert len(names) == math.ceil(writer.logged / 7)
    first = next(iter(tf.data.TFRecordDataset(str(tmp_path / "log" / names[0]))))
    entry = prediction_log_pb2.PredictionLog.FromString(first.numpy())
    assert entry.log_metadata.model_spec.name == "census"
    assert entry.log_metadata.sampling_config.sampling_rate == 0.5
    read = samples.read_request_log(spec, str(tmp_path / "log" / "*.tfrecord"))
    assert read.rows == 4 * writer.logged
    report = skew.skew_report(model_dir, request_log=str(tmp_path / "log" / "*.tfrecord"))
    assert report["rows"] == read.rows and report["passed"]


def test_logging_is_off_by_default(tmp_path):
    writer = RequestLogWriter(RequestLogConfig(str(tmp_path / "log")))
    assert not writer.log(predict_pb2.PredictRequest(), None, "predict")
    assert not os.path.exists(tmp_path / "log")
    with pytest.raises(ValueError, match=r"kind: unknown value 'explain'; allowed values are"):
        writer.log(predict_pb2.PredictRequest(), None, "explain")
    with pytest.raises(ValueError, match=r"sampling_rate: must be in \[0, 1\], got 2"):
        RequestLogWriter(RequestLogConfig(str(tmp_path), sampling_rate=2))
    on = RequestLogWriter(RequestLogConfig(str(tmp_path / "on"), sampling_rate=1.0))
    with pytest.raises(ValueError, match="needs a tensorflow.serving.ClassificationRequest"):
        on.log(predict_pb2.PredictRequest(), None, "classify")


def test_hand_built_prediction_logs_rank_and_classify_with_context(census, tmp_path):
    """Protos built here with the TF Serving API (not our writer): a rank-style Predict request
    (1 context row broadcast to 3 candidates) and a Classify request with a context."""
    _, ds, spec, _, _, _ = census
    sample = samples.read_rows(spec, ds.eval_files, max_rows=3)
    inputs = sample.serving_inputs()
    rank = _predict_request(spec, inputs, slice(0, 3), context=("age", "gender"))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "census"
    with_context = classify.input.example_list_with_context
    with_context.context.features.feature["age"].float_list.value.append(99.0)
    with_context.context.features.feature["gender"].bytes_list.value.append(b"Female")
    for i in range(2):
        example = with_context.examples.add()
        for f in spec.features:
            if f.name == "gender":
                continue
            value = inputs[f.name][i, 0]
            if f.kind == fs.NUMERIC:
                example.features.feature[f.name].float_list.value.append(float(value))
            else:
                example.features.feature[f.name].bytes_list.value.append(str(value).encode())
    path = str(tmp_path / "hand.tfrecord")
    log = prediction_log_pb2.PredictionLog
    _write(
        path,
        log(predict_log={"request": rank}),
        log(classify_log={"request": classify}),
        log(session_run_log={}),  # no features: skipped and counted
    )
    read = samples.read_request_log(spec, path)
    assert read.rows == 5 and read.skipped == 1
    age = inputs["age"][:, 0]
    np.testing.assert_allclose(read.columns["age"], [age[0]] * 3 + [age[0], age[1]])
    assert list(read.columns["gender"]) == [sample.columns["gender"][0]] * 3 + ["Female"] * 2
    assert list(read.columns["education"][:3]) == list(sample.columns["education"])


def test_bad_inputs_are_named(census, tmp_path):
    _, ds, spec, _, model_dir, stats = census
    # A TFRecord of tf.Examples given as a request log.
    examples = str(tmp_path / "rows.tfrecord")
    _write(examples, input_pipeline.make_example(spec, {"age": 30.0, "gender": "Male"}))
    with pytest.raises(samples.SampleError, match=r"record 0 is not a tensorflow.serving.Predic"
                       r"tionLog .*it is a tf.Example row"):  # fmt: skip
        samples.read_request_log(spec, examples)
    # Rows missing features: a header without native_country; a Predict request without age.
    header = tmp_path / "rows.csv"
    names = [n for n in spec.csv.columns if n != "native_country"]
    header.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")
    with pytest.raises(samples.SampleError, match=r"feature\(s\) \['native_country'\]"):
        samples.read_rows(spec, str(header))
    sample = samples.read_rows(spec, ds.eval_files, max_rows=2)
    inputs = {k: v for k, v in sample.serving_inputs().items() if k != "age"}
    log = str(tmp_path / "noage.tfrecord")
    request = _predict_request(spec, inputs, slice(0, 2))
    _write(log, prediction_log_pb2.PredictionLog(predict_log={"request": request}))
    with pytest.raises(samples.SampleError, match=r"missing feature\(s\) \['age'\]: no row has"):
        samples.read_request_log(spec, log)
    # An empty sample.
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(spec.csv.columns) + "\n")
    with pytest.raises(samples.SampleError, match="has no rows"):
        skew.skew_report(model_dir, rows=str(empty))
    # Statistics of another model; a bad threshold; neither sample given.
    other = dict(stats, features={"age": stats["features"]["age"]})
    with pytest.raises(ValueError, match=r"training statistics have no feature\(s\)"):
        skew.compare(other, sample)
    with pytest.raises(ValueError, match="metric: unknown value 'kl'"):
        skew.compare(stats, sample, skew.SkewThresholds(metric="kl"))
    with pytest.raises(ValueError, match="give exactly one of --request_log and --rows"):
        skew.skew_report(model_dir)
    with pytest.raises(ValueError, match="no training_stats.json at"):
        skew.skew_report(str(tmp_path), rows=str(header))


@pytest.mark.slow
def test_script_exits_one_on_skew_and_zero_without(census, tmp_path):
    _, ds, spec, _, model_dir, _ = census
    shifted = tmp_path / "shifted.csv"
    lines = open(ds.eval_files[0]).read().splitlines()
    age, country = spec.csv.columns.index("age"), spec.csv.columns.index("native_country")
    out = []
    for i, line in enumerate(line for line in lines if not line.startswith("|")):
        fields = line.split(",")
        fields[age] = str(float(fields[age]) + 20)
        if i % 4 == 0:
            fields[country] = "Atlantis"
        out.append(",".join(fields))
    shifted.write_text("\n".join(out) + "\n")
    report = tmp_path / "skew.json"
    proc = run_script(
        "skew_report", f"--training_stats={model_dir}", f"--rows={shifted}", f"--output={report}"
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "FLAGGED native_country: OOV rate" in proc.stdout
    assert json.load(open(report))["passed"] is False
    proc = run_script("skew_report", f"--training_stats={model_dir}", f"--rows={ds.eval_files[0]}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert proc.stdout.rstrip().endswith("PASSED")
