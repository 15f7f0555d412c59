"""Training on more than one device or machine with TensorFlow's own `tf.distribute`.

* `resolve` turns ``--distribution`` and the ``TF_CONFIG`` environment variable into what this
  process is: a lone trainer, one machine's devices (``MirroredStrategy``) or one worker of a
  cluster (``MultiWorkerMirroredStrategy``). A malformed TF_CONFIG is a ValueError naming the
  bad value, raised before any TensorFlow op runs.
* `make_runtime` creates the strategy. It must run before anything else touches TensorFlow:
  ``MultiWorkerMirroredStrategy`` configures the process's collective ops at start-up.
* `plan_shards` decides how the workers split the training data: whole files when there are at
  least as many files as workers, otherwise every N-th row; the split depends only on the file
  list and the worker's rank, so it is the same on every run.
* `prepare_for_fit` works around two Keras 3.15 bugs that stop ``Model.fit`` under a
  multi-worker strategy (keras-team/keras#20585).
* `table_bytes` measures every wide and embedding table's bytes per row, optimizer slots
  included (what a replica must hold; BUILD.md, "Tables bigger than one machine").

``--batch_size`` is always the global batch: each of the ``num_replicas_in_sync`` replicas
(all devices of all workers) trains on ``batch_size / num_replicas_in_sync`` rows per step and
the gradients are summed, so one step sees the same rows whatever the cluster's shape.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from typing import Any

import tensorflow as tf

from wdl_tf.config import DISTRIBUTIONS, SHARD_POLICIES  # noqa: F401 - re-exported

log = logging.getLogger("wdl_tf")

TF_CONFIG = "TF_CONFIG"


@dataclasses.dataclass(frozen=True)
class Task:
    """This process's place in the cluster.

    Attributes:
      num_workers: training processes in the cluster (``chief`` + ``worker`` entries).
      worker_index: this process's rank, 0..num_workers-1; rank 0 is the chief (the ``chief``
        task when the cluster has one, otherwise ``worker`` 0).
      task_type, task_index: as written in TF_CONFIG (``worker``, 0 for a lone process).
    """

    num_workers: int = 1
    worker_index: int = 0
    task_type: str = "worker"
    task_index: int = 0

    @property
    def is_chief(self) -> bool:
        return self.worker_index == 0


def parse_tf_config(text: str) -> Task:
    """The task described by a TF_CONFIG JSON string; ValueError naming what is wrong."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {text!r}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got {text!r}")
    cluster, task = obj.get("cluster"), obj.get("task")
    if not isinstance(cluster, dict) or not cluster:
        raise ValueError(f"TF_CONFIG has no 'cluster' object: {text!r}")
    if not isinstance(task, dict):
        raise ValueError(f"TF_CONFIG has no 'task' object: {text!r}")
    for job, addresses in cluster.items():
        if job not in ("chief", "worker", "ps", "evaluator"):
            raise ValueError(f"TF_CONFIG cluster: unknown job {job!r}")
        if not isinstance(addresses, list) or not addresses:
            raise ValueError(f"TF_CONFIG cluster[{job!r}]: expected a list of 'host:port'")
        for address in addresses:
            host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
            if not host or not port.isdigit():
                raise ValueError(f"TF_CONFIG cluster[{job!r}]: {address!r} is not 'host:port'")
    if "ps" in cluster:
        raise ValueError(
            "TF_CONFIG names 'ps' tasks: parameter-server training needs a custom training loop "
            "(Keras fit does not support ParameterServerStrategy); see BUILD.md, "
            "'Tables bigger than one machine'"
        )
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f"TF_CONFIG cluster: at most one 'chief', got {cluster['chief']}")
    task_type, task_index = task.get("type"), task.get("index", 0)
    if task_type not in ("chief", "worker"):
        raise ValueError(
            f"TF_CONFIG task type: {task_type!r} is not a training task; allowed values are "
            "['chief', 'worker']"
        )
    if task_type not in cluster:
        raise ValueError(f"TF_CONFIG task type {task_type!r} is not in the cluster {list(cluster)}")
    if not isinstance(task_index, int) or isinstance(task_index, bool):
        raise ValueError(f"TF_CONFIG task index: expected an integer, got {task_index!r}")
    if not 0 <= task_index < len(cluster[task_type]):
        raise ValueError(
            f"TF_CONFIG task index {task_index} is out of range: the cluster has "
            f"{len(cluster[task_type])} {task_type!r} task(s)"
        )
    chiefs = len(cluster.get("chief", []))
    rank = task_index if task_type == "chief" else chiefs + task_index
    return Task(
        num_workers=chiefs + len(cluster.get("worker", [])),
        worker_index=rank,
        task_type=task_type,
        task_index=task_index,
    )


def resolve(distribution: str, environ: Any = None) -> tuple[str, Task]:
    """(strategy kind, task) from ``--distribution`` and TF_CONFIG; ValueError when they clash.

    ``auto`` is ``multi_worker_mirrored`` when TF_CONFIG is set and ``none`` otherwise. A
    TF_CONFIG naming more than one worker is refused with ``none`` and ``mirrored`` (each
    process would train alone and overwrite the others' model dir).
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"distribution: unknown value {distribution!r}; allowed values are "
            f"{list(DISTRIBUTIONS)}"
        )
    environ = os.environ if environ is None else environ
    text = environ.get(TF_CONFIG, "")
    task = parse_tf_config(text) if text.strip() else Task()
    kind = distribution
    if kind == "auto":
        kind = "multi_worker_mirrored" if text.strip() else "none"
    if kind in ("none", "mirrored") and task.num_workers > 1:
        raise ValueError(
            f"distribution={distribution!r} trains on one machine, but TF_CONFIG names "
            f"{task.num_workers} workers: use --distribution=multi_worker_mirrored (or auto)"
        )
    return kind, task


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """How this worker reads its part of the training data.

    Attributes:
      by: ``none`` (one worker reads everything), ``file`` (every num_shards-th file from
        index) or ``data`` (every num_shards-th row from index, all files read).
    """

    by: str = "none"
    num_shards: int = 1
    index: int = 0


def plan_shards(policy: str, files: list[str], task: Task) -> ShardPlan:
    """File-level sharding when there are enough files (or forced), else row-level."""
    if policy not in SHARD_POLICIES:
        raise ValueError(
            f"shard_policy: unknown value {policy!r}; allowed values are {list(SHARD_POLICIES)}"
        )
    n = task.num_workers
    if policy == "file" and len(files) < n:
        raise ValueError(
            f"shard_policy=file needs at least one training file per worker: {n} workers, "
            f"{len(files)} file(s) ({files}); use shard_policy=data or auto"
        )
    if n == 1:
        return ShardPlan()
    by = policy if policy != "auto" else ("file" if len(files) >= n else "data")
    return ShardPlan(by=by, num_shards=n, index=task.worker_index)


@dataclasses.dataclass
class Runtime:
    """The strategy and this process's role. ``kind`` is ``none`` for the default strategy."""

    kind: str
    task: Task
    strategy: tf.distribute.Strategy

    @property
    def is_chief(self) -> bool:
        return self.task.is_chief

    @property
    def distributed(self) -> bool:
        return self.kind != "none"

    @property
    def multi_worker(self) -> bool:
        return self.task.num_workers > 1

    @property
    def replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    @property
    def local_replicas(self) -> int:
        """Replicas of this worker: one step consumes this many elements of its dataset."""
        return self.replicas // self.task.num_workers

    def work_dir(self, model_dir: str) -> str:
        """Where this process writes: model_dir for the chief, a private temp dir otherwise.

        Every worker must save checkpoints (a save may run collective ops), but only the
        chief's are kept; the others write to ``<model_dir>/workertemp_<rank>`` (as the
        TensorFlow multi-worker guide does), removed when the run ends.
        """
        if self.is_chief:
            return model_dir
        return os.path.join(model_dir, f"workertemp_{self.task.worker_index}")

    def per_replica_batch(self, global_batch: int) -> int:
        if global_batch % self.replicas:
            raise ValueError(
                f"batch_size: the global batch {global_batch} must be divisible by the "
                f"{self.replicas} replicas in sync"
            )
        return global_batch // self.replicas

    def barrier(self) -> None:
        """Waits until every worker gets here (an all-reduce); a no-op on one worker."""
        if not self.multi_worker:
            return
        one = self.strategy.run(lambda: tf.constant(1.0))
        total = self.strategy.reduce(tf.distribute.ReduceOp.SUM, one, axis=None)
        if int(total.numpy()) != self.replicas:
            raise RuntimeError(f"barrier: {int(total.numpy())} of {self.replicas} replicas")

    def distribute(self, make_dataset) -> Any:
        """What fit reads: ``make_dataset(per_replica_batch)`` on every worker, per replica.

        With a strategy, `distribute_datasets_from_function` calls it once per worker; each
        step then takes one per-replica batch per local replica (so no rebatching and no
        automatic sharding happen: the dataset is already this worker's shard).
        """
        if not self.distributed:
            return make_dataset(None)

        def fn(ctx: tf.distribute.InputContext):
            if ctx.num_input_pipelines != self.task.num_workers:
                raise RuntimeError(
                    f"{ctx.num_input_pipelines} input pipelines for {self.task.num_workers} workers"
                )
            return make_dataset(ctx)

        return self.strategy.distribute_datasets_from_function(fn)

    def cleanup(self, model_dir: str) -> None:
        """Removes a non-chief worker's temporary directory."""
        if not self.is_chief:
            shutil.rmtree(self.work_dir(model_dir), ignore_errors=True)


def _mirrored_devices() -> list[str]:
    """All local GPUs; without any, all logical CPU devices (tests configure two)."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def make_runtime(kind: str, task: Task) -> Runtime:
    """Creates the strategy; call it before any other TensorFlow op of the process."""
    if kind == "none":
        strategy = tf.distribute.get_strategy()
    elif kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy(_mirrored_devices())
    elif kind == "multi_worker_mirrored":
        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:  # TensorFlow already started: collectives can't be set up
            raise RuntimeError(
                "multi_worker_mirrored must be the process's first use of TensorFlow "
                f"(start a fresh process per worker): {e}"
            ) from e
        resolver = strategy.cluster_resolver
        if task.num_workers > 1 and (resolver.task_type, resolver.task_id) != (
            task.task_type,
            task.task_index,
        ):
            raise RuntimeError(f"TF_CONFIG task {task} but TensorFlow sees {resolver.task_type}")
    else:
        raise ValueError(f"distribution: unknown value {kind!r}")
    runtime = Runtime(kind, task, strategy)
    if kind != "none":
        log.info(
            "%s: %d replica(s) in sync, worker %d of %d",
            kind,
            runtime.replicas,
            task.worker_index,
            task.num_workers,
        )
    return runtime


def prepare_for_fit(model, runtime: Runtime, sample_batch) -> None:
    """Lets ``Model.fit`` run under a strategy with Keras 3.15 (keras-team/keras#20585).

    1. fit's first act under any strategy is ``_maybe_symbolic_build``: it pulls one batch
       from the distributed dataset and calls ``strategy.reduce`` on the nest of per-replica
       tensors, which MultiWorkerMirroredStrategy rejects ("Attempt to convert a value
       (PerReplica...)"). Here the model (optimizer, compiled loss and metrics) is built
       from one local, undistributed batch instead, and fit's build is skipped. That also
       keeps fit from consuming an extra pass of the training data.
    2. With more than one worker, fit reduces each step's logs with
       ``strategy.reduce("MEAN", v, axis=0)``, which fails on scalars ("Invalid reduction
       dimension 0"); the train step's logs are returned with shape [1] instead.
    """
    if not runtime.distributed:
        return
    with runtime.strategy.scope():
        model._maybe_symbolic_build(data_batch=sample_batch)
    model._maybe_symbolic_build = lambda *args, **kwargs: None
    if runtime.multi_worker:
        train_step = model.train_step

        def vector_logs_train_step(data):
            return {k: tf.reshape(v, [1]) for k, v in train_step(data).items()}

        model.train_step = vector_logs_train_step


def table_bytes(model) -> dict[str, dict[str, Any]]:
    """Memory of every wide and embedding table, per row, weights plus optimizer slots.

    Each table ``wide/<f>`` or ``deep/emb_<f>`` is matched with the optimizer variables named
    ``<optimizer>/<table path, / → _>_<slot>`` (FTRL: accumulator and linear; AdaGrad:
    accumulator). Returns ``{path: {rows, columns, weight_bytes_per_row, slot_bytes_per_row,
    bytes_per_row, slots}}``; the bytes are measured from the variables' dtypes and shapes.
    """
    slots: dict[str, list] = {}
    for v in model.optimizer.variables:
        if "/" in v.path and len(v.shape) == 2:
            name, _, slot = v.path.split("/", 1)[1].rpartition("_")
            slots.setdefault(name, []).append((slot, v))
    out = {}
    for v in model.trainable_variables:
        if len(v.shape) != 2 or not v.path.startswith(("wide/", "deep/emb_")):
            continue
        rows, columns = int(v.shape[0]), int(v.shape[1])
        weight = columns * tf.as_dtype(v.dtype).size
        mine = slots.get(v.path.replace("/", "_"), [])
        slot_bytes = sum(int(s.shape[1]) * tf.as_dtype(s.dtype).size for _, s in mine)
        out[v.path] = {
            "rows": rows,
            "columns": columns,
            "weight_bytes_per_row": weight,
            "slot_bytes_per_row": slot_bytes,
            "bytes_per_row": weight + slot_bytes,
            "slots": sorted(slot for slot, _ in mine),
        }
    return out
