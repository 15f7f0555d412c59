"""What this process is in a training cluster, from ``TF_CONFIG``, without TensorFlow.

`resolve` turns ``--distribution`` and the ``TF_CONFIG`` environment variable into a strategy
kind and this process's `Task` (a lone trainer, or one rank of a cluster); a malformed
TF_CONFIG is a ValueError naming the bad value. `plan_shards` decides how the workers split
the training data. ``train.py`` calls both before TensorFlow loads, so a bad cluster setting
fails in a fraction of a second; `wdl_tf.distribute` creates the strategy from them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from wdl_tf.config import DISTRIBUTIONS, SHARD_POLICIES, check_choice

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
    check_choice("distribution", distribution, DISTRIBUTIONS)
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
    check_choice("shard_policy", policy, SHARD_POLICIES)
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
