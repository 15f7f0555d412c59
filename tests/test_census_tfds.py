"""Tests for the offline TFDS builder of the embedded UCI Adult data."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

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
