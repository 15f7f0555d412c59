"""Synthetic app-store impressions: file layout, determinism, the planted model, the TFDS
builder, and a small end-to-end Wide & Deep run on the ``apps`` preset with its export."""

from __future__ import annotations

import concurrent.futures
import os
import re
import socket

import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import datasets, train_lib
from wdl_tf import features as fs
from wdl_tf import input_pipeline as ip
from wdl_tf.config import DataConfig, ExportOptions, ModelConfig, TrainConfig
from wdl_tf.datasets import apps, apps_tfds

APP = re.compile(r"a\d+")


def read_rows(path: str) -> list[list[str]]:
    with open(path) as f:
        text = f.read()
    assert text.endswith("\n")
    return [line.split(",") for line in text[:-1].split("\n")]


def installed_lists(rows: list[list[str]]) -> list[list[str]]:
    j = apps.COLUMNS.index("installed_apps")
    return [[a for a in row[j].split("|") if a] for row in rows]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_csv_files_have_the_columns_and_row_counts(tmp_path):
    paths = apps.write_apps(str(tmp_path), 1000, seed=3, num_files=3)
    assert [os.path.basename(p) for p in paths] == [
        f"apps_1000_s3_r0_u{apps.NUM_USERS}_a{apps.NUM_APPS}-{i:05d}-of-00003.csv" for i in range(3)
    ]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in paths)  # no .tmp
    spec = fs.load("apps")
    assert spec.csv.columns == apps.COLUMNS
    counts = []
    lengths = []
    for path in paths:
        rows = read_rows(path)
        counts.append(len(rows))
        for row in rows:
            assert len(row) == len(apps.COLUMNS)
            v = dict(zip(apps.COLUMNS, row))
            assert re.fullmatch(r"u\d+", v["user_id"]) and APP.fullmatch(v["impression_app"])
            assert v["app_category"] in apps.CATEGORIES
            assert v["age_group"] in {a for a, _ in apps.AGE_GROUPS}
            assert 0 <= int(v["hour"]) < 24 and 0 <= int(v["slot"]) < apps.NUM_SLOTS
            assert 1.0 <= float(v["rating"]) <= 5.0 and float(v["price"]) >= 0
            assert v["installed"] in ("0", "1")
        for apps_of_row in installed_lists(rows):
            assert all(APP.fullmatch(a) for a in apps_of_row)
            assert len(set(apps_of_row)) == len(apps_of_row) <= apps.MAX_INSTALLED
            lengths.append(len(apps_of_row))
    assert counts == [334, 333, 333]
    # A variable-length set: empty for some users, up to dozens of apps for others.
    assert min(lengths) == 0 and max(lengths) >= 20 and 5 < np.mean(lengths) < 20


def test_apps_preset():
    spec = fs.load("apps")
    inst = spec.feature("installed_apps")
    assert (inst.kind, inst.separator, inst.combiner) == (fs.MULTIVALENT, "|", "mean")
    assert inst.vocabulary is not None and inst.vocabulary.min_count > 1
    assert spec.feature("impression_app").kind == fs.CATEGORICAL
    (cross,) = spec.crosses
    assert cross.features == ("installed_apps", "impression_app") and cross.hash_buckets >= 10**6
    assert spec.cross_is_multivalent(cross)
    for f in spec.features:
        if f.kind == fs.NUMERIC:
            assert f.normalization == "cdf" and f.deep
            assert f.bucketize is not None or not f.wide  # numerics reach wide only as buckets
        else:
            assert f.embedding_dim == 32 and f.wide and f.deep
    assert spec.label.name == apps.LABEL and "user_id" not in spec.feature_names


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="fmt"):
        apps.write_apps(str(tmp_path), 10, fmt="parquet")
    with pytest.raises(ValueError, match="rows"):
        apps.write_apps(str(tmp_path), 0)
    with pytest.raises(ValueError, match="num_apps"):
        apps.write_apps(str(tmp_path), 10, num_apps=1)


def test_deterministic_by_seed_and_streamed_in_blocks(tmp_path, monkeypatch):
    def text(sub, rows=300, **kw):
        (path,) = apps.write_apps(str(tmp_path / sub), rows, **kw)
        with open(path) as f:
            return f.read()

    assert text("a", seed=1) == text("b", seed=1)
    assert text("a", seed=1) != text("c", seed=2)
    assert text("a", seed=1) != text("d", seed=1, stream=1)
    # Rows are generated block by block: the first rows do not depend on how many follow.
    monkeypatch.setattr(apps, "BLOCK_ROWS", 64)
    long, short = text("e", rows=200), text("f", rows=70)
    assert long.startswith(short) and short.count("\n") == 70


def test_users_are_the_same_in_every_stream():
    world = apps.planted_model(0)
    a = [b for b in apps.blocks(world, 2000, 0, stream=0)][0]
    b = [b for b in apps.blocks(world, 2000, 0, stream=1)][0]
    common = np.intersect1d(a.user, b.user)
    assert len(common) > 0
    for u in common[:20]:
        i, j = np.flatnonzero(a.user == u)[0], np.flatnonzero(b.user == u)[0]
        np.testing.assert_array_equal(a.users.installed[i], b.users.installed[j])
        assert a.users.country[i] == b.users.country[j]


def test_get_files_writes_train_and_eval_once(tmp_path):
    train, eval_ = apps.get_files(str(tmp_path), 400, seed=5)
    assert len(read_rows(train[0])) == 400 and len(read_rows(eval_[0])) == 100
    assert "train" in train[0] and "eval" in eval_[0] and "_s5_" in train[0]
    mtime = os.path.getmtime(train[0])
    assert apps.get_files(str(tmp_path), 400, seed=5) == (train, eval_)  # reused
    assert os.path.getmtime(train[0]) == mtime


def _raw_lists(ds) -> tuple[list[list[bytes]], list[float]]:
    lists, labels = [], []
    for raw, y in ds:
        value = raw["installed_apps"]
        if isinstance(value, tf.RaggedTensor):
            lists += [list(r) for r in value.to_list()]
        else:
            lists += [[a for a in v.split(b"|") if a] for v in value.numpy().reshape(-1)]
        labels += y.numpy().reshape(-1).tolist()
    return lists, labels


def test_multivalent_field_parses_through_read_raw(tmp_path):
    spec = fs.load("apps")
    (csv,) = apps.write_apps(str(tmp_path), 500, seed=2)
    (tfr,) = apps.write_apps(str(tmp_path), 500, seed=2, fmt="tfrecord")
    assert tfr.endswith(".tfrecord")
    expected = [[a.encode() for a in row] for row in installed_lists(read_rows(csv))]
    labels = [float(row[-1]) for row in read_rows(csv)]
    opts = ip.ReadOptions(batch_size=64)
    for path in (csv, tfr):
        lists, parsed_labels = _raw_lists(ip.read_raw(spec, path, opts))
        assert lists == expected, path
        assert parsed_labels == labels, path
    # tf.Examples with lists, as make_example writes them (user_id too, and the label).
    record = next(iter(tf.data.TFRecordDataset(tfr))).numpy()
    first = dict(zip(apps.COLUMNS, read_rows(csv)[0]))
    row = {"user_id": first["user_id"], "installed_apps": installed_lists(read_rows(csv))[0]}
    for f in spec.features:
        if f.kind == fs.NUMERIC:
            row[f.name] = float(first[f.name])
        elif f.dtype == "int":
            row[f.name] = int(first[f.name])
        elif f.kind != fs.MULTIVALENT:
            row[f.name] = first[f.name]
    expected_proto = ip.make_example(spec, row, label=float(first["installed"]))
    expected_proto.features.feature["user_id"].bytes_list.value.append(row["user_id"].encode())
    assert tf.train.Example.FromString(record) == expected_proto
    # The TFRecord rows hold the CSV rows' values, feature by feature.
    (csv_raw, _), (tfr_raw, _) = (next(iter(ip.read_raw(spec, p, opts))) for p in (csv, tfr))
    for f in spec.features:
        if f.kind != fs.MULTIVALENT:
            np.testing.assert_array_equal(csv_raw[f.name].numpy(), tfr_raw[f.name].numpy())
    # The preprocessor sees the lists: ids padded with 0 where the row has fewer apps.
    state = train_lib.pp.adapt(spec, [csv_raw])
    encoded = train_lib.pp.FeaturePreprocessor(spec, state)(csv_raw)
    lengths = [len(x) for x in expected[:64]]
    np.testing.assert_array_equal((encoded["installed_apps"].numpy() != 0).sum(axis=1), lengths)
    assert encoded["installed_apps_X_impression_app"].shape[1] == max(lengths)


def test_planted_pairs_raise_the_install_rate(tmp_path):
    (path,) = apps.write_apps(str(tmp_path), 40_000, seed=0)
    world = apps.planted_model(0)
    pairs = {(apps.app_token(a), apps.app_token(b)) for a, b in world.pairs}
    assert len(pairs) == apps.NUM_PAIRS
    j_imp = apps.COLUMNS.index("impression_app")
    rows = read_rows(path)
    hit = np.array(
        [
            any((a, row[j_imp]) in pairs for a in inst)
            for row, inst in zip(rows, installed_lists(rows))
        ]
    )
    label = np.array([row[-1] == "1" for row in rows])
    assert 0.01 < hit.mean() < 0.2
    rate_hit, rate_other = label[hit].mean(), label[~hit].mean()
    assert rate_hit > 2.5 * rate_other, (rate_hit, rate_other)


def test_user_app_affinity_drives_installs():
    """The generalization signal: a higher user·app factor means more installs."""
    world = apps.planted_model(0)
    block = next(apps.blocks(world, 8192, 0))
    affinity = np.einsum("nd,nd->n", block.users.factor, world.app_factor[block.impression])
    low, high = affinity < np.quantile(affinity, 0.25), affinity > np.quantile(affinity, 0.75)
    assert block.label[high].mean() > 2 * block.label[low].mean()


def test_tfds_builder_builds_a_tiny_config_without_network(tmp_path, no_network):
    data_dir = str(tmp_path / "tfds")
    train = list(apps_tfds.load_apps("train", data_dir, rows=120).as_numpy_iterator())
    test = list(apps_tfds.load_apps("test", data_dir, rows=120).as_numpy_iterator())
    assert len(train) == 120 and len(test) == 30
    builder = apps_tfds.Apps(config=apps_tfds.config_for(120), data_dir=data_dir)
    assert builder.info.splits["train"].num_examples == 120
    assert isinstance(builder.info.features["installed_apps"], apps_tfds.tfds.features.Sequence)
    # The same rows as the CSV of the same seed and stream.
    (path,) = apps.write_apps(str(tmp_path / "csv"), 120, seed=0)
    rows = read_rows(path)
    for row, inst, example in zip(rows, installed_lists(rows), train):
        v = dict(zip(apps.COLUMNS, row))
        assert list(example["installed_apps"]) == [a.encode() for a in inst]
        assert example["impression_app"] == v["impression_app"].encode()
        assert example["price"] == np.float32(v["price"])
        assert example["slot"] == int(v["slot"])
        assert example["installed"] == int(v["installed"])


def test_tiny_training_learns_and_serves_lists(tmp_path):
    train, eval_ = apps.get_files(str(tmp_path / "data"), 12_000, seed=0)
    config = TrainConfig(
        data=DataConfig(
            dataset="files",
            feature_spec="apps",
            train_files=",".join(train),
            eval_files=",".join(eval_),
            batch_size=64,
        ),
        model=ModelConfig(hidden_units=(16, 8)),
        export=ExportOptions(model_name="apps"),
        model_dir=str(tmp_path / "model"),
        export_base=str(tmp_path / "export"),
        epochs=2,
        verbose=0,
    )
    result = train_lib.train_and_evaluate(config)
    assert result.metrics["auc"] > 0.6, result.metrics
    assert result.export_path == str(tmp_path / "export" / "1")

    spec = fs.load("apps")
    loaded = tf.saved_model.load(result.export_path)
    rows = read_rows(eval_[0])
    row = next(r for r, inst in zip(rows, installed_lists(rows)) if len(inst) >= 3)
    v = dict(zip(apps.COLUMNS, row))
    inputs = {}
    for f in spec.features:
        if f.kind == fs.NUMERIC:
            inputs[f.name] = tf.constant([[float(v[f.name])]], tf.float32)
        elif f.dtype == "int":
            inputs[f.name] = tf.constant([[int(v[f.name])]], tf.int64)
        else:
            inputs[f.name] = tf.constant([[v[f.name]]])
    assert "|" in v["installed_apps"]
    p_raw = loaded.signatures["serving_default"](**inputs)["probabilities"].numpy()[0, 0]

    example = {f.name: v[f.name] for f in spec.features}
    example["installed_apps"] = v["installed_apps"].split("|")  # a bytes_list of the apps
    for f in spec.features:
        if f.kind == fs.NUMERIC:
            example[f.name] = float(v[f.name])
        elif f.dtype == "int":
            example[f.name] = int(v[f.name])
    proto = ip.make_example(spec, example)
    assert len(proto.features.feature["installed_apps"].bytes_list.value) >= 3
    scores = loaded.signatures["classification"](inputs=tf.constant([proto.SerializeToString()]))
    p_example = scores["scores"].numpy()[0, 1]
    assert 0.0 < p_raw < 1.0
    assert p_example == pytest.approx(p_raw, abs=1e-5)
    # The list matters: the same row without installed apps scores differently.
    inputs["installed_apps"] = tf.constant([[""]])
    p_empty = loaded.signatures["serving_default"](**inputs)["probabilities"].numpy()[0, 0]
    assert abs(p_empty - p_raw) > 1e-4


def test_apps_synthetic_dataset_is_prepared_by_the_builder(tmp_path, no_network):
    """--dataset=apps_synthetic: the resolver prepares wdl_apps into --tfds_data_dir and the
    pipeline reads its shards: the rows (and labels) of the CSV of the same seed."""
    data_dir = str(tmp_path / "tfds")
    data = DataConfig(dataset="apps_synthetic", synthetic_rows=120, tfds_data_dir=data_dir)
    source = datasets.resolve(data, str(tmp_path / "work"), seed=0)
    builder = apps_tfds.Apps(config=apps_tfds.config_for(120), data_dir=data_dir)
    assert builder.is_prepared()
    train = source.train_files()
    assert [os.path.dirname(p) for p in train] == [os.fspath(builder.data_dir)]
    spec = fs.load(source.feature_spec)
    opts = ip.ReadOptions(batch_size=1000)
    ((raw, labels),) = ip.read_raw(spec, train, opts)
    ((csv_raw, csv_labels),) = ip.read_raw(
        spec, apps.write_apps(str(tmp_path / "csv"), 120, seed=0), opts
    )
    np.testing.assert_array_equal(labels.numpy(), csv_labels.numpy())
    np.testing.assert_array_equal(raw["impression_app"], csv_raw["impression_app"])
    assert len(list(ip.read_raw(spec, source.eval_files(), opts).unbatch())) == 30


def test_concurrent_prepares_share_one_build(tmp_path, no_network):
    """Two preparers at once (threads here; the lock is a file lock, so processes too):
    one builds, the other waits and reuses the build; neither fails on TFDS's final rename."""
    data_dir = str(tmp_path / "tfds")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: apps_tfds.prepared_files(data_dir, 40), range(2)))
    assert results[0] == results[1]
    assert [os.path.basename(p) for p in results[0]["train"]] == [
        "wdl_apps-train.tfrecord-00000-of-00001"
    ]
    parent = os.path.dirname(os.path.dirname(results[0]["train"][0]))
    assert not [n for n in os.listdir(parent) if n.startswith("incomplete")]
