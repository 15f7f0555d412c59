"""CSV → TFRecord conversion: the serialized Examples, shard names, and a round trip that reads
back the same raw values and labels as the CSV."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
from helpers import run_script

from wdl_tf import features as fs
from wdl_tf import input_pipeline as ip
from wdl_tf import tfrecord
from wdl_tf.datasets import CENSUS_TRAIN, criteo


def every_kind_spec() -> fs.FeatureSpec:
    return fs.from_dict(
        {
            "csv": {"columns": ["x", "s", "i", "ms", "mi", "y"]},
            "label": {"name": "y"},
            "features": [
                {"name": "x", "kind": "numeric"},
                {"name": "s", "kind": "categorical"},
                {"name": "i", "kind": "categorical", "dtype": "int"},
                {"name": "ms", "kind": "multivalent"},
                {"name": "mi", "kind": "multivalent", "dtype": "int"},
            ],
        }
    )


def test_serialize_batch_equals_make_example():
    spec = every_kind_spec()
    long = "é" * 100  # 200 bytes: lengths above 127 take 2 varint bytes
    raw = {
        "x": tf.constant([[1.5], [-0.0], [3e38]]),
        "s": tf.constant([["abc"], [""], [long]]),
        "i": tf.constant([[0], [-1], [2**40]], tf.int64),
        "ms": tf.constant([["a|bb"], [""], ["|" + long + "|c"]]),
        "mi": tf.constant([["1|-2"], [""], ["300|0"]]),
    }
    labels = tf.constant([[1.0], [0.0], [1.0]])
    rows = [
        ({"x": 1.5, "s": "abc", "i": 0, "ms": ["a", "bb"], "mi": [1, -2]}, 1.0),
        ({"x": -0.0, "s": "", "i": -1, "ms": [], "mi": []}, 0.0),
        ({"x": 3e38, "s": long, "i": 2**40, "ms": [long, "c"], "mi": [300, 0]}, 1.0),
    ]
    serialized = tfrecord.serialize_batch(spec, raw, labels).numpy()
    assert len(serialized) == 3
    for got, (row, label) in zip(serialized, rows):
        assert tf.train.Example.FromString(got) == ip.make_example(spec, row, label)
    # Ragged lists (as read back from TFRecord) serialize the same as "a|b" strings.
    ragged = dict(raw, ms=tf.ragged.constant([["a", "bb"], [], [long, "c"]]))
    assert tfrecord.serialize_batch(spec, ragged, labels).numpy().tolist() == serialized.tolist()


def collect(ds: tf.data.Dataset) -> tuple[dict[str, np.ndarray], np.ndarray]:
    feats: dict[str, list] = {}
    labels = []
    for raw, y in ds:
        for k, v in raw.items():
            feats.setdefault(k, []).append(v.numpy().reshape(-1))
        labels.append(y.numpy().reshape(-1))
    return {k: np.concatenate(v) for k, v in feats.items()}, np.concatenate(labels)


def assert_same_rows(spec, csv_files, tfrecord_files):
    opts = ip.ReadOptions(batch_size=16)
    want, want_y = collect(ip.read_raw(spec, csv_files, opts))
    got, got_y = collect(ip.read_raw(spec, tfrecord_files, opts))
    assert set(got) == set(want) == set(spec.feature_names)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_array_equal(got_y, want_y)
    return want, want_y


def count_records(path: str) -> int:
    return sum(1 for _ in tf.data.TFRecordDataset(path, compression_type=ip._compression(path)))


@pytest.fixture
def census_csv(tmp_path):
    """The first 61 rows of adult.data (four of them with "?" fields)."""
    with gzip.open(CENSUS_TRAIN, "rt") as f:
        lines = [next(f) for _ in range(61)]
    assert sum("?" in line for line in lines) == 4
    path = tmp_path / "adult_head.csv"
    path.write_text("".join(lines))
    return str(path)


def test_census_round_trip(census_csv, tmp_path):
    spec = fs.preset("census")
    out = tmp_path / "out"
    files = tfrecord.convert_csv_to_tfrecord(spec, census_csv, str(out / "census"), num_shards=4)
    assert files == [str(out / f"census-0000{i}-of-00004.tfrecord.gz") for i in range(4)]
    assert sorted(os.listdir(out)) == sorted(os.path.basename(f) for f in files)  # no .tmp
    assert [count_records(f) for f in files] == [16, 15, 15, 15]  # row i in shard i % 4
    want, want_y = assert_same_rows(spec, census_csv, files)
    assert want["age"][:3].tolist() == [39.0, 50.0, 38.0]
    assert want_y.sum() == 15  # ">50K" rows among the first 61 of adult.data
    assert b"" in want["workclass"].tolist()  # a '?' field, parsed as missing


def test_more_than_eight_shards_hold_every_row(census_csv, tmp_path):
    """read_raw interleaves at most 8 files at a time: 10 shards hold the rows in another order."""
    spec = fs.preset("census")
    files = tfrecord.convert_csv_to_tfrecord(
        spec, census_csv, str(tmp_path / "c"), num_shards=10, compress=False
    )
    assert files[-1] == str(tmp_path / "c-00009-of-00010.tfrecord")
    opts = ip.ReadOptions(batch_size=16)
    want, want_y = collect(ip.read_raw(spec, census_csv, opts))
    got, got_y = collect(ip.read_raw(spec, files, opts))
    rows = lambda d, y: sorted(zip(*(d[n].tolist() for n in spec.feature_names), y.tolist()))  # noqa: E731
    assert len(rows(got, got_y)) == 61
    assert rows(got, got_y) == rows(want, want_y)


def test_criteo_round_trip(tmp_path):
    spec = criteo.spec()
    csv = criteo.write_synthetic(str(tmp_path / "csv"), 300, seed=5, missing_rate=0.1)
    files = tfrecord.convert_csv_to_tfrecord(
        spec, csv, str(tmp_path / "tfr" / "train"), num_shards=3, compress=False
    )
    assert [os.path.basename(f) for f in files] == [
        f"train-0000{i}-of-00003.tfrecord" for i in range(3)
    ]
    want, _ = assert_same_rows(spec, csv, files)
    assert b"" in want["C1"].tolist()  # missing ids survive as ""


def test_bad_row_fails_and_leaves_no_files(tmp_path):
    spec = criteo.spec()
    good = "\t".join(["0"] + ["1"] * 13 + ["68fd1e64"] * 26) + "\n"
    bad = good.replace("0\t1\t", "0\tone\t", 1)
    path = tmp_path / "day.tsv"
    path.write_text(good * 3 + bad + good)
    out = tmp_path / "out"
    with pytest.raises(ip.DataError, match=f"{path}:4: field 'I1' .* value 'one' is not a number"):
        tfrecord.convert_csv_to_tfrecord(spec, str(path), str(out / "x"), num_shards=2)
    assert os.listdir(out) == []

    result = tfrecord.convert(spec, str(path), str(out / "x"), num_shards=2, skip_bad_rows=True)
    assert (result.rows, result.bad_rows) == (4, 1)
    assert [count_records(f) for f in result.files] == [2, 2]


@pytest.mark.slow
def test_convert_script(tmp_path):
    csv = criteo.write_synthetic(str(tmp_path), 50, seed=1)[0]
    proc = run_script(
        "convert_to_tfrecord",
        "--feature_spec=criteo",
        f"--input={tmp_path}/*.tsv",
        f"--output_prefix={tmp_path}/tfr/part",
        "--num_shards=2",
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    shards = [f"{tmp_path}/tfr/part-0000{i}-of-00002.tfrecord.gz" for i in range(2)]
    assert proc.stdout.splitlines()[:2] == shards
    assert "wrote 50 rows to 2 shards" in proc.stdout and "rows/s" in proc.stdout
    assert_same_rows(criteo.spec(), csv, shards)


def test_train_validation_split_applies_to_tfrecord_files(census_csv, tmp_path):
    """The split hashes (file, record number): disjoint, complete, about the asked share."""
    spec = fs.preset("census")
    files = tfrecord.convert_csv_to_tfrecord(spec, [census_csv], str(tmp_path / "c"), num_shards=2)

    def ages(split):
        opts = ip.ReadOptions(batch_size=64, split=split, validation_fraction=0.25)
        rows = [x["age"].numpy().reshape(-1) for x, _ in ip.read_raw(spec, files, opts)]
        return np.concatenate(rows) if rows else np.zeros(0)

    train, validation, everything = ages("train"), ages("validation"), ages(None)
    assert len(train) + len(validation) == len(everything)
    assert 0 < len(validation) < len(everything) / 2
    np.testing.assert_array_equal(np.sort(np.concatenate([train, validation])), np.sort(everything))
