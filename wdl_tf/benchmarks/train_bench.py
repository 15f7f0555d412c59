"""Training-speed benchmark: optimizers, end-to-end examples/s, input pipeline, roofline, memory.

One run reports, side by side:

1. Optimizer step time on a [rows, 1] float32 table with a sparse (IndexedSlices) gradient of a
   Zipf batch of ids: wdl_tf's sparse-aware Ftrl/Adagrad vs stock ``keras.optimizers``.
2. End-to-end training examples/s on the Criteo-shaped model (13 numeric + 26 categorical,
   32-d embeddings, ReLU 1024-512-256, batch 1024) at each hash-bucket count, for (a) wdl_tf
   (`model.compile_model`), (b) the same model with stock Keras 3 optimizers in the same
   MultiOptimizer/OptimizerMap, (c) tf_keras's ``WideDeepModel`` of the same architecture
   (`baselines`). Each configuration runs in its own subprocess (`train_e2e`), all three
   read the same pre-materialized encoded batches (`train_data`), and a Keras callback times
   windows of steps after a warm-up.
3. The input pipeline alone (`input_pipeline.make_dataset`: parse + preprocess) from CSV and
   TFRecord, and its ratio to the wdl_tf training rate.
4. The roofline: measured float32 matmul GFLOP/s, the MLP's FLOPs per training example, the
   MLP-bound examples/s and the share of it that training reaches.
5. Peak memory of each configuration's process (and of this one): ``VmHWM`` and
   ``resource.getrusage(RUSAGE_SELF).ru_maxrss``.
6. Training from files as train.py does (`train_files`): CSV, gzip CSV and TFRecord, per
   epoch, uncached and with the encoded cache, against the pre-encoded rate.

``Settings.sections`` picks which of 1-4 and 6 run (5 reports whatever ran).

The Markdown of the report is `train_report`'s.
"""

from __future__ import annotations

import dataclasses
import datetime
import statistics
import time
from typing import Any

import numpy as np

from wdl_tf.benchmarks import env, train_e2e, train_files
from wdl_tf.benchmarks.baselines import tf_keras_description
from wdl_tf.benchmarks.train_data import prepare_data
from wdl_tf.benchmarks.train_settings import BF16_SUFFIX, PIPELINE_TARGET_RATIO, Settings

ZIPF_EXPONENT = 1.2  # as wdl_tf.datasets.criteo draws its categorical ranks


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
    for dtype, n in [(d, n) for d in (tf.float32, tf.bfloat16) for n in settings.matmul_sizes]:
        a = tf.cast(tf.random.normal((n, n)), dtype)
        b = tf.cast(tf.random.normal((n, n)), dtype)
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
                "dtype": dtype.name,
                "n": n,
                "reps": len(times),
                "ms_median": 1e3 * median,
                "gflops": 2 * n**3 / median / 1e9,
                "gflops_best": 2 * n**3 / best / 1e9,
            }
        )
    full = [r for r in results if r["dtype"] == "float32"]
    half = [r for r in results if r["dtype"] == "bfloat16"]
    return {
        "matmul": results,
        "gflops": max(r["gflops_best"] for r in full),
        "gflops_median": max(r["gflops"] for r in full),
        "gflops_bf16": max(r["gflops_best"] for r in half),
        "gflops_bf16_median": max(r["gflops"] for r in half),
        "method": "tf.matmul of two n×n float32 (and bfloat16) matrices in a tf.function, "
        f"repeated for {settings.matmul_seconds:g} s (at least 3 times) per size; the roofline "
        "uses the best single product of any size (the attainable peak: on a shared machine "
        "the median also measures the other processes), the median-based limit is given too; "
        "the bfloat16 configurations are set against the bfloat16 products",
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
# 4 (second half). The MLP's FLOPs, and the derived numbers.


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
    """Adds the derived numbers of the sections that ran: pipeline/training ratios, the
    roofline fractions, each configuration's memory."""
    e2e = report.get("end_to_end", {}).get("results", [])
    roof = report.get("roofline")
    if roof:
        flops = roof["train_flops_per_example"]
        roof["limit_examples_per_s"] = roof["gflops"] * 1e9 / flops
        roof["limit_examples_per_s_median"] = roof["gflops_median"] * 1e9 / flops
        roof["limit_examples_per_s_bf16"] = roof["gflops_bf16"] * 1e9 / flops
        roof["achieved"] = []
        for r in e2e:
            if r.get("status") == "ok":
                bf16 = r["implementation"].endswith(BF16_SUFFIX)
                limit = roof["limit_examples_per_s_bf16" if bf16 else "limit_examples_per_s"]
                r["fraction_of_mlp_limit"] = r["examples_per_s"] / limit
                roof["achieved"].append(
                    {
                        "implementation": r["implementation"],
                        "hash_buckets": r["hash_buckets"],
                        "examples_per_s": r["examples_per_s"],
                        "fraction": r["fraction_of_mlp_limit"],
                    }
                )
    pipe = report.get("input_pipeline")
    if pipe:
        pipe["ratios"] = []
        for r in e2e:
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
    configs = [("", r) for r in e2e] + [
        ("from files: ", r) for r in report.get("from_files", {}).get("results", [])
    ]
    report["memory"]["per_config"] = [
        {
            "implementation": r["implementation"],
            "label": label,
            "hash_buckets": r["hash_buckets"],
            "peak_rss_mib": r.get("peak_rss_mib"),
            "ru_maxrss_mib": r.get("ru_maxrss_mib"),
            **({"gpu_peak_mib": r["gpu_peak_mib"]} if "gpu_peak_mib" in r else {}),
        }
        for label, r in configs
    ]


def run_benchmark(settings: Settings) -> dict[str, Any]:
    start = time.perf_counter()
    env.configure_devices()
    report: dict[str, Any] = {
        "meta": {
            "command": env.command_line("python"),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "quick": settings.quick,
            "settings": dataclasses.asdict(settings),
            "environment": env.environment(settings.device_name),
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
    run = set(settings.sections)
    if "optimizer_step" in run:
        report["optimizer_step"] = section(
            "optimizer_step", "1. optimizer steps", bench_optimizers, settings
        )
    if "roofline" in run:
        report["roofline"] = {
            **section("roofline", "4. matmul", bench_matmul, settings),
            **mlp_flops(settings, data),
        }
    if "input_pipeline" in run:
        report["input_pipeline"] = section(
            "input_pipeline", "3. input pipeline", bench_input_pipeline, settings, data
        )
    if "end_to_end" in run:
        report["end_to_end"] = section(
            "end_to_end", "2. end-to-end training", train_e2e.bench_training, settings, data
        )
    if "end_to_end" in run or "from_files" in run:
        report["tf_keras_build"] = tf_keras_description(settings)
    if "from_files" in run:
        report["from_files"] = section(
            "from_files", "6. training from files", train_files.bench_from_files, settings, data
        )
    rss = env.peak_rss()
    report["memory"] = {
        "parent_peak_rss_mib": rss["ru_maxrss_mib"],
        "parent_vmhwm_mib": rss["vmhwm_mib"],
        "children_peak_rss_mib": env.children_peak_rss_mib(),
        "method": "each process's peak RSS: VmHWM from /proc/self/status where available (it "
        "restarts at exec), and resource.getrusage(RUSAGE_SELF).ru_maxrss (which Linux carries "
        "over fork + exec, so a configuration's process reports at least this process's RSS "
        "at the time it was started)",
    }
    summarize(report)
    report["meta"]["load_average_end"] = env.load_average()
    report["meta"]["total_seconds"] = time.perf_counter() - start
    return report
