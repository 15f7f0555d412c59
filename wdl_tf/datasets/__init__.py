"""Datasets by name: their files, their feature spec preset, and synthetic twins for tests.

``census`` is the UCI Adult data embedded in the package (CC BY 4.0), read through its TFDS
builder (`census_tfds`, prepared once into the TFDS data dir, no network): train on
adult.data, evaluate on adult.test. ``census_synthetic`` is a generated twin with the
census schema and learnable labels, small enough for end-to-end tests in seconds.
``criteo`` reads the user's Criteo display-ads TSV files and ``criteo_synthetic``
generates files in that layout;
``apps_synthetic`` generates the paper's app-store impressions (``datasets/apps.py``)
through its TFDS builder (`apps_tfds`);
``drifting_synthetic`` generates movie ratings whose users' tastes drift over time, in the
GroupLens layout prepared for the ``movielens`` spec (``datasets/drifting.py``).

`resolve` is the one place a run's data is named: the config's files, else its dataset's.
"""

from __future__ import annotations

import dataclasses
import os

from wdl_tf import data_files
from wdl_tf.config import DATASETS, DataConfig

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


# The feature spec preset of each dataset ("files": the user names one).
FEATURE_SPECS = {
    "census": "census",
    "census_synthetic": "census",
    "criteo": "criteo",
    "criteo_synthetic": "criteo",
    "apps_synthetic": "apps",
    "drifting_synthetic": "movielens",
    "files": "",
}


def _tfds_files(name: str, shards: dict[str, list[str]]) -> DatasetFiles:
    return DatasetFiles(name, FEATURE_SPECS[name], tuple(shards["train"]), tuple(shards["test"]))


def get_dataset(
    name: str,
    work_dir: str,
    *,
    synthetic_rows: int = 0,
    seed: int = 0,
    tfds_data_dir: str = "",
) -> DatasetFiles:
    """The files of dataset ``name``; synthetic data is generated under ``work_dir``, TFDS
    builders (census, apps_synthetic) are prepared under ``tfds_data_dir`` (empty:
    `tfds_files.data_dir`'s default).

    ``synthetic_rows``: rows of a synthetic dataset; 0 = its `DEFAULT_ROWS`.

    ``files`` means "the user gives train/eval files and a feature spec": it has no files of
    its own.
    """
    synthetic_rows = synthetic_rows or DEFAULT_ROWS.get(name, 0)
    if name == "census":
        from wdl_tf.datasets import census_tfds, tfds_files

        shards = census_tfds.prepared_files(tfds_files.data_dir(tfds_data_dir))
        return _tfds_files(name, shards)
    if name == "census_synthetic":
        from wdl_tf.datasets import synthetic

        train, test = synthetic.write_census_twin(
            os.path.join(work_dir, "synthetic_data"), rows=synthetic_rows, seed=seed
        )
        return DatasetFiles(name, FEATURE_SPECS[name], (train,), (test,))
    if name == "criteo":
        return DatasetFiles(name, FEATURE_SPECS[name], (), ())
    if name == "criteo_synthetic":
        from wdl_tf.datasets import criteo

        train, test = criteo.write_twin(
            os.path.join(work_dir, "synthetic_data"), rows=synthetic_rows, seed=seed
        )
        return DatasetFiles(name, FEATURE_SPECS[name], (train,), (test,))
    if name == "apps_synthetic":
        from wdl_tf.datasets import apps_tfds, tfds_files

        shards = apps_tfds.prepared_files(
            tfds_files.data_dir(tfds_data_dir), synthetic_rows, seed=seed
        )
        return _tfds_files(name, shards)
    if name == "drifting_synthetic":
        from wdl_tf.datasets import drifting

        train, test = drifting.get_files(
            os.path.join(work_dir, "synthetic_data"), synthetic_rows, seed=seed
        )
        return DatasetFiles(name, FEATURE_SPECS[name], (train,), (test,))
    if name == "files":
        return DatasetFiles(name, FEATURE_SPECS[name], (), ())
    raise ValueError(f"dataset: unknown value {name!r}; allowed values are {list(DATASETS)}")


@dataclasses.dataclass(frozen=True)
class DataSource:
    """What a run reads: its feature spec (a preset name or a JSON file) and the patterns of
    its train and evaluation files (no evaluation files: none given, none in the dataset).
    `train_files`/`eval_files` expand them, checking that every file exists."""

    feature_spec: str
    train_patterns: tuple[str, ...]
    eval_patterns: tuple[str, ...]

    def train_files(self) -> list[str]:
        return data_files.resolve_files(list(self.train_patterns))

    def eval_files(self) -> list[str]:
        """The evaluation files; [] when there are none."""
        return data_files.resolve_files(list(self.eval_patterns)) if self.eval_patterns else []


def _patterns(files: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in files.split(",") if p.strip())


def resolve(data: DataConfig, work_dir: str, seed: int = 0) -> DataSource:
    """The one resolver of a run's data (training, evaluation of a model dir, tuning).

    ``--feature_spec``, ``--train_files`` and ``--eval_files`` override the dataset's own;
    the dataset's files are made (synthetic data under ``work_dir``, a TFDS builder under
    ``data.tfds_data_dir``) only when a split has no override, so a run that names all of
    its files prepares nothing.
    """
    train, evals = _patterns(data.train_files), _patterns(data.eval_files)
    if not (train and evals):
        ds = get_dataset(
            data.dataset,
            work_dir,
            synthetic_rows=data.synthetic_rows,
            seed=seed,
            tfds_data_dir=data.tfds_data_dir,
        )
        train, evals = train or ds.train_files, evals or ds.eval_files
    spec = data.feature_spec or FEATURE_SPECS.get(data.dataset, "")
    return DataSource(spec, train, evals)
