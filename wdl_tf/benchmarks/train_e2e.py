"""End-to-end training speed of one configuration (implementation × hash buckets).

Each configuration runs in its own process by default (``python -m
wdl_tf.benchmarks.train_e2e JOB_FILE``), so its peak RSS and TensorFlow state are its own; all
read the same cached encoded batches (`train_data`) and are timed by a Keras callback over
windows of steps after a warm-up.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

from wdl_tf import startup
from wdl_tf.benchmarks import baselines
from wdl_tf.benchmarks.env import configure_devices, peak_rss
from wdl_tf.benchmarks.train_settings import BF16_SUFFIX, Settings, job_spec


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


def _count_params(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


class Unavailable(Exception):
    """An implementation that cannot run here (tf_keras not installed): reported as n/a."""


def build_model_for(impl: str, features, cfg, job: dict, notes: list[str]):
    """(compiled model, map from encoded batches to its inputs or None, its Callback base
    class) for ``impl``: ``wdl_tf``, ``stock`` (the same model with stock Keras optimizers)
    or ``tf_keras`` (`WideDeepModel`); raises `Unavailable` when tf_keras cannot be
    imported. Shared by the pre-encoded and the from-files workers. ``<impl>_bf16``: the
    same with ``cfg.hidden_dtype="mixed_bfloat16"``."""
    if impl.endswith(BF16_SUFFIX):
        impl = impl.removesuffix(BF16_SUFFIX)
        cfg = dataclasses.replace(cfg, hidden_dtype="mixed_bfloat16")
    if impl == "tf_keras":
        try:
            import tf_keras
        except Exception as e:  # noqa: BLE001 - report why, keep the other results
            raise Unavailable(f"tf_keras: {type(e).__name__}: {e}") from e
        model = baselines.build_tf_keras_model(features, cfg, job["tf_keras_optimizers"])
        notes.append(f"tf_keras {tf_keras.__version__}, {job['tf_keras_optimizers']} optimizers")
        return model, baselines.wide_deep_inputs(features), tf_keras.callbacks.Callback
    import keras

    from wdl_tf import model as model_lib

    model = model_lib.build_model(features, cfg)
    if impl == "wdl_tf":
        model_lib.compile_model(model, cfg)
    else:
        baselines.compile_stock(model, cfg)
    return model, None, keras.callbacks.Callback


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
    try:
        model, to_inputs, callback_base = build_model_for(impl, features, cfg, job, result["notes"])
    except Unavailable as e:
        return {**result, "status": "n/a", "reason": str(e)}
    if to_inputs is not None:
        ds = ds.map(to_inputs)
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
        if not (impl.removesuffix(BF16_SUFFIX) != "tf_keras" and model.jit_compile):
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


def run_config_subprocess(
    job: dict, timeout: int, log_dir: str, module: str = "wdl_tf.benchmarks.train_e2e"
) -> dict:
    """One configuration in a fresh Python process (so RSS and TF state are its own):
    ``python -m <module> JOB_FILE``, whose ``worker_main`` writes the result file."""
    base = {"implementation": job["implementation"], "hash_buckets": job["hash_buckets"]}
    name = f"{module.rsplit('.', 1)[-1]}_{job['implementation']}_hb{job['hash_buckets']}"
    job_path = os.path.join(log_dir, f"{name}.job.json")
    job = {**job, "result_path": os.path.join(log_dir, f"{name}.result.json")}
    with open(job_path, "w") as f:
        json.dump(job, f)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", module, job_path]  # its worker_main
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


def run_configs(
    settings: Settings,
    jobs: list[dict],
    run,
    label: str,
    module: str = "wdl_tf.benchmarks.train_e2e",
    timeout: int | None = None,
) -> list[dict]:
    """Each job's result: ``python -m <module>`` in its own process (``settings.isolate``),
    else ``run(job)`` here; a configuration that fails is reported, not raised."""
    log_dir = os.path.join(os.path.abspath(settings.data_dir), "logs")
    os.makedirs(log_dir, exist_ok=True)
    results = []
    for job in jobs:
        print(f"  {label}: {job['implementation']} at {job['hash_buckets']} buckets", flush=True)
        if settings.isolate:
            timeout_s = timeout or settings.config_timeout
            result = run_config_subprocess(job, timeout_s, log_dir, module=module)
        else:
            base = {"implementation": job["implementation"], "hash_buckets": job["hash_buckets"]}
            try:
                result = run(job)
                result["notes"].append("in-process (not isolated): peak RSS is cumulative")
            except Exception as e:  # noqa: BLE001 - one failed configuration is reported
                result = {**base, "status": "failed", "reason": f"{type(e).__name__}: {e}"}
        results.append(result)
    return results


def bench_training(settings: Settings, data: dict) -> dict[str, Any]:
    log_dir = os.path.join(os.path.abspath(settings.data_dir), "logs")
    jobs = training_jobs(settings, data)
    results = run_configs(settings, jobs, run_training_config, "training")
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


def worker_main(job_path: str, run=None) -> None:
    """Runs the configuration of a job file with ``run`` (default: `run_training_config`)
    and writes its result where the job says: the body of every isolated worker process."""
    configure_devices()
    with open(job_path) as f:
        job = json.load(f)
    result = (run or run_training_config)(job)
    with open(job["result_path"], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    startup.skip_keras_extras()  # before TensorFlow loads
    worker_main(sys.argv[1])
