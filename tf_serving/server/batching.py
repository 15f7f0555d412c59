"""Server-side batching: concurrent Predict requests to one signature merged into one call."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import numpy as np

from tf_serving.server.status import ServingError


class BatchItem:
    __slots__ = ("inputs", "rows", "done", "result", "error")

    def __init__(self, inputs: dict[str, np.ndarray], rows: int):
        self.inputs = inputs
        self.rows = rows
        self.done = threading.Event()
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None


class BatchQueue:
    def __init__(self, fn, lock: threading.Lock):
        self.fn = fn
        self.items: list[BatchItem] = []
        self.cond = threading.Condition(lock)


class Batcher:
    """Merges concurrent Predict requests to one signature into one call.

    One worker thread per (model, version, signature, input layout) key takes the queued
    requests (up to ``max_batch_size`` rows, waiting at most ``batch_timeout_micros`` after
    the first), concatenates every input along dim 0, runs the signature once and splits
    every output along dim 0. If an output's dim 0 is not the total row count, or the
    merged call fails, each request is run on its own instead, so results and errors are
    exactly those of unbatched calls. A worker exits after ``idle_seconds`` without work.
    """

    def __init__(self, run: Callable, max_batch_size: int, timeout_micros: int, idle_seconds=2.0):
        self._run = run
        self.max_batch_size = max_batch_size
        self.timeout = timeout_micros / 1e6
        self.idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._queues: dict[tuple, BatchQueue] = {}
        self._stopped = False
        self.batches = 0
        self.requests = 0

    def submit(self, key: tuple, fn, inputs: dict[str, np.ndarray], rows: int):
        item = BatchItem(inputs, rows)
        with self._lock:
            if self._stopped:
                raise ServingError(grpc.StatusCode.UNAVAILABLE, "Server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = BatchQueue(fn, self._lock)
                threading.Thread(
                    target=self._work, args=(key, queue), name="batcher", daemon=True
                ).start()
            queue.items.append(item)
            queue.cond.notify()
        item.done.wait()
        if item.error is not None:
            raise item.error
        return item.result

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for queue in self._queues.values():
                queue.cond.notify_all()

    def _take(self, key: tuple, queue: BatchQueue) -> list[BatchItem] | None:
        with self._lock:
            while not queue.items:
                if self._stopped or not queue.cond.wait(self.idle_seconds):
                    if not queue.items:
                        del self._queues[key]
                        return None
            deadline = time.monotonic() + self.timeout
            while not self._stopped:
                if sum(i.rows for i in queue.items) >= self.max_batch_size:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                queue.cond.wait(remaining)
            batch, rows = [], 0
            while queue.items and (not batch or rows + queue.items[0].rows <= self.max_batch_size):
                item = queue.items.pop(0)
                batch.append(item)
                rows += item.rows
            return batch

    def _work(self, key: tuple, queue: BatchQueue) -> None:
        while True:
            batch = self._take(key, queue)
            if batch is None:
                return
            self.batches += 1
            self.requests += len(batch)
            if len(batch) == 1 or not self._run_merged(queue.fn, batch):
                for item in batch:
                    self._run_one(queue.fn, item)

    def _run_one(self, fn, item: BatchItem) -> None:
        try:
            item.result = self._run(fn, item.inputs)
        except BaseException as e:
            item.error = e
        item.done.set()

    def _run_merged(self, fn, batch: list[BatchItem]) -> bool:
        names = batch[0].inputs.keys()
        try:
            merged = {k: np.concatenate([i.inputs[k] for i in batch], axis=0) for k in names}
            outputs = self._run(fn, merged)
        except Exception:
            return False
        total = sum(i.rows for i in batch)
        if any(v.ndim == 0 or v.shape[0] != total for v in outputs.values()):
            return False
        offset = 0
        for item in batch:
            item.result = {k: v[offset : offset + item.rows] for k, v in outputs.items()}
            offset += item.rows
            item.done.set()
        return True
