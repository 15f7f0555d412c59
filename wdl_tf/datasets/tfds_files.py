"""Preparing this package's TFDS builders locally, and the TFRecord shards they write.

``--dataset=census`` and ``apps_synthetic`` are read through their TFDS builders
(`census_tfds`, `apps_tfds`): a builder is prepared once into a data dir, and training
reads the prepared TFRecord shards with `wdl_tf.input_pipeline` like any other TFRecord of
tf.Examples. Why the shards and not ``builder.as_dataset``: everything downstream of the
resolver (the train/validation split by file and record, row checks with
``--skip_bad_rows``, multi-worker sharding by file, the skew statistics and
`wdl_tf.samples`) works on files; TFDS's examples are tf.Examples keyed by the feature
names, so the pipeline reads them as they are. (The census builder stores its label as the
ClassLabel ``label``, int64; the pipeline accepts that layout, see
`input_pipeline.example_labels`.)

Nothing is ever downloaded: the builders read the package's files or generate their rows,
and `prepare` passes ``try_download_gcs=False``.
"""

from __future__ import annotations

import os

from wdl_tf import atomic

DATA_DIR_ENV = "TFDS_DATA_DIR"


def data_dir(explicit: str = "") -> str:
    """Where builders are prepared: ``explicit`` (the ``--tfds_data_dir`` flag), else
    ``$TFDS_DATA_DIR``, else TFDS's own default, ``~/tensorflow_datasets``."""
    return (
        explicit
        or os.environ.get(DATA_DIR_ENV)
        or os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    )


def prepare(make_builder) -> dict[str, list[str]]:
    """Prepares the builder ``make_builder()`` makes if needed; returns its TFRecord shard
    paths per split, in order.

    Cheap when prepared (TFDS finds the version dir and reads its dataset_info.json). TFDS
    writes a new version into a temporary ``incomplete.*`` dir and renames it into place,
    so readers never see a partial dataset; but two processes preparing at once would both
    write, and the second rename fails. So preparation runs under a file lock beside the
    version dir: the second process waits, then finds the dataset prepared and reuses it.
    """
    import tensorflow_datasets as tfds

    builder = make_builder()
    if not builder.is_prepared():
        parent = os.path.dirname(os.fspath(builder.data_dir))
        os.makedirs(parent, exist_ok=True)
        with atomic.exclusive_lock(os.path.join(parent, ".prepare.lock")):
            builder = make_builder()  # another process may have prepared it meanwhile
            if not builder.is_prepared():
                builder.download_and_prepare(
                    download_config=tfds.download.DownloadConfig(try_download_gcs=False),
                    file_format="tfrecord",
                )
        builder = make_builder()  # reads the prepared dataset_info.json (splits, shards)
    return {
        name: [os.fspath(p) for p in split.filepaths] for name, split in builder.info.splits.items()
    }
