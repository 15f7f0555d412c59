"""Training-speed benchmark: optimizers, end-to-end examples/s, input pipeline, roofline, memory.

    python scripts/benchmark_train.py --output_json=/tmp/bench.json --output_md=/tmp/bench.md
    python scripts/benchmark_train.py --quick --output_json=/tmp/quick.json   # < 60 s, tiny

One run reports, side by side (JSON with ``--output_json``, Markdown with ``--output_md``; the
Markdown is printed too):

1. Optimizer step time on a [rows, 1] float32 table with a sparse (IndexedSlices) gradient of a
   Zipf batch of ids: wdl_tf's sparse-aware Ftrl/Adagrad vs stock ``keras.optimizers``.
2. End-to-end training examples/s on the Criteo-shaped model (13 numeric + 26 categorical,
   32-d embeddings, ReLU 1024-512-256, batch 1024) at each hash-bucket count, for (a) wdl_tf
   (`model.compile_model`), (b) the same model with stock Keras 3 optimizers in the same
   MultiOptimizer/OptimizerMap, (c) tf_keras's ``WideDeepModel`` of the same architecture.
   Each configuration runs in its own subprocess (``--isolate``), all three read the same
   pre-materialized encoded batches (``tf.data.Dataset.save`` once, loaded and cached in
   memory), and a Keras callback times windows of steps after a warm-up.
3. The input pipeline alone (`input_pipeline.make_dataset`: parse + preprocess) from CSV and
   TFRecord, and its ratio to the wdl_tf training rate.
4. The roofline: measured float32 matmul GFLOP/s, the MLP's FLOPs per training example, the
   MLP-bound examples/s and the share of it that training reaches.
5. Peak memory of each configuration's process (and of this one): ``VmHWM`` and
   ``resource.getrusage(RUSAGE_SELF).ru_maxrss``.

Synthetic Criteo files, their TFRecord shards, the adapted preprocessing state and the encoded
batches are cached in ``--data_dir`` and reused by later runs (delete it after changing the
parsing or preprocessing code, or the encoded batches are stale).
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
IMPLEMENTATIONS = ("wdl_tf", "keras_stock", "tf_keras")
IMPL_TITLES = {
    "wdl_tf": "wdl_tf (ours)",
    "keras_stock": "Keras 3 stock optimizers",
    "tf_keras": "tf_keras WideDeepModel",
}
ZIPF_EXPONENT = 1.2  # as wdl_tf.datasets.criteo draws its categorical ranks
PIPELINE_TARGET_RATIO = 3.0


def define_flags() -> None:
    flags.DEFINE_string("output_json", None, "Write the report as JSON here.")
    flags.DEFINE_string("output_md", None, "Write the report as Markdown here (also printed).")
    flags.DEFINE_string(
        "data_dir",
        os.path.join(tempfile.gettempdir(), "wdl_tf_benchmark_data"),
        "Cache of synthetic files, TFRecord shards, preprocessing state and encoded batches.",
    )
    flags.DEFINE_bool("quick", False, "Tiny sizes, in-process (a smoke run, < 60 s).")
    flags.DEFINE_string("device_name", None, "Label of this machine in the report.")
    flags.DEFINE_integer("rows", 200_000, "Synthetic Criteo rows written (and trained on).")
    flags.DEFINE_integer("batch_size", 1024, "Training and input pipeline batch size.")
    flags.DEFINE_list("hash_buckets", ["10000", "1000000"], "Hash buckets per categorical.")
    flags.DEFINE_list(
        "implementations", list(IMPLEMENTATIONS), f"End-to-end configurations: {IMPLEMENTATIONS}."
    )
    flags.DEFINE_enum(
        "tf_keras_optimizers",
        "legacy",
        ["legacy", "new"],
        "tf_keras optimizers for (c): tf_keras.optimizers.legacy (fused sparse kernels) or "
        "tf_keras.optimizers (the 2.11+ ones; their Ftrl updates densely).",
    )
    flags.DEFINE_string("hidden_units", "1024,512,256", "Deep part's ReLU layer sizes.")
    flags.DEFINE_integer("embedding_dim", 32, "Embedding size of every categorical.")
    flags.DEFINE_integer("numeric_features", 13, "Numeric features used: I1..In (at most 13).")
    flags.DEFINE_integer(
        "categorical_features",
        26,
        "Categoricals used: C1..Cn (at most 26); crosses of unused ones are dropped.",
    )
    flags.DEFINE_list("optimizer_rows", ["10000", "1000000", "4000000"], "Table sizes, section 1.")
    flags.DEFINE_integer("optimizer_ids", 1024, "Ids per sparse gradient (section 1).")
    flags.DEFINE_integer("optimizer_steps", 30, "Timed optimizer steps per case.")
    flags.DEFINE_integer("optimizer_warmup", 5, "Untimed optimizer steps per case.")
    flags.DEFINE_integer("warmup_steps", 4, "Untimed training steps (the first one traces).")
    flags.DEFINE_float("warmup_seconds", 20.0, "Warm-up ends early after this (>= 2 steps).")
    flags.DEFINE_integer("window_steps", 20, "Steps per timed window (fewer for slow steps).")
    flags.DEFINE_integer("min_windows", 3, "Timed windows per configuration, at least.")
    flags.DEFINE_integer("max_windows", 10, "Timed windows per configuration, at most.")
    flags.DEFINE_float("train_seconds", 25.0, "Target timed seconds per configuration.")
    flags.DEFINE_integer("pipeline_batches", 60, "Timed batches per input pipeline source.")
    flags.DEFINE_float("pipeline_seconds", 10.0, "Time cap per input pipeline source.")
    flags.DEFINE_list("matmul_sizes", ["1024", "2048", "4096"], "Square float32 matmul sizes.")
    flags.DEFINE_float("matmul_seconds", 3.0, "Timed seconds per matmul size (>= 3 products).")
    flags.DEFINE_integer("csv_files", 4, "Synthetic CSV files.")
    flags.DEFINE_integer("tfrecord_shards", 8, "TFRecord shards (uncompressed).")
    flags.DEFINE_bool("isolate", True, "Run each end-to-end configuration in a subprocess.")
    flags.DEFINE_integer("config_timeout", 420, "Seconds before a configuration is abandoned.")
    flags.DEFINE_string("worker", None, "Internal: run one configuration from this job file.")


QUICK = dict(
    rows=4096,
    batch_size=256,
    hash_buckets=["1000", "10000"],
    hidden_units="64,32,16",
    embedding_dim=8,
    numeric_features=4,
    categorical_features=6,
    optimizer_rows=["1000", "10000", "40000"],
    optimizer_steps=5,
    optimizer_warmup=2,
    warmup_steps=2,
    warmup_seconds=5.0,
    window_steps=2,
    min_windows=2,
    max_windows=2,
    train_seconds=1.0,
    pipeline_batches=4,
    pipeline_seconds=2.0,
    matmul_sizes=["128", "256"],
    matmul_seconds=0.2,
    csv_files=2,
    tfrecord_shards=2,
    isolate=False,
)


@dataclasses.dataclass(frozen=True)
class Settings:
    data_dir: str
    quick: bool
    device_name: str | None
    rows: int
    batch_size: int
    hash_buckets: tuple[int, ...]
    implementations: tuple[str, ...]
    tf_keras_optimizers: str
    hidden_units: tuple[int, ...]
    embedding_dim: int
    numeric_features: int
    categorical_features: int
    optimizer_rows: tuple[int, ...]
    optimizer_ids: int
    optimizer_steps: int
    optimizer_warmup: int
    warmup_steps: int
    warmup_seconds: float
    window_steps: int
    min_windows: int
    max_windows: int
    train_seconds: float
    pipeline_batches: int
    pipeline_seconds: float
    matmul_sizes: tuple[int, ...]
    matmul_seconds: float
    csv_files: int
    tfrecord_shards: int
    isolate: bool
    config_timeout: int

    def spec(self, hash_buckets: int):
        return benchmark_spec(hash_buckets, self.numeric_features, self.categorical_features)

    @property
    def train_batches(self) -> int:
        """Full batches in the data: the encoded batches every configuration trains on."""
        return self.rows // self.batch_size


def _ints(values, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(str(v).strip()) for v in values if str(v).strip())
    except ValueError:
        raise app.UsageError(f"--{name}: expected comma-separated integers, got {values}") from None
    if not out or any(v < 1 for v in out):
        raise app.UsageError(f"--{name}: expected positive integers, got {values}")
    return out


def resolve_settings() -> Settings:
    """Flags → Settings; ``--quick`` replaces the defaults of flags not given explicitly."""

    def get(name):
        if FLAGS.quick and name in QUICK and not FLAGS[name].present:
            return QUICK[name]
        return FLAGS[name].value

    implementations = tuple(get("implementations"))
    unknown = set(implementations) - set(IMPLEMENTATIONS)
    if unknown:
        raise app.UsageError(f"--implementations: unknown {sorted(unknown)}; use {IMPLEMENTATIONS}")
    s = Settings(
        data_dir=get("data_dir"),
        quick=FLAGS.quick,
        device_name=get("device_name"),
        rows=get("rows"),
        batch_size=get("batch_size"),
        hash_buckets=_ints(get("hash_buckets"), "hash_buckets"),
        implementations=implementations,
        tf_keras_optimizers=get("tf_keras_optimizers"),
        hidden_units=_ints(get("hidden_units").split(","), "hidden_units"),
        embedding_dim=get("embedding_dim"),
        numeric_features=get("numeric_features"),
        categorical_features=get("categorical_features"),
        optimizer_rows=_ints(get("optimizer_rows"), "optimizer_rows"),
        optimizer_ids=get("optimizer_ids"),
        optimizer_steps=get("optimizer_steps"),
        optimizer_warmup=get("optimizer_warmup"),
        warmup_steps=get("warmup_steps"),
        warmup_seconds=get("warmup_seconds"),
        window_steps=get("window_steps"),
        min_windows=get("min_windows"),
        max_windows=get("max_windows"),
        train_seconds=get("train_seconds"),
        pipeline_batches=get("pipeline_batches"),
        pipeline_seconds=get("pipeline_seconds"),
        matmul_sizes=_ints(get("matmul_sizes"), "matmul_sizes"),
        matmul_seconds=get("matmul_seconds"),
        csv_files=get("csv_files"),
        tfrecord_shards=get("tfrecord_shards"),
        isolate=get("isolate"),
        config_timeout=get("config_timeout"),
    )
    if s.train_batches < 1:
        raise app.UsageError(f"--rows ({s.rows}) must be >= --batch_size ({s.batch_size})")
    for name in ("optimizer_steps", "window_steps", "min_windows", "pipeline_batches"):
        if getattr(s, name) < 1:
            raise app.UsageError(f"--{name}: must be >= 1")
    if s.max_windows < s.min_windows:
        raise app.UsageError("--max_windows must be >= --min_windows")
    if not (1 <= s.numeric_features <= 13 and 1 <= s.categorical_features <= 26):
        raise app.UsageError("--numeric_features in [1, 13], --categorical_features in [1, 26]")
    if s.warmup_steps < 2:
        raise app.UsageError("--warmup_steps must be >= 2 (the first step traces)")
    return s


def benchmark_spec(hash_buckets: int, numeric: int = 13, categorical: int = 26):
    """`criteo.spec(hash_buckets)`, trimmed to I1..I<numeric> and C1..C<categorical> (and the
    crosses of the categoricals kept); the full spec by default."""
    from wdl_tf import features as fs
    from wdl_tf.datasets import criteo

    spec = criteo.spec(hash_buckets)
    if numeric == len(criteo.INT_COLUMNS) and categorical == len(criteo.CAT_COLUMNS):
        return spec
    keep = set(criteo.INT_COLUMNS[:numeric]) | set(criteo.CAT_COLUMNS[:categorical])
    obj = spec.to_dict()
    obj["features"] = [f for f in obj["features"] if f["name"] in keep]
    obj["crosses"] = [c for c in obj.get("crosses", []) if set(c["features"]) <= keep]
    return fs.from_dict(obj)


def job_spec(job: dict):
    return benchmark_spec(job["hash_buckets"], job["numeric_features"], job["categorical_features"])


# ----------------------------------------------------------------------------------------
# Environment.


def configure_devices() -> None:
    """GPU memory on demand, so the parent and each configuration's process can share a GPU."""
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialized
            pass


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def peak_rss() -> dict[str, float | None]:
    """This process's peak RSS in MiB: ``ru_maxrss`` and the current image's ``VmHWM``.

    Linux keeps ``ru_maxrss`` across fork and exec, so in a child of a large process it is at
    least the parent's RSS at the fork; ``VmHWM`` (/proc/self/status) restarts at exec.
    """
    out: dict[str, float | None] = {
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vmhwm_mib": None,
    }
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    out["vmhwm_mib"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


def environment(settings: Settings) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    devices = tf.config.list_physical_devices()
    gpus = [d for d in devices if d.device_type == "GPU"]
    gpu_names = []
    for gpu in gpus:
        details = tf.config.experimental.get_device_details(gpu)
        gpu_names.append(details.get("device_name", gpu.name))
    try:
        import tf_keras

        tf_keras_version = tf_keras.__version__
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        tf_keras_version = f"n/a ({type(e).__name__}: {e})"
    cores = os.cpu_count()
    label = settings.device_name or (gpu_names[0] if gpu_names else f"{cpu_model()}, {cores} cores")
    return {
        "device_name": label,
        "cpu_model": cpu_model(),
        "cpu_count": cores,
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_start": load_average(),
        "physical_devices": [f"{d.name} ({d.device_type})" for d in devices],
        "gpus": gpu_names,
        "tensor_float_32": bool(tf.config.experimental.tensor_float_32_execution_enabled()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "tf_keras": tf_keras_version,
        "platform": platform.platform(),
    }


# ----------------------------------------------------------------------------------------
# Data: synthetic Criteo CSV → TFRecord shards → adapted state → encoded batches (cached).


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


# ----------------------------------------------------------------------------------------
# 1. Optimizer step time.


def zipf_ids(rng: np.random.Generator, n: int, rows: int) -> np.ndarray:
    """n ids in [0, rows): Zipf ranks (many duplicates), scattered over the table."""
    ranks = (rng.zipf(ZIPF_EXPONENT, size=n).astype(np.int64) - 1) % rows
    return (ranks * 2_654_435_761) % rows


def time_optimizer_step(make_optimizer, rows: int, batches, steps: int, warmup: int) -> dict:
    """Median ms of one `optimizer.apply` of a sparse gradient, each step in a tf.function."""
    import keras
    import tensorflow as tf

    variable = keras.Variable(
        keras.initializers.Zeros()((rows, 1), "float32"), dtype="float32", name="table"
    )
    optimizer = make_optimizer()
    optimizer.build([variable])
    table = variable.value

    @tf.function
    def step(indices, values):
        gradient = tf.IndexedSlices(values, indices, dense_shape=tf.constant([rows, 1], tf.int64))
        optimizer.apply([gradient], [variable])
        # Read a row back: ordered after the update, so fetching it waits for the step.
        return tf.reduce_sum(tf.gather(table, indices[:1]))

    times = []
    for i in range(warmup + steps):
        indices, values = batches[i % len(batches)]
        t = time.perf_counter()
        step(indices, values).numpy()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return {"ms_median": 1e3 * statistics.median(times), "ms_min": 1e3 * min(times)}


def bench_optimizers(settings: Settings) -> dict[str, Any]:
    import keras
    import tensorflow as tf

    from wdl_tf import model as model_lib
    from wdl_tf import optimizers as ours

    cfg = model_lib.ModelConfig()
    ftrl_args = dict(
        learning_rate=cfg.linear_learning_rate,
        l1_regularization_strength=cfg.linear_l1,
        l2_regularization_strength=cfg.linear_l2,
    )
    factories = {
        ("ftrl", "wdl_tf"): lambda: ours.Ftrl(**ftrl_args),
        ("ftrl", "keras"): lambda: keras.optimizers.Ftrl(**ftrl_args),
        ("adagrad", "wdl_tf"): lambda: ours.Adagrad(learning_rate=cfg.dnn_learning_rate),
        ("adagrad", "keras"): lambda: keras.optimizers.Adagrad(learning_rate=cfg.dnn_learning_rate),
    }
    rng = np.random.default_rng(0)
    results = []
    for rows in settings.optimizer_rows:
        ids = [zipf_ids(rng, settings.optimizer_ids, rows) for _ in range(8)]
        batches = [
            (
                tf.constant(i),
                tf.constant(rng.normal(size=(len(i), 1)).astype(np.float32)),
            )
            for i in ids
        ]
        row = {
            "rows": rows,
            "ids_per_batch": settings.optimizer_ids,
            "unique_ids_mean": float(np.mean([len(np.unique(i)) for i in ids])),
        }
        for (name, impl), factory in factories.items():
            timing = time_optimizer_step(
                factory, rows, batches, settings.optimizer_steps, settings.optimizer_warmup
            )
            row[f"{name}_{impl}_ms"] = timing["ms_median"]
            row[f"{name}_{impl}_ms_min"] = timing["ms_min"]
        for name in ("ftrl", "adagrad"):
            row[f"{name}_speedup"] = row[f"{name}_keras_ms"] / row[f"{name}_wdl_tf_ms"]
        results.append(row)
    return {
        "method": (
            f"[rows, 1] float32 table, IndexedSlices gradient of {settings.optimizer_ids} Zipf "
            f"(s={ZIPF_EXPONENT}) ids with duplicates, optimizer.apply inside a tf.function; "
            f"median of {settings.optimizer_steps} steps after {settings.optimizer_warmup} "
            "warm-up steps (8 id batches in turn)"
        ),
        "results": results,
    }


# ----------------------------------------------------------------------------------------
# 4 (first half). Matmul GFLOP/s.


def bench_matmul(settings: Settings) -> dict[str, Any]:
    import tensorflow as tf

    @tf.function
    def product(a, b):
        return tf.reduce_sum(tf.matmul(a, b))  # the sum makes fetching wait for the product

    results = []
    for n in settings.matmul_sizes:
        a = tf.random.normal((n, n), dtype=tf.float32)
        b = tf.random.normal((n, n), dtype=tf.float32)
        product(a, b).numpy()
        times = []
        start = time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < settings.matmul_seconds:
            t = time.perf_counter()
            product(a, b).numpy()
            times.append(time.perf_counter() - t)
            if len(times) >= 1000:
                break
        median, best = statistics.median(times), min(times)
        results.append(
            {
                "n": n,
                "reps": len(times),
                "ms_median": 1e3 * median,
                "gflops": 2 * n**3 / median / 1e9,
                "gflops_best": 2 * n**3 / best / 1e9,
            }
        )
    return {
        "matmul": results,
        "gflops": max(r["gflops_best"] for r in results),
        "gflops_median": max(r["gflops"] for r in results),
        "method": "tf.matmul of two n×n float32 matrices in a tf.function, repeated for "
        f"{settings.matmul_seconds:g} s (at least 3 times) per size; the roofline uses the best "
        "single product of any size (the attainable peak: on a shared machine the median "
        "also measures the other processes), the median-based limit is given too",
    }


# ----------------------------------------------------------------------------------------
# 3. Input pipeline alone.


def pipeline_rate(spec, files, preprocessor, settings: Settings, warmup: int = 3) -> dict:
    """Examples/s of iterating `make_dataset` (read, parse, preprocess) after a few batches."""
    from wdl_tf import input_pipeline as ip

    ds = ip.make_dataset(spec, files, ip.ReadOptions(batch_size=settings.batch_size), preprocessor)
    iterator = iter(ds)
    for _ in range(warmup):
        next(iterator)
    examples = batches = 0
    start = time.perf_counter()
    for _, labels in iterator:
        examples += int(labels.shape[0])
        batches += 1
        if (
            batches >= settings.pipeline_batches
            or time.perf_counter() - start > settings.pipeline_seconds
        ):
            break
    seconds = time.perf_counter() - start
    return {"examples_per_s": examples / seconds, "batches": batches, "seconds": seconds}


def bench_input_pipeline(settings: Settings, data: dict) -> dict[str, Any]:
    from wdl_tf import preprocessing as pp

    hb = settings.hash_buckets[0]
    spec = settings.spec(hb)
    preprocessor = pp.FeaturePreprocessor(spec, pp.PreprocessingState.load(data["state_dir"]))
    out = {
        "hash_buckets": hb,
        "csv": pipeline_rate(spec, data["csv_files"], preprocessor, settings),
        "tfrecord": pipeline_rate(spec, data["tfrecord_files"], preprocessor, settings),
        "tfrecord_conversion_rows_per_s": data["tfrecord_conversion_rows_per_s"],
        "method": (
            f"iterate make_dataset (batch {settings.batch_size}, no shuffle, parallel map) "
            f"over {len(data['csv_files'])} CSV files / {len(data['tfrecord_files'])} "
            f"uncompressed TFRecord shards; {settings.pipeline_batches} batches (or "
            f"{settings.pipeline_seconds:g} s) after 3 warm-up batches; hash buckets {hb} "
            "(the cost of hashing does not depend on the bucket count)"
        ),
    }
    return out


# ----------------------------------------------------------------------------------------
# 2. End-to-end training (one configuration; run in a subprocess by default).


def window_timer(base):
    """A callback class (a subclass of ``base``: Keras 3's or tf_keras's Callback) that
    timestamps every batch end, stops training once the timed part is long enough, and cuts
    the timed steps into windows afterwards.

    Warm-up: ``warmup_steps`` steps, or fewer (at least 2) once they take ``warmup_seconds``;
    the first step traces. Timed part: until ``window_steps × max_windows`` steps, or until
    ``train_seconds`` have passed and there are at least ``min_windows`` steps. Windows:
    ``window_steps`` steps each, fewer when the timed steps are too few for ``min_windows``.
    """

    class WindowTimer(base):
        def __init__(self, settings: dict):
            super().__init__()
            self.s = settings
            self.stamps: list[float] = []
            self.warmup_end: int | None = None  # number of steps in the warm-up
            self.loss = float("nan")
            self.begin = time.perf_counter()

        def on_train_begin(self, logs=None):
            self.begin = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if logs and "loss" in logs:
                self.loss = float(np.asarray(logs["loss"]))  # waits for the step
            now = time.perf_counter()
            self.stamps.append(now)
            n, s = len(self.stamps), self.s
            if self.warmup_end is None:
                if n >= s["warmup_steps"] or (
                    n >= 2 and now - self.stamps[0] > s["warmup_seconds"]
                ):
                    self.warmup_end = n
                return
            timed = n - self.warmup_end
            elapsed = now - self.stamps[self.warmup_end - 1]
            if timed >= s["window_steps"] * s["max_windows"] or (
                elapsed >= s["train_seconds"] and timed >= s["min_windows"]
            ):
                self.model.stop_training = True

        def result(self, batch_size: int) -> dict:
            s = self.s
            timed = len(self.stamps) - (self.warmup_end or len(self.stamps))
            if timed < 1:
                raise RuntimeError(f"training stopped after {len(self.stamps)} steps")
            window = max(1, min(s["window_steps"], timed // s["min_windows"]))
            windows = min(s["max_windows"], timed // window)
            first = self.warmup_end - 1  # the stamp that starts the first window
            rates, step_ms = [], []
            for k in range(windows):
                t0 = self.stamps[first + k * window]
                t1 = self.stamps[first + (k + 1) * window]
                rates.append(window * batch_size / (t1 - t0))
                step_ms.append(1e3 * (t1 - t0) / window)
            return {
                "examples_per_s": statistics.median(rates),
                "window_examples_per_s": rates,
                "step_ms": statistics.median(step_ms),
                "window_steps": window,
                "windows": windows,
                "warmup_steps": self.warmup_end,
                "timed_steps": timed,
                "first_step_s": self.stamps[0] - self.begin,
                "last_loss": self.loss,
            }

    return WindowTimer


def compile_stock(model, cfg) -> None:
    """`model.compile_model` with stock Keras 3 Ftrl/Adagrad in the same MultiOptimizer."""
    import keras

    from wdl_tf import model as model_lib

    model_lib.check_variable_paths(model)
    ftrl = keras.optimizers.Ftrl(
        learning_rate=cfg.linear_learning_rate,
        l1_regularization_strength=cfg.linear_l1,
        l2_regularization_strength=cfg.linear_l2,
        name="wide_ftrl",
    )
    adagrad = keras.optimizers.Adagrad(learning_rate=cfg.dnn_learning_rate, name="deep_adagrad")
    optimizer_map = keras.optimizers.OptimizerMap(
        default_optimizer=adagrad, optimizer_map={"wide/.*": ftrl, "deep/.*": adagrad}
    )
    model.compile(
        optimizer=keras.optimizers.MultiOptimizer(optimizer_map, name="wide_deep"),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[
            keras.metrics.AUC(num_thresholds=2000, name="auc"),
            keras.metrics.BinaryAccuracy(name="accuracy"),
        ],
    )


def build_tf_keras_model(features, cfg, optimizers: str):
    """tf_keras.experimental.WideDeepModel with wdl_tf's architecture and optimizers.

    Wide: `LinearModel(units=1)` over one one-hot SparseTensor [B, size] per wide id feature
    (its Dense kernels are [size, 1] tables looked up by `embedding_lookup_sparse`: one weight
    per id, sparse gradients, zero init, one bias). Deep: a functional tf_keras model with
    `Embedding(size, dim)` (normal init, stddev 1/√dim) per categorical, concatenated with the
    normalized numerics, ReLU layers (Glorot uniform) and a bias-free logit; sigmoid of the
    sum. FTRL (L1, L2) for the linear model, AdaGrad for the DNN, as ``optimizer=[...]``.
    """
    import tf_keras

    deep = [f for f in features if f.deep]
    inputs, parts = {}, []
    for i, f in enumerate(deep):
        if f.kind == "dense":
            inputs[f.name] = tf_keras.Input((1,), dtype="float32", name=f.name)
            parts.append(inputs[f.name])
        elif f.kind == "ids":
            dim = cfg.embedding_dim or f.embedding_dim
            inputs[f.name] = tf_keras.Input((1,), dtype="int64", name=f.name)
            embedded = tf_keras.layers.Embedding(
                f.size,
                dim,
                embeddings_initializer=tf_keras.initializers.RandomNormal(
                    stddev=dim**-0.5, seed=cfg.seed + 1000 + i
                ),
                name=f"emb_{f.name}",
            )(inputs[f.name])
            parts.append(tf_keras.layers.Flatten()(embedded))
        else:
            raise ValueError(f"{f.name}: kind {f.kind} is not supported by this benchmark")
    h = tf_keras.layers.Concatenate()(parts)
    for i, units in enumerate(cfg.hidden_units):
        h = tf_keras.layers.Dense(
            units,
            activation="relu",
            kernel_initializer=tf_keras.initializers.GlorotUniform(seed=cfg.seed + i),
            name=f"hidden_{i}",
        )(h)
    logit = tf_keras.layers.Dense(
        1,
        use_bias=False,
        kernel_initializer=tf_keras.initializers.GlorotUniform(
            seed=cfg.seed + len(cfg.hidden_units)
        ),
        name="logit",
    )(h)
    dnn = tf_keras.Model(inputs, logit, name="dnn")
    linear = tf_keras.experimental.LinearModel(units=1, use_bias=True, name="linear")
    model = tf_keras.experimental.WideDeepModel(linear, dnn, activation="sigmoid")
    opt = tf_keras.optimizers.legacy if optimizers == "legacy" else tf_keras.optimizers
    model.compile(
        optimizer=[
            opt.Ftrl(
                learning_rate=cfg.linear_learning_rate,
                l1_regularization_strength=cfg.linear_l1,
                l2_regularization_strength=cfg.linear_l2,
            ),
            opt.Adagrad(learning_rate=cfg.dnn_learning_rate),
        ],
        loss=tf_keras.losses.BinaryCrossentropy(),
        metrics=[
            tf_keras.metrics.AUC(num_thresholds=2000, name="auc"),
            tf_keras.metrics.BinaryAccuracy(name="accuracy"),
        ],
    )
    return model


def wide_deep_inputs(features):
    """A dataset map: encoded batch → ((linear inputs, dnn inputs), label) for WideDeepModel;
    each wide id feature becomes a one-hot SparseTensor [B, size]."""
    import tensorflow as tf

    wide = [f for f in features if f.wide]
    deep = [f for f in features if f.deep]

    def convert(x, y):
        linear = {}
        for f in wide:
            if f.kind == "dense":
                linear[f.name] = x[f.name]
                continue
            if f.kind != "ids":
                raise ValueError(f"{f.name}: kind {f.kind} is not supported by this benchmark")
            ids = tf.reshape(x[f.name], [-1])
            n = tf.shape(ids, out_type=tf.int64)[0]
            linear[f.name] = tf.SparseTensor(
                indices=tf.stack([tf.range(n), ids], axis=1),
                values=tf.ones_like(ids, tf.float32),
                dense_shape=tf.stack([n, tf.constant(f.size, tf.int64)]),
            )
        return (linear, {f.name: x[f.name] for f in deep}), y

    return convert


def _count_params(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def run_training_config(job: dict) -> dict:
    """Builds one configuration, trains it on the cached batches and times it."""
    import tensorflow as tf

    from wdl_tf import model as model_lib
    from wdl_tf import preprocessing as pp

    impl, hb = job["implementation"], job["hash_buckets"]
    result: dict[str, Any] = {"implementation": impl, "hash_buckets": hb, "notes": []}
    spec = job_spec(job)
    state = pp.PreprocessingState.load(job["state_dir"])
    features = pp.FeaturePreprocessor(spec, state).encoded_features
    cfg = model_lib.ModelConfig(
        hidden_units=tuple(job["hidden_units"]), embedding_dim=job["embedding_dim"]
    )
    ds = tf.data.Dataset.load(job["encoded_dir"])

    t = time.perf_counter()
    if impl == "tf_keras":
        try:
            import tf_keras
        except Exception as e:  # noqa: BLE001 - report why, keep the other results
            return {**result, "status": "n/a", "reason": f"tf_keras: {type(e).__name__}: {e}"}
        model = build_tf_keras_model(features, cfg, job["tf_keras_optimizers"])
        ds = ds.map(wide_deep_inputs(features))
        callback_base = tf_keras.callbacks.Callback
        result["notes"].append(
            f"tf_keras {tf_keras.__version__}, {job['tf_keras_optimizers']} optimizers"
        )
    else:
        import keras

        model = model_lib.build_model(features, cfg)
        if impl == "wdl_tf":
            model_lib.compile_model(model, cfg)
        else:
            compile_stock(model, cfg)
        callback_base = keras.callbacks.Callback
    result["build_s"] = time.perf_counter() - t

    t = time.perf_counter()
    ds = ds.cache()
    for _ in ds:  # fill the in-memory cache before any timing
        pass
    ds = ds.repeat().prefetch(tf.data.AUTOTUNE)
    result["cache_fill_s"] = time.perf_counter() - t

    timer_cls = window_timer(callback_base)
    timer = timer_cls(job)
    fit = dict(epochs=1, steps_per_epoch=10**9, callbacks=[timer], verbose=0)
    result["jit_compile"] = bool(getattr(model, "jit_compile", False))
    try:
        model.fit(ds, **fit)
    except Exception as e:  # noqa: BLE001
        if not (impl != "tf_keras" and model.jit_compile):
            raise
        # Keras 3 turns XLA on for models on a GPU ("auto"); retry without it, and say so.
        result["notes"].append(
            f"XLA failed ({type(e).__name__}: {str(e)[:200]}); ran jit_compile=False"
        )
        model.jit_compile = False
        model.train_function = None
        result["jit_compile"] = False
        timer = timer_cls(job)
        model.fit(ds, callbacks=[timer], **{k: v for k, v in fit.items() if k != "callbacks"})
    result.update(timer.result(job["batch_size"]))
    result["params"] = _count_params(model.trainable_variables)
    result["status"] = "ok"
    rss = peak_rss()
    result["peak_rss_mib"] = rss["vmhwm_mib"] or rss["ru_maxrss_mib"]
    result["ru_maxrss_mib"] = rss["ru_maxrss_mib"]
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        info = tf.config.experimental.get_memory_info("GPU:0")
        result["gpu_peak_mib"] = info["peak"] / 2**20
    return result


def _tail(text: str, n: int = 1500) -> str:
    return text[-n:].strip()


def run_config_subprocess(job: dict, timeout: int, log_dir: str) -> dict:
    """One configuration in a fresh Python process (so RSS and TF state are its own)."""
    base = {"implementation": job["implementation"], "hash_buckets": job["hash_buckets"]}
    name = f"{job['implementation']}_hb{job['hash_buckets']}"
    job_path = os.path.join(log_dir, f"{name}.job.json")
    job = {**job, "result_path": os.path.join(log_dir, f"{name}.result.json")}
    with open(job_path, "w") as f:
        json.dump(job, f)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, os.path.abspath(__file__), f"--worker={job_path}"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**base, "status": "failed", "reason": f"timed out after {timeout} s"}
    wall = time.perf_counter() - start
    with open(os.path.join(log_dir, f"{name}.log"), "w") as f:
        f.write(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not os.path.exists(job["result_path"]):
        reason = f"exit {proc.returncode}"
        if proc.returncode < 0:
            reason += " (killed by a signal; out of memory?)"
        return {**base, "status": "failed", "reason": reason, "stderr_tail": _tail(proc.stderr)}
    with open(job["result_path"]) as f:
        result = json.load(f)
    result["process_wall_s"] = wall
    return result


def training_jobs(settings: Settings, data: dict) -> list[dict]:
    jobs = []
    for hb in settings.hash_buckets:
        for impl in settings.implementations:
            jobs.append(
                {
                    "implementation": impl,
                    "hash_buckets": hb,
                    "encoded_dir": data["encoded"][str(hb)],
                    "state_dir": data["state_dir"],
                    "batch_size": settings.batch_size,
                    "hidden_units": list(settings.hidden_units),
                    "embedding_dim": settings.embedding_dim,
                    "numeric_features": settings.numeric_features,
                    "categorical_features": settings.categorical_features,
                    "tf_keras_optimizers": settings.tf_keras_optimizers,
                    "warmup_steps": settings.warmup_steps,
                    "warmup_seconds": settings.warmup_seconds,
                    "window_steps": settings.window_steps,
                    "min_windows": settings.min_windows,
                    "max_windows": settings.max_windows,
                    "train_seconds": settings.train_seconds,
                }
            )
    return jobs


def bench_training(settings: Settings, data: dict) -> dict[str, Any]:
    log_dir = os.path.join(os.path.abspath(settings.data_dir), "logs")
    os.makedirs(log_dir, exist_ok=True)
    results = []
    for job in training_jobs(settings, data):
        print(f"  training {job['implementation']} at {job['hash_buckets']} buckets", flush=True)
        if settings.isolate:
            result = run_config_subprocess(job, settings.config_timeout, log_dir)
        else:
            base = {"implementation": job["implementation"], "hash_buckets": job["hash_buckets"]}
            try:
                result = run_training_config(job)
                result["notes"].append("in-process (not isolated): peak RSS is cumulative")
            except Exception as e:  # noqa: BLE001 - one failed configuration is reported
                result = {**base, "status": "failed", "reason": f"{type(e).__name__}: {e}"}
        results.append(result)
    feeding = (
        f"all configurations train on the same {settings.train_batches} encoded batches of "
        f"{settings.batch_size}: make_dataset over the TFRecord shards (parse + preprocess), "
        "saved once with tf.data.Dataset.save, then in each process loaded, cached in memory "
        "(filled before timing), repeated and prefetched; tf_keras's one-hot SparseTensors "
        "are made before the cache"
    )
    windows = (
        f"a Keras callback timestamps every batch end (fetching the loss, which waits for "
        f"the step); {settings.warmup_steps} warm-up steps (fewer, at least 2, once they take "
        f"{settings.warmup_seconds:g} s; the first one traces); then timed steps until "
        f"{settings.window_steps} × {settings.max_windows} steps or {settings.train_seconds:g} s "
        f"(at least {settings.min_windows} steps), cut into windows of {settings.window_steps} "
        f"steps (fewer when the timed steps are too few for {settings.min_windows} windows); "
        "median of the windows' examples/s"
    )
    return {
        "feeding": feeding,
        "windows": windows,
        "isolated": settings.isolate,
        "log_dir": log_dir,
        "results": results,
    }


# ----------------------------------------------------------------------------------------
# 4. Roofline, and the report.


def mlp_flops(settings: Settings, data: dict) -> dict[str, Any]:
    """FLOPs per example of the deep part's dense layers, from the encoded input width."""
    from wdl_tf import preprocessing as pp

    state = pp.PreprocessingState.load(data["state_dir"])
    features = pp.FeaturePreprocessor(
        settings.spec(settings.hash_buckets[0]), state
    ).encoded_features
    deep = [f for f in features if f.deep]
    numeric = sum(1 for f in deep if f.kind == "dense")
    embedded = sum(settings.embedding_dim for f in deep if f.kind != "dense")
    widths = [numeric + embedded, *settings.hidden_units, 1]
    forward = 2 * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    return {
        "input_width": widths[0],
        "input_width_formula": f"{numeric} numerics + {len(deep) - numeric} × "
        f"{settings.embedding_dim}-d embeddings",
        "layers": widths,
        "forward_flops_per_example": forward,
        "train_flops_per_example": 3 * forward,
        "formula": "forward = 2·Σ in·out over the dense layers "
        + " → ".join(map(str, widths))
        + "; training ≈ 3 × forward (forward, input gradient, weight gradient); embedding "
        "lookups, the wide part and the optimizer updates are not counted",
    }


def summarize(report: dict) -> None:
    """Adds the derived numbers: pipeline/training ratios and the roofline fractions."""
    roof = report["roofline"]
    limit = roof["gflops"] * 1e9 / roof["train_flops_per_example"]
    roof["limit_examples_per_s"] = limit
    roof["limit_examples_per_s_median"] = (
        roof["gflops_median"] * 1e9 / roof["train_flops_per_example"]
    )
    roof["achieved"] = []
    for r in report["end_to_end"]["results"]:
        if r.get("status") == "ok":
            r["fraction_of_mlp_limit"] = r["examples_per_s"] / limit
            roof["achieved"].append(
                {
                    "implementation": r["implementation"],
                    "hash_buckets": r["hash_buckets"],
                    "examples_per_s": r["examples_per_s"],
                    "fraction": r["fraction_of_mlp_limit"],
                }
            )
    pipe = report["input_pipeline"]
    pipe["ratios"] = []
    for r in report["end_to_end"]["results"]:
        if r["implementation"] == "wdl_tf" and r.get("status") == "ok":
            pipe["ratios"].append(
                {
                    "hash_buckets": r["hash_buckets"],
                    "train_examples_per_s": r["examples_per_s"],
                    "csv_ratio": pipe["csv"]["examples_per_s"] / r["examples_per_s"],
                    "tfrecord_ratio": pipe["tfrecord"]["examples_per_s"] / r["examples_per_s"],
                }
            )
    pipe["target_ratio"] = PIPELINE_TARGET_RATIO
    mem = report["memory"]
    mem["per_config"] = [
        {
            "implementation": r["implementation"],
            "hash_buckets": r["hash_buckets"],
            "peak_rss_mib": r.get("peak_rss_mib"),
            "ru_maxrss_mib": r.get("ru_maxrss_mib"),
            **({"gpu_peak_mib": r["gpu_peak_mib"]} if "gpu_peak_mib" in r else {}),
        }
        for r in report["end_to_end"]["results"]
    ]


def _fmt(x, digits: int = 0) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and digits == 0 and abs(x) < 100:
        digits = 2 if abs(x) < 10 else 1
    return f"{x:,.{digits}f}"


def _cfg(results, impl, hb):
    for r in results:
        if r["implementation"] == impl and r["hash_buckets"] == hb:
            return r
    return None


def _rate_cell(r) -> str:
    if r is None:
        return "—"
    if r.get("status") != "ok":
        return f"{r.get('status', 'failed')}: {r.get('reason', '')}".replace("|", "/")
    return f"{_fmt(r['examples_per_s'])} ({_fmt(max(r['window_examples_per_s']))})"


def _ratio(a, b, key) -> str:
    ok = a and b and a.get("status") == "ok" and b.get("status") == "ok"
    if not ok:
        return "n/a"
    return f"{key(a) / key(b):.2f}×"


def format_markdown(report: dict) -> str:
    meta, env = report["meta"], report["meta"]["environment"]
    lines = [
        f"# wdl_tf training benchmark — {env['device_name']}",
        "",
        f"- date: {meta['date']}; command: `{meta['command']}`"
        + ("; **--quick (tiny sizes, not representative)**" if meta["quick"] else ""),
        f"- CPU: {env['cpu_model']}, os.cpu_count() = {env['cpu_count']} "
        f"({env['cpus_usable']} usable), {env['memory_gib']} GiB RAM; load average "
        f"{env['load_average_start']} at start, {meta['load_average_end']} at the end",
        f"- devices: {', '.join(env['physical_devices'])}"
        + (
            f" ({', '.join(env['gpus'])}, TF32 {'on' if env['tensor_float_32'] else 'off'})"
            if env["gpus"]
            else ""
        ),
        f"- TensorFlow {env['tensorflow']}, Keras {env['keras']}, tf_keras {env['tf_keras']}, "
        f"Python {env['python']}; total {meta['total_seconds']:.0f} s "
        f"(by section: {meta['section_seconds']})",
        "",
    ]
    opt = report["optimizer_step"]
    lines += [
        "## 1. Optimizer step, ms (median)",
        "",
        "| table rows | FTRL wdl_tf | FTRL keras | speed-up | AdaGrad wdl_tf | AdaGrad keras "
        "| speed-up | unique ids / batch |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in opt["results"]:
        lines.append(
            f"| {r['rows']:,} | {_fmt(r['ftrl_wdl_tf_ms'])} | {_fmt(r['ftrl_keras_ms'])} "
            f"| {r['ftrl_speedup']:.1f}× | {_fmt(r['adagrad_wdl_tf_ms'])} "
            f"| {_fmt(r['adagrad_keras_ms'])} | {r['adagrad_speedup']:.1f}× "
            f"| {r['unique_ids_mean']:.0f} of {r['ids_per_batch']} |"
        )
    lines += ["", f"Method: {opt['method']}.", ""]

    e2e = report["end_to_end"]
    results = e2e["results"]
    st = meta["settings"]
    hbs = sorted({r["hash_buckets"] for r in results})
    impls = [i for i in IMPLEMENTATIONS if any(r["implementation"] == i for r in results)]
    lines += [
        "## 2. End-to-end training, examples/s (median of timed windows)",
        "",
        f"Model: {st['numeric_features']} numeric + {st['categorical_features']} categorical "
        f"features, {st['embedding_dim']}-d embeddings, ReLU "
        f"{'-'.join(map(str, st['hidden_units']))}, batch {st['batch_size']}; FTRL (wide) + "
        "AdaGrad (deep).",
        "",
        "| hash buckets / feature | "
        + " | ".join(IMPL_TITLES[i] for i in impls)
        + " | wdl_tf ÷ stock | wdl_tf ÷ tf_keras |",
        "|---:|" + "---:|" * (len(impls) + 2),
    ]
    median = lambda r: r["examples_per_s"]
    best = lambda r: max(r["window_examples_per_s"])
    for hb in hbs:
        ours = _cfg(results, "wdl_tf", hb)
        cells = [_rate_cell(_cfg(results, i, hb)) for i in impls]
        for other in ("keras_stock", "tf_keras"):
            r = _cfg(results, other, hb)
            cells.append(f"{_ratio(ours, r, median)} ({_ratio(ours, r, best)})")
        lines.append(f"| {hb:,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cells: median window (best window); ratios: of the medians (of the best windows). On a "
        "machine shared with other work the best window is the closest to the uncontended rate.",
        "",
        "| configuration | ex/s | window range | step ms | windows × steps | warm-up steps "
        "| first step s | build s | params | peak RSS MiB | % of MLP limit | notes |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        name = f"{IMPL_TITLES[r['implementation']]} @ {r['hash_buckets']:,}"
        if r.get("status") != "ok":
            lines.append(f"| {name} | {_rate_cell(r)} |" + " |" * 10)
            continue
        lines.append(
            f"| {name} | {_fmt(r['examples_per_s'])} "
            f"| {_fmt(min(r['window_examples_per_s']))}–{_fmt(max(r['window_examples_per_s']))} "
            f"| {_fmt(r['step_ms'], 1)} "
            f"| {r['windows']} × {r['window_steps']} | {r['warmup_steps']} "
            f"| {_fmt(r['first_step_s'], 1)} | {_fmt(r['build_s'], 1)} | {r['params']:,} "
            f"| {_fmt(r.get('peak_rss_mib'))} | {100 * r['fraction_of_mlp_limit']:.1f}% "
            f"| {'; '.join(r.get('notes', [])) or ''} |"
        )
    lines += [
        "",
        f"Feeding: {e2e['feeding']}.",
        "",
        f"Timing: {e2e['windows']}.",
        "",
        f"(c) {report['end_to_end']['tf_keras_build']}",
        "",
    ]

    pipe = report["input_pipeline"]
    lines += [
        "## 3. Input pipeline alone (read + parse + preprocess), examples/s",
        "",
        "| source | examples/s | "
        + " | ".join(f"÷ wdl_tf training @ {r['hash_buckets']:,}" for r in pipe["ratios"])
        + " | target |",
        "|---|---:|" + "---:|" * (len(pipe["ratios"]) + 1),
    ]
    for source in ("csv", "tfrecord"):
        ratios = [f"{r[f'{source}_ratio']:.1f}×" for r in pipe["ratios"]]
        lines.append(
            f"| {source.upper() if source == 'csv' else 'TFRecord'} "
            f"| {_fmt(pipe[source]['examples_per_s'])} | "
            + " | ".join(ratios)
            + f" | ≥ {PIPELINE_TARGET_RATIO:g}× |"
        )
    lines += [
        "",
        f"Method: {pipe['method']}. CSV → TFRecord conversion (`wdl_tf.tfrecord.convert`): "
        f"{_fmt(pipe['tfrecord_conversion_rows_per_s'])} rows/s.",
        "",
    ]

    roof = report["roofline"]
    lines += [
        "## 4. Roofline (MLP-bound limit)",
        "",
        "| matmul n | reps | median ms | GFLOP/s (median) | GFLOP/s (best) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for m in roof["matmul"]:
        lines.append(
            f"| {m['n']} | {m['reps']} | {_fmt(m['ms_median'], 2)} | {_fmt(m['gflops'], 1)} "
            f"| {_fmt(m['gflops_best'], 1)} |"
        )
    lines += [
        "",
        f"- measured float32 matmul: **{roof['gflops']:.1f} GFLOP/s** best, "
        f"{roof['gflops_median']:.1f} median ({roof['method']})",
        f"- MLP input width {roof['input_width']} ({roof['input_width_formula']}); "
        f"{roof['formula']}",
        f"- FLOPs per example: forward {roof['forward_flops_per_example']:,}, training "
        f"{roof['train_flops_per_example']:,}",
        f"- MLP-bound limit = GFLOP/s / training FLOPs per example = "
        f"**{roof['limit_examples_per_s']:,.0f} examples/s** (with the median GFLOP/s: "
        f"{roof['limit_examples_per_s_median']:,.0f})",
    ]
    for a in roof["achieved"]:
        lines.append(
            f"- {IMPL_TITLES[a['implementation']]} @ {a['hash_buckets']:,}: "
            f"{a['examples_per_s']:,.0f} examples/s = {100 * a['fraction']:.1f}% of the limit"
        )
    mem = report["memory"]
    lines += [
        "",
        "## 5. Peak memory",
        "",
        "| process | peak RSS MiB (VmHWM) | ru_maxrss MiB |",
        "|---|---:|---:|",
        "| this process (data preparation, sections 1, 3, 4) "
        f"| {_fmt(mem['parent_vmhwm_mib'])} | {_fmt(mem['parent_peak_rss_mib'])} |",
    ]
    for c in mem["per_config"]:
        gpu = f" (GPU peak {c['gpu_peak_mib']:,.0f} MiB)" if "gpu_peak_mib" in c else ""
        lines.append(
            f"| {IMPL_TITLES[c['implementation']]} @ {c['hash_buckets']:,}"
            f" | {_fmt(c['peak_rss_mib'])}{gpu} | {_fmt(c['ru_maxrss_mib'])} |"
        )
    lines += ["", f"Method: {mem['method']}.", ""]
    if not report["end_to_end"]["isolated"]:
        lines += ["Configurations ran in this process: their RSS is cumulative.", ""]
    return "\n".join(lines)


def tf_keras_description(settings: Settings) -> str:
    kind = (
        "tf_keras.optimizers.legacy.Ftrl/Adagrad (Keras 2's fused sparse kernels)"
        if settings.tf_keras_optimizers == "legacy"
        else "tf_keras.optimizers.Ftrl/Adagrad (its Ftrl applies sparse gradients densely)"
    )
    return (
        "tf_keras.experimental.WideDeepModel(LinearModel, DNN, activation='sigmoid'): the linear "
        "model is tf_keras.experimental.LinearModel(units=1) over one one-hot SparseTensor "
        f"[B, size] per wide id feature ({settings.numeric_features} numeric bucket ids, "
        f"{settings.categorical_features} categoricals, their crosses): its "
        "Dense kernels [size, 1] are read by embedding_lookup_sparse, i.e. one zero-initialized "
        "weight per id with sparse gradients, plus one bias; the DNN is a functional tf_keras "
        "model: Embedding(size, dim) per categorical (normal, stddev 1/√dim), concatenated with "
        f"the {settings.numeric_features} normalized numerics, Dense ReLU layers (Glorot "
        "uniform) and a bias-free logit. "
        f"compile(optimizer=[Ftrl(L1, L2), Adagrad]) with {kind}, same learning rates, binary "
        "cross-entropy, AUC and accuracy metrics. tf_keras's legacy Adagrad puts ε outside the "
        "square root (Keras 3 inside); otherwise the math is the same."
    )


def run_benchmark(settings: Settings) -> dict[str, Any]:
    start = time.perf_counter()
    configure_devices()
    report: dict[str, Any] = {
        "meta": {
            "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv]),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "quick": settings.quick,
            "settings": dataclasses.asdict(settings),
            "environment": environment(settings),
        }
    }
    print(f"devices: {report['meta']['environment']['physical_devices']}", flush=True)
    seconds = report["meta"]["section_seconds"] = {}

    def section(name, title, fn, *args):
        print(f"{title} ...", flush=True)
        t = time.perf_counter()
        out = fn(*args)
        seconds[name] = round(time.perf_counter() - t, 1)
        return out

    report["data"] = data = section("data", "preparing data", prepare_data, settings)
    report["optimizer_step"] = section(
        "optimizer_step", "1. optimizer steps", bench_optimizers, settings
    )
    report["roofline"] = {
        **section("roofline", "4. matmul", bench_matmul, settings),
        **mlp_flops(settings, data),
    }
    report["input_pipeline"] = section(
        "input_pipeline", "3. input pipeline", bench_input_pipeline, settings, data
    )
    report["end_to_end"] = section(
        "end_to_end", "2. end-to-end training", bench_training, settings, data
    )
    report["end_to_end"]["tf_keras_build"] = tf_keras_description(settings)
    rss = peak_rss()
    report["memory"] = {
        "parent_peak_rss_mib": rss["ru_maxrss_mib"],
        "parent_vmhwm_mib": rss["vmhwm_mib"],
        "children_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "method": "each process's peak RSS: VmHWM from /proc/self/status where available (it "
        "restarts at exec), and resource.getrusage(RUSAGE_SELF).ru_maxrss (which Linux carries "
        "over fork + exec, so a configuration's process reports at least this process's RSS "
        "at the time it was started)",
    }
    summarize(report)
    report["meta"]["load_average_end"] = load_average()
    report["meta"]["total_seconds"] = time.perf_counter() - start
    return report


def worker_main(job_path: str) -> None:
    configure_devices()
    with open(job_path) as f:
        job = json.load(f)
    result = run_training_config(job)
    with open(job["result_path"], "w") as f:
        json.dump(result, f)


def main(argv):
    del argv
    if FLAGS.worker:
        worker_main(FLAGS.worker)
        return
    settings = resolve_settings()
    report = run_benchmark(settings)
    markdown = format_markdown(report)
    print(markdown)
    if FLAGS.output_json:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output_json)), exist_ok=True)
        with open(FLAGS.output_json, "w") as f:
            json.dump(report, f, indent=1)
    if FLAGS.output_md:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output_md)), exist_ok=True)
        with open(FLAGS.output_md, "w") as f:
            f.write(markdown + "\n")


if __name__ == "__main__":
    define_flags()
    app.run(main)
