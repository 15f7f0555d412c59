"""tf.distribute: TF_CONFIG and strategies, input sharding, multi-worker training on loopback
(launcher), a worker killed and restarted, MirroredStrategy on two logical CPUs, bad input,
table memory, and the parameter-server prototype.

Multi-process tests run real `scripts/train.py` workers with the tiny synthetic census twin
and a 3-feature spec (few variables: each one is an all-reduce per step on 2 CPU cores).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from helpers import ROOT, run_script, script

from wdl_tf import (
    checkpoints,
    cluster,
    distribute,
    export_lib,
    export_versions,
    input_pipeline,
    train_lib,
)
from wdl_tf import config as config_lib
from wdl_tf import features as fs

LAUNCH = script("launch_local_cluster")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
ENV.pop("TF_CONFIG", None)

# Two workers vs one: the same rows in every global batch (row sharding, no shuffling), the
# same initial weights (seeded), the same summed gradient; only the order of float additions
# differs (all-reduce vs one batch). Measured: |Δ log loss| ≈ 4e-9, AUC equal.
METRIC_TOL = 1e-6
EPOCHS, ROWS, BATCH, EVERY = 2, 600, 64, 3
STEPS_PER_EPOCH = -(-ROWS // BATCH)  # 10


@pytest.fixture(scope="module")
def small_spec(tmp_path_factory) -> str:
    """The census spec cut to age, education, occupation and one cross."""
    spec = json.load(open(os.path.join(ROOT, "wdl_tf", "specs", "census.json")))
    spec["name"] = "census_small"
    spec["features"] = [
        f for f in spec["features"] if f["name"] in ("age", "education", "occupation")
    ]
    for f in spec["features"]:
        if f["name"] == "occupation":
            f["hash_buckets"] = 100
    spec["crosses"] = [{"features": ["education", "occupation"], "hash_buckets": 100}]
    path = tmp_path_factory.mktemp("spec") / "small.json"
    path.write_text(json.dumps(spec))
    return str(path)


def _config(spec_path: str, model_dir: str, **overrides) -> config_lib.TrainConfig:
    return config_lib.preset(
        "test",
        data=config_lib.DataConfig(
            dataset="census_synthetic",
            feature_spec=spec_path,
            synthetic_rows=ROWS,
            batch_size=BATCH,
            shuffle_buffer=1,
            # No validation split: the kept epoch would then be chosen by a validation AUC
            # of 60 rows, whose rank ties the all-reduce's float order can break either way.
            validation_fraction=0.0,
        ),
        # Weight averaging is single-process only: off, so one process matches two workers.
        model=config_lib.ModelConfig(hidden_units=(8,), ema_momentum=0.0),
        epochs=EPOCHS,
        model_dir=model_dir,
        export_base="",
        **overrides,
    )


def _flags(spec_path: str, model_dir: str, export_base: str = "", *extra: str) -> list[str]:
    """The command-line twin of `_config`."""
    return [
        "--dataset=census_synthetic",
        f"--feature_spec={spec_path}",
        f"--synthetic_rows={ROWS}",
        f"--batch_size={BATCH}",
        "--shuffle_buffer=1",
        "--validation_fraction=0",
        "--hidden_units=8",
        "--ema_momentum=0",
        f"--epochs={EPOCHS}",
        "--verbose=2",
        f"--model_dir={model_dir}",
        f"--export_base={export_base}",
        *extra,
    ]


@pytest.fixture(scope="module")
def reference(small_spec, tmp_path_factory):
    """One process, no strategy, the same global batch: the metrics to match."""
    model_dir = str(tmp_path_factory.mktemp("one_worker") / "model")
    return train_lib.train_and_evaluate(_config(small_spec, model_dir)).metrics


def _assert_same_metrics(got: dict, expected: dict) -> None:
    for key in ("auc", "log_loss", "mean_prediction"):
        assert abs(got[key] - expected[key]) <= METRIC_TOL, (key, got[key], expected[key])
    # A prediction within 1e-6 of 0.5 could flip one example's class.
    assert abs(got["accuracy"] - expected["accuracy"]) <= 1 / expected["examples"]
    assert got["examples"] == expected["examples"]


# --------------------------------------------------------------------------------------------
# TF_CONFIG, strategies, sharding plans (no TensorFlow runtime needed)


def _tf_config(cluster, task) -> str:
    return json.dumps({"cluster": cluster, "task": task})


def test_tf_config_ranks_chief_first():
    jobs = {"chief": ["h0:1"], "worker": ["h1:1", "h2:1"]}
    chief = cluster.parse_tf_config(_tf_config(jobs, {"type": "chief", "index": 0}))
    w1 = cluster.parse_tf_config(_tf_config(jobs, {"type": "worker", "index": 1}))
    assert (chief.num_workers, chief.worker_index, chief.is_chief) == (3, 0, True)
    assert (w1.worker_index, w1.is_chief) == (2, False)
    only_workers = cluster.parse_tf_config(
        _tf_config({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 0})
    )
    assert only_workers.is_chief and only_workers.num_workers == 2


def test_auto_distribution_follows_tf_config():
    assert cluster.resolve("auto", {}) == ("none", cluster.Task())
    env = {"TF_CONFIG": _tf_config({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 1})}
    kind, task = cluster.resolve("auto", env)
    assert kind == "multi_worker_mirrored" and task.worker_index == 1
    with pytest.raises(ValueError, match="distribution='none' trains on one machine"):
        cluster.resolve("none", env)


def test_shard_plan_by_file_when_enough_files_else_by_row():
    two = cluster.Task(num_workers=2, worker_index=1)
    assert cluster.plan_shards("auto", ["a", "b", "c"], two) == cluster.ShardPlan("file", 2, 1)
    assert cluster.plan_shards("auto", ["a"], two) == cluster.ShardPlan("data", 2, 1)
    assert cluster.plan_shards("data", ["a", "b"], two).by == "data"
    assert cluster.plan_shards("file", ["a"], cluster.Task()) == cluster.ShardPlan()


def test_shards_are_disjoint_and_cover_the_data(tmp_path):
    spec = fs.load(os.path.join(ROOT, "wdl_tf", "specs", "census.json"))
    line = "{age}, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, "
    line += "White, Male, 2174, 0, 40, United-States, <=50K\n"
    files = []
    for i in range(3):
        path = tmp_path / f"part-{i}.csv"
        path.write_text("".join(line.format(age=20 + 10 * i + j) for j in range(7)))
        files.append(str(path))

    def ages(**shard):
        opts = input_pipeline.ReadOptions(batch_size=4, shuffle=True, seed=3, **shard)
        return [
            int(a) for x, _ in input_pipeline.read_raw(spec, files, opts) for a in x["age"][:, 0]
        ]

    everything = ages()
    for shard_files in (False, True):
        parts = [ages(num_shards=2, shard_index=i, shard_files=shard_files) for i in range(2)]
        assert sorted(parts[0] + parts[1]) == sorted(everything)
        assert not set(parts[0]) & set(parts[1])
        assert parts[0] == ages(num_shards=2, shard_index=0, shard_files=shard_files)  # seeded
    by_file = ages(num_shards=2, shard_index=1, shard_files=True)
    assert sorted(by_file) == list(range(30, 37))  # the second file, whole


# --------------------------------------------------------------------------------------------
# Bad input: clear errors before any training


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "TF_CONFIG has no 'cluster' object"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "TF_CONFIG has no 'task' object"),
        (
            _tf_config({"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, {"type": "worker", "index": 2}),
            "TF_CONFIG task index 2 is out of range: the cluster has 2 'worker' task",
        ),
        (
            _tf_config({"worker": ["localhost"]}, {"type": "worker", "index": 0}),
            "'localhost' is not 'host:port'",
        ),
        (
            _tf_config({"worker": ["a:1"], "ps": ["b:1"]}, {"type": "worker", "index": 0}),
            "parameter-server training needs a custom training loop",
        ),
    ],
)
def test_bad_tf_config_fails_before_training(small_spec, tmp_path, monkeypatch, tf_config, message):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    config = _config(small_spec, str(tmp_path / "model"))
    with pytest.raises(ValueError, match=re.escape(message)):
        train_lib.train_and_evaluate(config)
    assert not os.path.exists(tmp_path / "model" / "checkpoints")


def test_unknown_distribution_and_forced_file_sharding_fail_before_training(
    small_spec, tmp_path, monkeypatch
):
    config = _config(small_spec, str(tmp_path / "model"), distribution="tpu_pod")
    with pytest.raises(ValueError, match=r"distribution: unknown value 'tpu_pod'; allowed"):
        train_lib.train_and_evaluate(config)

    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    monkeypatch.setenv("TF_CONFIG", _tf_config(cluster, {"type": "worker", "index": 0}))
    config = _config(small_spec, str(tmp_path / "model"))
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, shard_policy="file"))
    with pytest.raises(
        ValueError,
        match=r"shard_policy=file needs at least one training file "
        r"per worker: 2 workers, 1 file\(s\)",
    ):
        train_lib.train_and_evaluate(config)
    assert not os.path.exists(tmp_path / "model" / "checkpoints")


@pytest.mark.slow
def test_cli_and_launcher_report_bad_input(tmp_path):
    env = dict(ENV, TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"index": 0}}')
    proc = run_script("train", f"--model_dir={tmp_path}/m", "--export_base=", env=env, timeout=120)
    assert proc.returncode == 2
    assert "error: TF_CONFIG task type: None is not a training task" in proc.stderr
    proc = run_script(
        "launch_local_cluster", "--workers=0", "--", "--epochs=1", env=ENV, timeout=60
    )
    assert proc.returncode == 2 and "--workers: must be >= 1, got 0" in proc.stderr


# --------------------------------------------------------------------------------------------
# Two workers on loopback vs one worker


def _launch(workers: int, flags: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    return run_script(
        "launch_local_cluster",
        f"--workers={workers}",
        "--grace_s=2",
        "--",
        *flags,
        env=ENV,
        timeout=timeout,
    )


@pytest.mark.slow
def test_two_workers_match_one_worker_with_the_same_global_batch(small_spec, reference, tmp_path):
    model_dir = str(tmp_path / "model")
    proc = _launch(2, _flags(small_spec, model_dir))
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "[worker 1] worker finished training" in proc.stdout
    assert "[worker 0] eval metrics" in proc.stdout
    metrics = json.load(open(os.path.join(model_dir, "metrics.json")))
    _assert_same_metrics(metrics, reference)
    # The non-chief wrote only to its temp dir, removed at the end.
    assert not [n for n in os.listdir(model_dir) if n.startswith("workertemp")]
    config = json.load(open(os.path.join(model_dir, "config.json")))
    assert config["distribution"] == "auto" and config["data"]["batch_size"] == BATCH


# --------------------------------------------------------------------------------------------
# A worker killed with SIGKILL mid-epoch; the cluster restarted


def _latest_step(checkpoint_dir: str) -> int | None:
    try:
        text = open(os.path.join(checkpoint_dir, "checkpoint")).read()
    except FileNotFoundError:
        return None
    match = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', text, re.M)
    return int(match.group(1)) if match else None


@pytest.mark.slow
def test_killed_worker_resumes_from_last_checkpoint_and_exports_once(
    small_spec, reference, tmp_path
):
    model_dir, export_base = str(tmp_path / "model"), str(tmp_path / "export")
    flags = _flags(small_spec, model_dir, export_base, f"--checkpoint_every_steps={EVERY}")
    ckpt_dir = os.path.join(model_dir, "checkpoints")
    proc = subprocess.Popen(
        [sys.executable, LAUNCH, "--workers=2", "--grace_s=2", "--", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=ENV,
        cwd=ROOT,
    )
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    killed_after = None
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:
        step = _latest_step(ckpt_dir)
        if step is not None and step >= EVERY and killed_after is None:
            pid = int(re.search(r"worker 1 pid=(\d+)", "".join(out)).group(1))
            os.kill(pid, signal.SIGKILL)  # mid-epoch: step 3 of 10
            killed_after = step
        time.sleep(0.02)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    log = "".join(out)
    assert killed_after is not None, log[-4000:]
    assert proc.returncode != 0 and "worker 1 exited with status -9" in log, log[-4000:]
    assert "a worker failed: stopping the others" in log
    resume_step = _latest_step(ckpt_dir)
    # The survivor cannot pass the next all-reduce alone: at most one more checkpoint.
    assert resume_step is not None and resume_step - killed_after < EVERY
    assert resume_step < EPOCHS * STEPS_PER_EPOCH
    assert not os.path.exists(export_base) or not export_versions.versions(export_base)

    rerun = _launch(2, flags)
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    assert export_versions.versions(export_base) == [1]  # exported once
    assert not [n for n in os.listdir(export_base) if n.startswith("temp-")]
    # No step lost or counted twice: the optimizer ran exactly the run's steps, and the
    # resumed run ends where an uninterrupted single worker does.
    final = tf.train.latest_checkpoint(ckpt_dir)
    position = json.load(open(final + ".position.json"))
    assert position == {
        "epoch": EPOCHS,
        "step_in_epoch": 0,
        "global_step": EPOCHS * STEPS_PER_EPOCH,
    }
    assert final.endswith(f"ckpt-{EPOCHS * STEPS_PER_EPOCH}")
    # Readers that know nothing of positions still restore the checkpoint exactly.
    spec = fs.load(os.path.join(model_dir, "feature_spec.json"))
    config = config_lib.TrainConfig.from_dict(
        json.load(open(os.path.join(model_dir, "config.json")))
    )
    _, model = train_lib.build_for_training(
        config, train_lib.pp.PreprocessingState.load(model_dir), spec
    )
    epoch = tf.Variable(0, dtype=tf.int64)
    checkpoints.make_checkpoint(model, epoch=epoch).restore(final).assert_consumed()
    assert int(epoch.numpy()) == EPOCHS
    _assert_same_metrics(json.load(open(os.path.join(model_dir, "metrics.json"))), reference)

    loaded = tf.saved_model.load(os.path.join(export_base, "1"))
    assert set(loaded.signatures) == {*export_lib.SIGNATURES, "explain"}
    raw = {f.name: tf.constant([[v]]) for f, v in zip(spec.features, (37.0, "Bachelors", "Sales"))}
    p = loaded.signatures["serving_default"](**raw)["probabilities"].numpy()
    assert p.shape == (1, 1) and 0.0 < float(p[0, 0]) < 1.0


class _Killed(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("steps_per_epoch, epoch, step", [(None, 0, 6), (4, 1, 2)])
def test_step_checkpoints_resume_mid_epoch_exactly_with_shuffling(
    small_spec, tmp_path, monkeypatch, steps_per_epoch, epoch, step
):
    """One process, shuffled data: interrupted after step 7 (checkpoint at 6, mid-epoch),
    rerun, and the result equals an uninterrupted run's: the resumed run trains the rest of
    the interrupted epoch on the very batches the interrupted run would have seen (one
    reshuffled stream with steps_per_epoch, one (seed, epoch)-shuffled pass without)."""

    def config(name):
        c = _config(small_spec, str(tmp_path / name), checkpoint_every_steps=EVERY)
        data = dataclasses.replace(c.data, shuffle_buffer=1000)
        return dataclasses.replace(c, data=data, steps_per_epoch=steps_per_epoch, epochs=2)

    straight = train_lib.train_and_evaluate(config("straight")).metrics

    original = checkpoints.EpochCheckpoint.on_train_batch_end

    def dying(self, batch, logs=None):
        original(self, batch, logs)
        if self.steps_done == 2 * EVERY + 1:
            raise _Killed

    monkeypatch.setattr(checkpoints.EpochCheckpoint, "on_train_batch_end", dying)
    with pytest.raises(_Killed):
        train_lib.train_and_evaluate(config("killed"))
    monkeypatch.setattr(checkpoints.EpochCheckpoint, "on_train_batch_end", original)
    ckpt_dir = tmp_path / "killed" / "checkpoints"
    assert tf.train.latest_checkpoint(str(ckpt_dir)).endswith(f"ckpt-{2 * EVERY}")
    position = json.load(open(ckpt_dir / f"ckpt-{2 * EVERY}.position.json"))
    assert position == {"epoch": epoch, "step_in_epoch": step, "global_step": 2 * EVERY}

    resumed = train_lib.train_and_evaluate(config("killed"))
    assert resumed.initial_epoch == epoch
    for key in ("auc", "log_loss", "accuracy"):
        assert resumed.metrics[key] == pytest.approx(straight[key], abs=1e-6), key


# --------------------------------------------------------------------------------------------
# MirroredStrategy on two logical CPUs: the first step equals no strategy's


MIRRORED = textwrap.dedent(
    """
    import json, os, sys
    from wdl_tf import startup
    startup.skip_keras_extras()
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from wdl_tf import config as config_lib, distribute, train_lib

    replicas = {}
    make_runtime = distribute.make_runtime
    def recording(kind, task):
        runtime = make_runtime(kind, task)
        replicas[kind] = runtime.replicas
        return runtime
    distribute.make_runtime = recording

    out = {}
    base = sys.argv[1]
    for kind in ("none", "mirrored"):
        config = config_lib.preset(
            "test", model_dir=os.path.join(base, kind), export_base="", epochs=1,
            steps_per_epoch=1, eval_steps=1, distribution=kind,
        )
        train_lib.train_and_evaluate(config)
        path = os.path.join(base, kind, "checkpoints", "ckpt-1")
        reader = tf.train.load_checkpoint(path)
        names = [n for n, _ in tf.train.list_variables(path)]
        out[kind] = {n: reader.get_tensor(n) for n in names if n.startswith(("model", "optim"))}
    diffs = {}
    for n, value in out["none"].items():
        diffs[n] = float(np.max(np.abs(value - out["mirrored"][n]))) if value.size else 0.0
    print("RESULT " + json.dumps({"replicas": replicas, "diffs": diffs,
                                  "keys_equal": sorted(out["none"]) == sorted(out["mirrored"])}))
    """
)


@pytest.mark.slow
def test_mirrored_two_logical_cpus_first_step_matches_no_strategy(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
        cwd=ROOT,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    assert result["replicas"] == {"none": 1, "mirrored": 2}
    assert result["keys_equal"]
    diffs = result["diffs"]
    # Weights and both sparse optimizers' slots (FTRL accumulator/linear, AdaGrad accumulator).
    for part in ("wide_ftrl", "deep_adagrad", "model/wide.", "model/deep."):
        assert any(part in k for k in diffs), part
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= 1e-6, (worst, diffs[worst])
    assert any("linear" in k for k in diffs) and any("accumulator" in k for k in diffs)


# --------------------------------------------------------------------------------------------
# Tables: bytes per row; the parameter-server prototype


def test_table_bytes_per_row_with_optimizer_slots(tmp_path):
    config = config_lib.preset("test", model_dir=str(tmp_path), export_base="")
    spec, train_files, _ = train_lib._resolve_data(config)
    state = train_lib.load_or_adapt(config, spec, train_files)
    _, model = train_lib.build_for_training(config, state, spec)
    tables = distribute.table_bytes(model)
    wide = tables["wide/education_X_occupation"]
    assert (wide["bytes_per_row"], wide["slots"]) == (12, ["accumulator", "linear"])
    emb = tables["deep/emb_occupation"]
    assert emb["columns"] == 32 and emb["bytes_per_row"] == 32 * (4 + 4)
    assert emb["slots"] == ["accumulator"]


@pytest.mark.slow
def test_parameter_server_prototype_matches_single_process():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "wdl_tf.experimental.ps_prototype",
            "--ps=2",
            "--workers=1",
            "--steps=10",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=ENV,
        cwd=ROOT,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    for table in ("wide", "emb"):  # each table split over both parameter servers
        devices = {device for device, _ in result["shards"][table]}
        assert devices == {f"/job:ps/replica:0/task:{i}/device:CPU:0" for i in range(2)}
    assert max(result["max_abs_diff"].values()) <= 1e-6
    assert result["max_loss_diff"] <= 1e-6
    assert np.isfinite(result["last_loss"])
