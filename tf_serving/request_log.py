"""Request logging in TF Serving's format: sampled PredictionLogs in TFRecord files.

TF Serving's request logger (``tensorflow_serving/core/request_logger.cc``) logs a request
with probability ``LoggingConfig.sampling_config.sampling_rate``, as one
``tensorflow.serving.PredictionLog`` (``tensorflow_serving/apis/prediction_log.proto``): the
request and response under ``predict_log``, ``classify_log``, ``regress_log`` or
``multi_inference_log``, and ``log_metadata`` with the request's model spec and the sampling
config. `RequestLogWriter` writes those records to TFRecord files, the format of TF Serving's
warmup file (``assets.extra/tf_serving_warmup_requests``), so the same readers take both
(``wdl_tf.samples.read_request_log``, ``scripts/skew_report.py --request_log``).

Logging is off unless a directory and a sampling rate above 0 are given. A file is written as
``requests-<start ms>-<pid>-<n>.tfrecord.inprogress`` and renamed to ``….tfrecord`` when it
holds ``max_records_per_file`` records or the writer closes, so a reader globbing
``*.tfrecord`` never sees a file still being written.
"""

from __future__ import annotations

import dataclasses
import os
import random
import threading
import time

KINDS = ("predict", "classify", "regress", "multi_inference")
SUFFIX = ".tfrecord"
IN_PROGRESS = ".inprogress"


@dataclasses.dataclass(frozen=True)
class RequestLogConfig:
    """Where and how often to log requests.

    Attributes:
      directory: where the TFRecord files go; empty = logging off.
      sampling_rate: the probability that a request is logged, in [0, 1]; 0 = off.
      max_records_per_file: a file is closed (renamed to ``*.tfrecord``) after this many.
      seed: seed of the sampling (None: from the system).
    """

    directory: str = ""
    sampling_rate: float = 0.0
    max_records_per_file: int = 10_000
    seed: int | None = None

    def validate(self) -> None:
        if not 0.0 <= self.sampling_rate <= 1.0:
            raise ValueError(f"sampling_rate: must be in [0, 1], got {self.sampling_rate}")
        if self.max_records_per_file < 1:
            raise ValueError(f"max_records_per_file: must be >= 1, got {self.max_records_per_file}")
        if self.sampling_rate > 0 and not self.directory:
            raise ValueError("directory: required when sampling_rate > 0")

    @property
    def enabled(self) -> bool:
        return bool(self.directory) and self.sampling_rate > 0


def _log_types():
    from tensorflow_serving.apis import (
        classification_pb2,
        inference_pb2,
        predict_pb2,
        prediction_log_pb2,
        regression_pb2,
    )

    return {
        "predict": (prediction_log_pb2.PredictLog, predict_pb2.PredictRequest),
        "classify": (prediction_log_pb2.ClassifyLog, classification_pb2.ClassificationRequest),
        "regress": (prediction_log_pb2.RegressLog, regression_pb2.RegressionRequest),
        "multi_inference": (
            prediction_log_pb2.MultiInferenceLog,
            inference_pb2.MultiInferenceRequest,
        ),
    }


def _log_type(request, kind: str):
    """The PredictionLog field type of ``kind``, after checking ``request`` is its request."""
    if kind not in KINDS:
        raise ValueError(f"kind: unknown value {kind!r}; allowed values are {list(KINDS)}")
    log_type, request_type = _log_types()[kind]
    if not isinstance(request, request_type):
        raise ValueError(
            f"a {kind!r} log needs a {request_type.DESCRIPTOR.full_name}, got "
            f"{type(request).__name__}"
        )
    return log_type


class RequestLogWriter:
    """Logs a sampled share of requests as PredictionLog records (module doc). Thread-safe.

    Use as a context manager, or call `close` at shutdown (it renames the last file).
    """

    def __init__(self, config: RequestLogConfig):
        config.validate()
        self.config = config
        self._random = random.Random(config.seed)
        self._lock = threading.Lock()
        self._writer = None
        self._path = ""
        self._in_file = 0
        self._files = 0
        self._start = int(time.time() * 1000)
        self.logged = 0
        self.files: list[str] = []  # finished files

    def log(self, request, response, kind: str) -> bool:
        """Logs ``request`` and ``response`` (their TF Serving protos) with probability
        ``sampling_rate``; returns whether it did.

        Raises:
          ValueError: ``kind`` is not one of `KINDS`, or ``request`` is not that kind's
            request proto.
        """
        log_type = _log_type(request, kind)
        if not self.sample():
            return False
        self._write(self._record(request, response, kind, log_type).SerializeToString())
        return True

    def sample(self) -> bool:
        """Draws whether the next request is logged (probability ``sampling_rate``).

        A server whose requests are not protos yet (REST's JSON) draws first and builds the
        protos for `write` only for the sampled ones.
        """
        if not self.config.enabled:
            return False
        with self._lock:
            return self._random.random() < self.config.sampling_rate

    def write(self, request, response, kind: str) -> None:
        """Logs ``request`` and ``response`` unconditionally (after `sample` said so).

        Raises:
          ValueError: ``kind`` is not one of `KINDS`, or ``request`` is not that kind's
            request proto.
        """
        log_type = _log_type(request, kind)
        self._write(self._record(request, response, kind, log_type).SerializeToString())

    def _record(self, request, response, kind: str, log_type):
        from tensorflow_serving.apis import prediction_log_pb2

        entry = prediction_log_pb2.PredictionLog()
        entry.log_metadata.model_spec.CopyFrom(request.model_spec)
        entry.log_metadata.sampling_config.sampling_rate = self.config.sampling_rate
        entry.log_metadata.timestamp_secs = int(time.time())
        body = log_type(request=request)
        if response is not None:
            body.response.CopyFrom(response)
        getattr(entry, f"{kind}_log").CopyFrom(body)
        return entry

    def _write(self, data: bytes) -> None:
        with self._lock:
            self._write_locked(data)

    def _write_locked(self, data: bytes) -> None:
        import tensorflow as tf

        if self._writer is None:
            os.makedirs(self.config.directory, exist_ok=True)
            name = f"requests-{self._start}-{os.getpid()}-{self._files:05d}{SUFFIX}"
            self._path = os.path.join(self.config.directory, name)
            self._writer = tf.io.TFRecordWriter(self._path + IN_PROGRESS)
            self._files += 1
        self._writer.write(data)
        self._in_file += 1
        self.logged += 1
        if self._in_file >= self.config.max_records_per_file:
            self._finish()

    def _finish(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        os.replace(self._path + IN_PROGRESS, self._path)
        self.files.append(self._path)
        self._writer, self._in_file = None, 0

    def close(self) -> None:
        """Closes the current file and renames it to ``*.tfrecord`` (idempotent)."""
        with self._lock:
            self._finish()

    def __enter__(self) -> RequestLogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
