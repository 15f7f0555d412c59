"""Training from files, as train.py does it: files → parse → preprocess → train, per epoch.

Section 2 trains on encoded batches held in memory, which leaves out the input pipeline; a
run of train.py reads its files on every epoch. This section times that path for CSV, gzip
CSV and TFRecord (the same rows), with `input_pipeline.make_dataset` (every epoch parses and
preprocesses) and with `encoded_cache.training_dataset` (epoch 1 parses, preprocesses and
writes the encoded rows; later epochs read them back), and compares the cached epochs with
the same model trained on the pre-encoded in-memory batches in the same process.

One process per implementation × hash buckets (``python -m wdl_tf.benchmarks.train_files
JOB``), so each has its own TensorFlow state and peak RSS; inside it, for each format in turn:
the uncached epochs, the cached epochs, then one pre-encoded epoch. A pre-encoded epoch also
comes first, so every format's runs sit between two pre-encoded epochs, and its ratio uses
their mean: on a machine shared with other work, the reference moves with the load.

tf_keras's ``WideDeepModel`` gets the very same pipeline output, turned into its inputs by
`baselines.wide_deep_inputs` (a map after the pipeline, as section 2 does).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from typing import Any

from wdl_tf import startup
from wdl_tf.benchmarks import train_e2e
from wdl_tf.benchmarks.env import peak_rss
from wdl_tf.benchmarks.train_data import prepare_gzip_csv
from wdl_tf.benchmarks.train_settings import Settings, job_spec

FORMATS = ("csv", "csv_gz", "tfrecord")
FORMAT_TITLES = {"csv": "CSV", "csv_gz": "gzip CSV", "tfrecord": "TFRecord"}
CACHE_TARGET_RATIO = 0.8  # cached epochs 2+ ÷ pre-encoded, from CSV
UNCACHED_EPOCHS = 2  # every uncached epoch does the same work; the second shows it warm
IMPLS = ("wdl_tf", "tf_keras")  # section 2's stock-optimizer model adds nothing here


def epoch_timer(base):
    """A callback class (subclass of ``base``, Keras 3's or tf_keras's Callback) recording
    each epoch's wall seconds and steps. Keras turns the logs into numbers at the epoch's
    end, which waits for its last step, so the time covers all of the epoch's work."""

    class EpochTimer(base):
        def __init__(self):
            super().__init__()
            self.epochs: list[dict] = []
            self._start = 0.0
            self._steps = 0

        def on_epoch_begin(self, epoch, logs=None):
            self._steps = 0
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self._steps += 1

        def on_epoch_end(self, epoch, logs=None):
            loss = float((logs or {}).get("loss", float("nan")))
            seconds = time.perf_counter() - self._start
            self.epochs.append({"seconds": seconds, "steps": self._steps, "loss": loss})

    return EpochTimer


def _with_rates(epochs: list[dict], examples: int) -> list[dict]:
    return [{**e, "examples_per_s": examples / e["seconds"]} for e in epochs]


def run_files_config(job: dict) -> dict:
    """Builds one model and trains it from each format, uncached and cached, and on the
    pre-encoded batches between them; returns every epoch's rate and the caches' sizes."""
    import tensorflow as tf

    from wdl_tf import encoded_cache
    from wdl_tf import input_pipeline as ip
    from wdl_tf import model as model_lib
    from wdl_tf import preprocessing as pp

    impl, hb = job["implementation"], job["hash_buckets"]
    result: dict[str, Any] = {"implementation": impl, "hash_buckets": hb, "notes": []}
    spec = job_spec(job)
    state = pp.PreprocessingState.load(job["state_dir"])
    preprocessor = pp.FeaturePreprocessor(spec, state)
    features = preprocessor.encoded_features
    cfg = model_lib.ModelConfig(
        hidden_units=tuple(job["hidden_units"]), embedding_dim=job["embedding_dim"]
    )
    t = time.perf_counter()
    try:
        model, to_inputs, callback_base = train_e2e.build_model_for(
            impl, features, cfg, job, result["notes"]
        )
    except train_e2e.Unavailable as e:
        return {**result, "status": "n/a", "reason": str(e)}
    result["build_s"] = time.perf_counter() - t

    def feed(ds):
        return ds if to_inputs is None else ds.map(to_inputs, num_parallel_calls=ip.AUTOTUNE)

    # Pre-encoded: section 2's batches (the same rows, full batches only), in memory.
    encoded = tf.data.Dataset.load(job["encoded_dir"])
    memory = feed(encoded).cache()
    for _ in memory:
        pass
    memory = memory.prefetch(ip.AUTOTUNE)
    memory_examples = job["train_batches"] * job["batch_size"]

    # Warm-up: traces the step for a full batch and for a short one (an epoch's last batch),
    # so no epoch below pays for tracing.
    short = max(1, job["batch_size"] // 3)
    cut = encoded.take(1).map(lambda x, y: ({k: v[:short] for k, v in x.items()}, y[:short]))
    t = time.perf_counter()
    model.fit(feed(encoded.take(2).concatenate(cut)), epochs=1, verbose=0)
    result["warmup_s"] = time.perf_counter() - t

    timer_cls = epoch_timer(callback_base)

    def train(ds, epochs: int, examples: int) -> list[dict]:
        timer = timer_cls()
        model.fit(ds, epochs=epochs, callbacks=[timer], verbose=0)
        return _with_rates(timer.epochs, examples)

    opts = ip.ReadOptions(batch_size=job["batch_size"], shuffle=True, seed=0)
    pre = [train(memory, 1, memory_examples)[0]]
    result["formats"] = []
    for fmt in job["formats"]:
        files = job["files"][fmt]
        row: dict[str, Any] = {"format": fmt, "files": len(files)}
        uncached = feed(ip.make_dataset(spec, files, opts, preprocessor))
        row["uncached"] = train(uncached, UNCACHED_EPOCHS, job["rows"])
        cache_dir = os.path.join(job["cache_root"], f"{impl}_hb{hb}_{fmt}")
        shutil.rmtree(cache_dir, ignore_errors=True)
        cache = encoded_cache.for_run(cache_dir, files, spec, state, opts)
        cached = feed(encoded_cache.training_dataset(spec, files, opts, preprocessor, cache))
        row["cached"] = train(cached, job["epochs"], job["rows"])
        row["cache_bytes"] = cache.disk_bytes()
        row["cache_complete"] = cache.is_complete()
        shutil.rmtree(cache_dir, ignore_errors=True)
        pre.append(train(memory, 1, memory_examples)[0])
        row["pre_encoded_examples_per_s"] = (2 * memory_examples) / (
            pre[-2]["seconds"] + pre[-1]["seconds"]
        )
        later = [e["examples_per_s"] for e in row["cached"][1:]]
        row["cached_later_examples_per_s"] = statistics.median(later) if later else None
        row["uncached_examples_per_s"] = statistics.median(
            e["examples_per_s"] for e in row["uncached"]
        )
        if later:
            row["cached_ratio"] = (
                row["cached_later_examples_per_s"] / (row["pre_encoded_examples_per_s"])
            )
            row["uncached_ratio"] = (
                row["uncached_examples_per_s"] / (row["pre_encoded_examples_per_s"])
            )
        result["formats"].append(row)
    result["pre_encoded"] = pre
    result["status"] = "ok"
    rss = peak_rss()
    result["peak_rss_mib"] = rss["vmhwm_mib"] or rss["ru_maxrss_mib"]
    result["ru_maxrss_mib"] = rss["ru_maxrss_mib"]
    return result


def files_jobs(settings: Settings, data: dict) -> list[dict]:
    files = {
        "csv": data["csv_files"],
        "csv_gz": prepare_gzip_csv(settings, data),
        "tfrecord": data["tfrecord_files"],
    }
    root = os.path.abspath(settings.data_dir)
    jobs = []
    for hb in settings.hash_buckets:
        for impl in IMPLS:
            if impl not in settings.implementations:
                continue
            jobs.append(
                {
                    "implementation": impl,
                    "hash_buckets": hb,
                    "formats": list(FORMATS),
                    "files": files,
                    "rows": data["rows"],
                    "epochs": settings.files_epochs,
                    "encoded_dir": data["encoded"][str(hb)],
                    "train_batches": settings.train_batches,
                    "state_dir": data["state_dir"],
                    "cache_root": os.path.join(root, "files_caches"),
                    "batch_size": settings.batch_size,
                    "hidden_units": list(settings.hidden_units),
                    "embedding_dim": settings.embedding_dim,
                    "numeric_features": settings.numeric_features,
                    "categorical_features": settings.categorical_features,
                    "tf_keras_optimizers": settings.tf_keras_optimizers,
                }
            )
    return jobs


def bench_from_files(settings: Settings, data: dict) -> dict[str, Any]:
    """Runs every implementation × hash buckets configuration (each in its own process unless
    ``--noisolate``) and says how the numbers were taken."""
    results = train_e2e.run_configs(
        settings,
        files_jobs(settings, data),
        run_files_config,
        "from files",
        module="wdl_tf.benchmarks.train_files",
        timeout=settings.config_timeout * len(FORMATS),
    )
    method = (
        f"{data['rows']:,} rows in {len(data['csv_files'])} CSV files, the same files gzipped "
        f"(level 6), and {len(data['tfrecord_files'])} uncompressed TFRecord shards; batch "
        f"{settings.batch_size}, ReadOptions(shuffle=True, seed=0) as train.py reads training "
        f"data; each epoch a model.fit epoch over one full pass, timed from epoch begin to "
        "epoch end (rate = rows ÷ seconds). Uncached: input_pipeline.make_dataset, "
        f"{UNCACHED_EPOCHS} epochs. Cached: encoded_cache.training_dataset in a fresh "
        f"directory, {settings.files_epochs} epochs (epoch 1 writes the tf.data snapshot, later "
        "epochs read it; their median is the cached rate); the cache's "
        "disk bytes are measured after the last epoch. Pre-encoded: section 2's "
        f"{settings.train_batches} encoded batches cached in memory, one epoch before the first "
        "format and one after each format; a format's reference is the mean of the two "
        "around it. One process per implementation × buckets, one model trained on "
        "everything in turn (a warm-up fit traces full and short batches first)"
    )
    return {
        "method": method,
        "isolated": settings.isolate,
        "target_ratio": CACHE_TARGET_RATIO,
        "results": results,
    }


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    startup.skip_keras_extras()  # before TensorFlow loads
    train_e2e.worker_main(sys.argv[1], run_files_config)
