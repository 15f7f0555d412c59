"""Tests for the offline TFDS builder of the embedded UCI Adult data."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from wdl_tf import config as config_lib
from wdl_tf import datasets, input_pipeline, train_lib
from wdl_tf import features as fs
from wdl_tf.datasets import census_tfds

TRAIN_ROWS = 32561
TEST_ROWS = 16281
TEST_POSITIVES = 3846  # zcat adult.test.gz | grep -c '>50K\.'


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Builds wdl_census once for the module."""
    path = str(tmp_path_factory.mktemp("tfds"))
    census_tfds.load_census("train", path)
    return path


def _labels(ds: tf.data.Dataset) -> np.ndarray:
    batches = ds.map(lambda x: x["label"]).batch(8192)
    return np.concatenate([b.numpy() for b in batches])


def test_split_sizes_are_exact(data_dir: str) -> None:
    builder = census_tfds.Census(data_dir=data_dir)
    assert set(builder.info.splits) == {"train", "test"}
    assert builder.info.splits["train"].num_examples == TRAIN_ROWS
    assert builder.info.splits["test"].num_examples == TEST_ROWS
    assert len(_labels(census_tfds.load_census("train", data_dir))) == TRAIN_ROWS
    assert len(_labels(census_tfds.load_census("test", data_dir))) == TEST_ROWS


def test_first_train_row(data_dir: str) -> None:
    row = next(iter(census_tfds.load_census("train", data_dir).take(1)))
    assert row["age"].dtype == tf.float32
    assert row["label"].dtype == tf.int64
    assert float(row["age"]) == 39.0
    assert float(row["fnlwgt"]) == 77516.0
    assert row["workclass"].numpy() == b"State-gov"
    assert row["native_country"].numpy() == b"United-States"
    assert int(row["label"]) == 0
    assert "income_bracket" not in row


def test_test_positive_rate(data_dir: str) -> None:
    labels = _labels(census_tfds.load_census("test", data_dir))
    assert set(np.unique(labels)) <= {0, 1}
    assert int(labels.sum()) == TEST_POSITIVES
    assert labels.mean() == pytest.approx(TEST_POSITIVES / TEST_ROWS)


def test_missing_values_are_empty_strings(data_dir: str) -> None:
    ds = census_tfds.load_census("train", data_dir).map(lambda x: x["workclass"])
    values = np.concatenate([b.numpy() for b in ds.batch(8192)])
    assert b"?" not in set(values)
    assert (values == b"").sum() == 1836  # "?" workclass rows in adult.data


def test_validation_is_carved_from_train(data_dir: str) -> None:
    val = _labels(census_tfds.load_census("train[90%:]", data_dir))
    fit = _labels(census_tfds.load_census("train[:90%]", data_dir))
    assert len(val) + len(fit) == TRAIN_ROWS


def test_second_build_reuses_cache(data_dir: str) -> None:
    builder = census_tfds.Census(data_dir=data_dir)
    files = sorted(p for p in os.listdir(builder.data_dir) if "tfrecord" in p)
    assert files
    mtimes = [os.path.getmtime(os.path.join(builder.data_dir, p)) for p in files]
    ds = census_tfds.load_census("test", data_dir)
    assert sorted(p for p in os.listdir(builder.data_dir) if "tfrecord" in p) == files
    assert [os.path.getmtime(os.path.join(builder.data_dir, p)) for p in files] == mtimes
    assert len(_labels(ds)) == TEST_ROWS


# --dataset=census goes through the builder: the resolver prepares it and the pipeline reads
# its TFRecord shards, the same rows and values as the package's CSV files.


def _census_source(data_dir: str, tmp_path) -> datasets.DataSource:
    data = config_lib.DataConfig(dataset="census", tfds_data_dir=data_dir)
    return datasets.resolve(data, str(tmp_path))


def _read(files: list[str], spec) -> tuple[dict[str, np.ndarray], np.ndarray]:
    columns, labels = {}, []
    for raw, y in input_pipeline.read_raw(spec, files, input_pipeline.ReadOptions(batch_size=8192)):
        for name, value in raw.items():
            columns.setdefault(name, []).append(value.numpy().reshape(-1))
        labels.append(y.numpy().reshape(-1))
    return {k: np.concatenate(v) for k, v in columns.items()}, np.concatenate(labels)


def test_census_dataset_reads_the_prepared_builder(data_dir: str, tmp_path) -> None:
    source = _census_source(data_dir, tmp_path)
    prepared = census_tfds.Census(data_dir=data_dir).data_dir
    train, test = source.train_files(), source.eval_files()
    assert source.feature_spec == "census"
    assert all(os.path.dirname(p) == os.fspath(prepared) for p in train + test)
    assert all(input_pipeline.is_tfrecord(p) for p in train + test)
    spec = fs.load(source.feature_spec)
    assert len(_read(train, spec)[1]) == TRAIN_ROWS
    _, labels = _read(test, spec)
    assert len(labels) == TEST_ROWS  # evaluation uses every test row
    assert int(labels.sum()) == TEST_POSITIVES


def test_census_records_hold_the_csv_rows(data_dir: str, tmp_path) -> None:
    """The same rows in the same order with the same values (a missing "?" category is ""
    either way) and labels, so training on the builder is training on the CSV."""
    spec = fs.preset("census")
    records, record_labels = _read(_census_source(data_dir, tmp_path).eval_files(), spec)
    csv, csv_labels = _read([datasets.CENSUS_TEST], spec)
    np.testing.assert_array_equal(record_labels, csv_labels)
    assert set(records) == set(csv)
    for name in csv:
        np.testing.assert_array_equal(records[name], csv[name], err_msg=name)


def test_overrides_prepare_nothing(tmp_path) -> None:
    data = config_lib.DataConfig(
        dataset="census",
        train_files=datasets.CENSUS_TRAIN,
        eval_files=datasets.CENSUS_TEST,
        tfds_data_dir=str(tmp_path / "tfds"),
    )
    source = datasets.resolve(data, str(tmp_path))
    assert source.train_files() == [datasets.CENSUS_TRAIN]
    assert source.eval_files() == [datasets.CENSUS_TEST]
    assert not os.path.exists(tmp_path / "tfds")


def test_training_on_census_reads_the_builder_and_evaluates_every_test_row(
    data_dir: str, tmp_path
) -> None:
    """A tiny run with --dataset=census reads the builder prepared in --tfds_data_dir (no
    second build), and its final metrics are over all 16,281 test rows."""
    tfds_dir = data_dir
    builder_dir = census_tfds.Census(data_dir=tfds_dir).data_dir
    before = sorted(os.listdir(builder_dir))
    config = config_lib.preset(
        "test", model_dir=str(tmp_path / "model"), export_base="", epochs=1, steps_per_epoch=2
    )
    # Adapt (and the training statistics) on the first 2,000 rows: what is checked here is
    # where the rows come from and that every test row is scored.
    data = dataclasses.replace(
        config.data, dataset="census", tfds_data_dir=tfds_dir, adapt_max_rows=2000
    )
    config = dataclasses.replace(config, data=data, early_stopping_patience=0)
    result = train_lib.train_and_evaluate(config)
    assert sorted(os.listdir(builder_dir)) == before
    assert result.metrics["examples"] == TEST_ROWS
    assert result.metrics["eval_split"] == "eval_files"
