"""The training benchmark's inputs, written once and reused: synthetic Criteo CSV → TFRecord
shards → adapted preprocessing state → encoded batches, in ``--data_dir``.

Writing them takes longer than a benchmark section, and every configuration must train on
the very same batches, so each step leaves a ``DONE`` marker and later runs reuse it (delete
the directory after changing the parsing or preprocessing code: the encoded batches go stale).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import time
from typing import Any

from wdl_tf.benchmarks.train_settings import Settings


def _done(path: str) -> bool:
    return os.path.exists(os.path.join(path, "DONE"))


def _mark_done(path: str, info: dict | None = None) -> None:
    with open(os.path.join(path, "DONE"), "w") as f:
        json.dump(info or {}, f)


def _read_done(path: str) -> dict:
    with open(os.path.join(path, "DONE")) as f:
        return json.load(f)


def prepare_data(settings: Settings) -> dict[str, Any]:
    """Writes (or reuses) every input the benchmark reads; returns their paths and timings."""
    import tensorflow as tf

    from wdl_tf import input_pipeline as ip
    from wdl_tf import preprocessing as pp
    from wdl_tf import tfrecord
    from wdl_tf.datasets import criteo

    start = time.perf_counter()
    root = os.path.abspath(settings.data_dir)
    raw_spec = criteo.spec(settings.hash_buckets[0])  # every column (a superset of any trim)
    out: dict[str, Any] = {"data_dir": root, "rows": settings.rows}

    csv_dir = os.path.join(root, f"csv_{settings.rows}_{settings.csv_files}")
    if not _done(csv_dir):
        t = time.perf_counter()
        criteo.write_synthetic(csv_dir, settings.rows, seed=0, num_files=settings.csv_files)
        _mark_done(csv_dir, {"seconds": time.perf_counter() - t})
    out["csv_files"] = sorted(glob.glob(os.path.join(csv_dir, "*.tsv")))
    out["csv_write_seconds"] = _read_done(csv_dir).get("seconds")

    tfr_dir = os.path.join(root, f"tfrecord_{settings.rows}_{settings.tfrecord_shards}")
    if not _done(tfr_dir):
        conversion = tfrecord.convert(
            raw_spec,
            out["csv_files"],
            os.path.join(tfr_dir, "criteo"),
            num_shards=settings.tfrecord_shards,
            compress=False,
        )
        _mark_done(tfr_dir, {"seconds": conversion.seconds, "rows": conversion.rows})
    conversion = _read_done(tfr_dir)
    out["tfrecord_files"] = sorted(glob.glob(os.path.join(tfr_dir, "*.tfrecord")))
    out["tfrecord_conversion_rows_per_s"] = conversion["rows"] / max(conversion["seconds"], 1e-9)

    # Hashed categoricals learn nothing; the numerics' quantiles do not depend on the buckets.
    state_dir = os.path.join(root, f"state_{settings.rows}")
    if not _done(state_dir):
        os.makedirs(state_dir, exist_ok=True)
        opts = ip.ReadOptions(batch_size=4096, max_rows=min(settings.rows, 100_000))
        raw = ip.read_raw(raw_spec, out["csv_files"], opts)
        pp.adapt(raw_spec, (x for x, _ in raw), max_rows=opts.max_rows).save(state_dir)
        _mark_done(state_dir)
    out["state_dir"] = state_dir
    state = pp.PreprocessingState.load(state_dir)

    out["encoded"] = {}
    for hb in settings.hash_buckets:
        path = os.path.join(
            root,
            f"encoded_{settings.rows}_hb{hb}_bs{settings.batch_size}_{settings.tfrecord_shards}"
            f"_f{settings.numeric_features}-{settings.categorical_features}",
        )
        if not _done(path):
            t = time.perf_counter()
            spec = settings.spec(hb)
            ds = ip.make_dataset(
                spec,
                out["tfrecord_files"],
                ip.ReadOptions(batch_size=settings.batch_size),
                pp.FeaturePreprocessor(spec, state),
            ).take(settings.train_batches)  # full batches only: the last one may be short
            tmp = f"{path}.tmp-{os.getpid()}"
            tf.data.Dataset.save(ds, tmp)
            os.replace(tmp, path)
            _mark_done(path, {"seconds": time.perf_counter() - t})
        out["encoded"][str(hb)] = path
    out["prepare_seconds"] = time.perf_counter() - start
    return out


def prepare_gzip_csv(settings: Settings, data: dict) -> list[str]:
    """The CSV files of `prepare_data`, gzipped (level 6, as `criteo.write_synthetic`
    compresses): the same rows byte for byte, so the from-files formats differ only in how
    they are stored."""
    gz_dir = os.path.join(data["data_dir"], f"csv_gz_{settings.rows}_{settings.csv_files}")
    if not _done(gz_dir):
        os.makedirs(gz_dir, exist_ok=True)
        for path in data["csv_files"]:
            target = os.path.join(gz_dir, os.path.basename(path) + ".gz")
            tmp = f"{target}.tmp-{os.getpid()}"
            with open(path, "rb") as src, gzip.open(tmp, "wb", compresslevel=6) as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            os.replace(tmp, target)
        _mark_done(gz_dir)
    return sorted(glob.glob(os.path.join(gz_dir, "*.tsv.gz")))
