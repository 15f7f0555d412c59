"""Datasets by name: their files, their feature spec preset, and synthetic twins for tests.

``census`` is the UCI Adult data embedded in the package (CC BY 4.0): train on adult.data,
evaluate on adult.test. ``census_synthetic`` is a generated twin with the census schema and
learnable labels, small enough for end-to-end tests in seconds. ``criteo`` reads the user's
Criteo display-ads TSV files and ``criteo_synthetic`` generates files in that layout;
``apps_synthetic`` generates the paper's app-store impressions (``datasets/apps.py``);
``drifting_synthetic`` generates movie ratings whose users' tastes drift over time, in the
GroupLens layout prepared for the ``movielens`` spec (``datasets/drifting.py``).
"""

from __future__ import annotations

import dataclasses
import os

from wdl_tf.config import DATASETS  # noqa: F401 - re-exported

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
CENSUS_TRAIN = os.path.join(DATA_DIR, "adult.data.gz")
CENSUS_TEST = os.path.join(DATA_DIR, "adult.test.gz")


@dataclasses.dataclass(frozen=True)
class DatasetFiles:
    """Where a dataset's splits are and which feature spec preset reads them."""

    name: str
    feature_spec: str
    train_files: tuple[str, ...]
    eval_files: tuple[str, ...]


# Rows of a synthetic dataset when none are asked for (synthetic_rows=0): the census and
# Criteo twins are test fixtures; the drifting ratings need enough users and history for
# drift to show (~57K ratings, the size of MovieLens' ml-latest-small).
DEFAULT_ROWS = {
    "census_synthetic": 4000,
    "criteo_synthetic": 4000,
    "apps_synthetic": 4000,
    "drifting_synthetic": 60_000,
}


def get_dataset(
    name: str, work_dir: str, *, synthetic_rows: int = 0, seed: int = 0
) -> DatasetFiles:
    """The files of dataset ``name``; synthetic data is generated under ``work_dir``.

    ``synthetic_rows``: rows of a synthetic dataset; 0 = its `DEFAULT_ROWS`.

    ``files`` means "the user gives train/eval files and a feature spec": it has no files of
    its own.
    """
    synthetic_rows = synthetic_rows or DEFAULT_ROWS.get(name, 0)
    if name == "census":
        return DatasetFiles(name, "census", (CENSUS_TRAIN,), (CENSUS_TEST,))
    if name == "census_synthetic":
        from wdl_tf.datasets import synthetic

        train, test = synthetic.write_census_twin(
            os.path.join(work_dir, "synthetic_data"), rows=synthetic_rows, seed=seed
        )
        return DatasetFiles(name, "census", (train,), (test,))
    if name == "criteo":
        return DatasetFiles(name, "criteo", (), ())
    if name == "criteo_synthetic":
        from wdl_tf.datasets import criteo

        train, test = criteo.write_twin(
            os.path.join(work_dir, "synthetic_data"), rows=synthetic_rows, seed=seed
        )
        return DatasetFiles(name, "criteo", (train,), (test,))
    if name == "apps_synthetic":
        from wdl_tf.datasets import apps

        train, test = apps.get_files(
            os.path.join(work_dir, "synthetic_data"), synthetic_rows, seed=seed
        )
        return DatasetFiles(name, "apps", tuple(train), tuple(test))
    if name == "drifting_synthetic":
        from wdl_tf.datasets import drifting

        train, test = drifting.get_files(
            os.path.join(work_dir, "synthetic_data"), synthetic_rows, seed=seed
        )
        return DatasetFiles(name, "movielens", (train,), (test,))
    if name == "files":
        return DatasetFiles(name, "", (), ())
    raise ValueError(f"dataset: unknown value {name!r}; allowed values are {list(DATASETS)}")
