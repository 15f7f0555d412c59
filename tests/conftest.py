"""Suite-wide settings and the one tiny trained model that several test modules share.

Exports made during the suite run their pre-publish checks in the exporting process
(`export_lib.VERIFY_IN_PROCESS_ENV`): the same checks as the fresh process, without a new
interpreter and TensorFlow import per export. Subprocesses the tests start inherit it.
`tests/test_export.py` runs the fresh-process path itself.

``-m "not slow"`` is the quick loop: the ``slow`` marker is on tests that start subprocesses
or servers or train several models; the benchmark tests and those that use the session
server (``served``, in ``tests/serving/conftest.py``) get it here. Shared helpers (the
repository root, ``run_script``) are in ``tests/helpers.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from wdl_tf import startup

os.environ.setdefault("WDL_TF_VERIFY_IN_PROCESS", "1")  # export_lib.VERIFY_IN_PROCESS_ENV
# TensorFlow's oneDNN kernels and graph rewrites (on by default on x86) off for the workers
# and the subprocesses they start: the tests' models are tiny, where oneDNN gains nothing and
# its per-graph rewrite pass costs: a test-preset training plus export took 12.5 CPU-s
# without it against 16.4 with it (four alternating pairs, 2026-12-02). Every check is the
# same on either kernel set (tolerances, or both sides in one setting); the README's training
# command keeps TensorFlow's default in `tests/test_cli.py`. TF_ENABLE_ONEDNN_OPTS=1 runs the
# whole suite on oneDNN.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
# The workers start TensorFlow as the mains do: without Keras' scikit-learn, matplotlib and
# IPython integrations, which no test uses (wdl_tf/startup.py).
startup.skip_keras_extras()


# Slow without a marker of their own: tests that use one of these fixtures (directly or
# through another fixture), and every test in a benchmark test file (test_benchmark_*.py).
SLOW_FIXTURES = frozenset({"served"})


# The longest test files, longest first (two 2-core runs, 2026-12-02: 35-150 s each, the
# sum of their tests' wall times). They are handed to xdist workers first, so that no worker
# starts a long file when the others are nearly done (xdist's default, most tests first,
# left one worker alone for the last 80 s). `test_benchmark_quality.py` is one test that took
# 38 s in one run and 147 s in the other (three model types tuned and trained in process;
# alone, 40 s): it goes early, where a slow run of it overlaps other work instead of ending
# the suite alone, as it did in the 147 s run.
LONGEST_FILES = (
    "test_export.py",
    "test_distribute.py",
    "test_benchmark_quality.py",
    "test_train_lib.py",
    "test_tune.py",
    "test_benchmark_train.py",
    "test_continuous.py",
    "test_insights.py",
    "test_early_stopping.py",
    "test_census_tfds.py",
    "test_apps.py",
    "test_explain.py",
    "test_benchmark_serving.py",
    "test_multivalent_serving.py",
    "test_input_pipeline.py",
    "test_tfrecord.py",
    "test_cli.py",
    "test_movielens.py",
    "test_server.py",
)


def pytest_configure(config):
    # xdist's loadfile would otherwise hand out files by their number of tests, not in this
    # order (`pytest_collection_modifyitems`).
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items):
    for item in items:
        benchmark = os.path.basename(str(item.path)).startswith("test_benchmark_")
        if benchmark or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    # A stable sort: a file's tests stay together and in their order.
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.path)), len(rank)))


# Memory one worker may need at its peak: a worker with TensorFlow loaded (~1-2 GiB while
# it trains) plus the train.py or cluster subprocesses a test starts.
WORKER_GIB = 3


def _available_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


@pytest.hookimpl(optionalhook=True)  # an xdist hook: no error when xdist is not loaded
def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker more than there are cores, at most one per `WORKER_GIB` of
    available memory (``PYTEST_XDIST_AUTO_NUM_WORKERS`` overrides both). Many tests wait on
    a subprocess, a server or a file lock with the CPU idle; on 2 cores the suite took 762 s
    with 2 workers, 675 s with 3 and 705 s with 4 (one evening, same code)."""
    env = os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS")
    if env:
        return int(env)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = (cores or 1) + 1
    memory = _available_gib()
    if memory is not None:
        workers = min(workers, int(memory // WORKER_GIB))
    return max(1, workers)


@dataclasses.dataclass(frozen=True)
class TrainedExport:
    config: object  # the TrainConfig of the run
    export_path: str  # the published version (a SavedModel dir)
    metrics: dict


@pytest.fixture(scope="session")
def census_export(tmp_path_factory, worker_id) -> TrainedExport:
    """The ``test`` preset (census twin, 2,000 rows, hidden (32, 16)) trained for one epoch
    and published: for tests that need *a* trained census export, not a particular one.
    Read-only: copy it before changing anything.

    Trained once per run: under xdist the first worker that needs it trains it, under a file
    lock in the run's shared temp directory, and the others read what it wrote.
    """
    from wdl_tf import atomic, run_dir
    from wdl_tf import config as config_lib

    base = tmp_path_factory.getbasetemp()
    root = (base if worker_id == "master" else base.parent) / "census_export"
    done = root / "done.json"
    with atomic.exclusive_lock(f"{root}.lock"):
        if not done.exists():
            from wdl_tf import train_lib

            config = config_lib.preset(
                "test", model_dir=str(root / "model"), export_base=str(root / "export"), epochs=1
            )
            result = train_lib.train_and_evaluate(config)
            assert result.export_path and os.path.isdir(result.export_path)
            done.write_text(json.dumps({"export_path": result.export_path}))
    config = config_lib.TrainConfig.from_dict(run_dir.load_config_dict(str(root / "model")))
    with open(run_dir.metrics_path(config.model_dir)) as f:
        metrics = json.load(f)
    return TrainedExport(config, json.loads(done.read_text())["export_path"], metrics)
