"""Training on more than one device or machine with TensorFlow's own `tf.distribute`.

* `wdl_tf.cluster` (no TensorFlow) says what this process is, from ``--distribution`` and
  the ``TF_CONFIG`` environment variable: a lone trainer, one machine's devices
  (``MirroredStrategy``) or one worker of a cluster (``MultiWorkerMirroredStrategy``), and
  how the workers split the training data.
* `make_runtime` creates the strategy. It must run before anything else touches TensorFlow:
  ``MultiWorkerMirroredStrategy`` configures the process's collective ops at start-up.
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
import logging
import os
import shutil
from typing import Any

import tensorflow as tf

from wdl_tf.cluster import Task

log = logging.getLogger("wdl_tf")


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
