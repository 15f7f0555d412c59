"""TFDS builder `wdl_apps`: the synthetic app-store impressions (`wdl_tf.datasets.apps`).

Generated locally from the planted model, so building never touches the network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from etils import epath

from wdl_tf.datasets import apps, tfds_files

STRING_COLUMNS = (
    "user_id",
    "country",
    "language",
    "age_group",
    "device_class",
    "impression_app",
    "app_category",
    "developer",
)
FLOAT_COLUMNS = ("price", "rating", "app_age_days", "hour")
INT_COLUMNS = ("slot",)
LIST_COLUMN = "installed_apps"
LABEL_KEY = apps.LABEL  # "installed", 0 or 1


@dataclasses.dataclass(eq=False)
class AppsConfig(tfds.core.BuilderConfig):
    """Size and planted model of a `wdl_apps` build.

    Attributes:
      rows: train rows; the test split has ``rows // 4`` (another stream of the same model).
      seed: the planted model's seed (see `apps.write_apps`).
      num_users: users in the world.
      num_apps: apps in the world.
    """

    rows: int = 10_000
    seed: int = 0
    num_users: int = apps.NUM_USERS
    num_apps: int = apps.NUM_APPS


def config_for(rows: int, seed: int = 0) -> AppsConfig:
    """The predefined config with ``rows`` train rows and ``seed``, or a new one named
    ``rows_<rows>_seed_<seed>``."""
    for config in Apps.BUILDER_CONFIGS:
        if config.rows == rows and config.seed == seed:
            return config
    return AppsConfig(
        name=f"rows_{rows}_seed_{seed}",
        description=f"{rows} train rows, planted model seed {seed}.",
        rows=rows,
        seed=seed,
    )


class Apps(tfds.core.GeneratorBasedBuilder):
    """Synthetic Google Play impressions (the setting of Wide & Deep, Cheng et al. 2016).

    Splits: ``train`` (``config.rows`` rows, stream 0) and ``test`` (``rows // 4``, stream 1):
    the same users, apps and planted pairs, different impressions. Rows are in generation
    order (shuffling at build time is disabled), exactly the rows `apps.write_apps` writes
    for the same seed and stream.

    Features: string columns as ``tfds.features.Text``, ``installed_apps`` as a
    ``Sequence(tf.string)`` of app ids (possibly empty), price/rating/app_age_days/hour as
    float32, ``slot`` as int64 and the label ``installed`` as a 2-class ``ClassLabel``.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS: ClassVar[list[AppsConfig]] = [
        AppsConfig(name="tiny", description="1,000 train rows.", rows=1_000),
        AppsConfig(name="small", description="10,000 train rows.", rows=10_000),
        AppsConfig(name="medium", description="200,000 train rows.", rows=200_000),
    ]
    DEFAULT_CONFIG_NAME = "small"
    name = "wdl_apps"
    # As in census_tfds: TFDS 4.9.10 cannot derive code_path without importlib_resources.
    code_path = epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        features: dict[str, tfds.features.FeatureConnector] = {}
        for column in apps.COLUMNS:
            if column in STRING_COLUMNS:
                features[column] = tfds.features.Text()
            elif column in FLOAT_COLUMNS:
                features[column] = tfds.features.Scalar(dtype=np.float32)
            elif column in INT_COLUMNS:
                features[column] = tfds.features.Scalar(dtype=np.int64)
            elif column == LIST_COLUMN:
                features[column] = tfds.features.Sequence(tf.string)
        features[LABEL_KEY] = tfds.features.ClassLabel(names=["0", "1"])
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                "Synthetic app-store impressions with a planted install model (memorized "
                "installed-app x impression-app pairs plus latent user/app factors). "
                "Generated locally by wdl_tf.datasets.apps."
            ),
            features=tfds.features.FeaturesDict(features),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Generated: nothing is downloaded.
        rows = self.builder_config.rows
        return {
            "train": self._generate_examples(rows, apps.TRAIN_STREAM),
            "test": self._generate_examples(max(rows // 4, 1), apps.EVAL_STREAM),
        }

    def _generate_examples(self, rows: int, stream: int) -> Iterator[tuple[int, dict]]:
        c = self.builder_config
        yield from generate_examples(rows, c.seed, stream, c.num_users, c.num_apps)


def generate_examples(
    rows: int,
    seed: int = 0,
    stream: int = 0,
    num_users: int = apps.NUM_USERS,
    num_apps: int = apps.NUM_APPS,
) -> Iterator[tuple[int, dict]]:
    """(row index, example) for the rows `apps.write_apps` writes (one file), streaming."""
    world = apps.planted_model(seed, num_users, num_apps)
    index = 0
    for block in apps.blocks(world, rows, seed, stream, 0):
        cols = apps.block_columns(world, block)
        for i in range(len(block)):
            example = {c: cols[c][i] for c in STRING_COLUMNS}
            for c in FLOAT_COLUMNS:  # the values the CSV holds, as float32
                example[c] = np.float32(cols[c][i])
            example["slot"] = int(block.slot[i])
            example[LIST_COLUMN] = cols[LIST_COLUMN][i]
            example[LABEL_KEY] = int(block.label[i])
            yield index, example
            index += 1


def prepared_files(data_dir: str, rows: int, seed: int = 0) -> dict[str, list[str]]:
    """Prepares ``wdl_apps`` with ``rows`` train rows of planted model ``seed`` into
    ``data_dir`` if needed (generated, no network; see `tfds_files.prepare`); returns the
    TFRecord shard paths of ``train`` and ``test``: what ``--dataset=apps_synthetic``
    trains and evaluates on."""
    config = config_for(rows, seed)
    return tfds_files.prepare(lambda: Apps(config=config, data_dir=data_dir))


def load_apps(split: str, data_dir: str, rows: int = 10_000, seed: int = 0) -> tf.data.Dataset:
    """Builds ``wdl_apps`` with ``rows`` train rows into ``data_dir`` if needed (no network);
    returns ``split`` (``train``/``test``, or a slice such as ``"train[:90%]"``) in order."""
    prepared_files(data_dir, rows, seed)
    builder = Apps(config=config_for(rows, seed), data_dir=data_dir)
    return builder.as_dataset(split=split, shuffle_files=False)
