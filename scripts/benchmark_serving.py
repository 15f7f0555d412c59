"""Serving benchmark: ``rank`` latency in-process vs gRPC/REST, concurrency, soak, hot reload.

    python scripts/benchmark_serving.py --output_json=/tmp/serve.json --output_md=/tmp/serve.md
    python scripts/benchmark_serving.py --quick --output_json=/tmp/quick.json   # < 60 s, tiny

Without ``--saved_model_base`` a paper-sized census model (ReLU 1024-512-256) is trained for one
epoch on the synthetic census twin and exported. The latest version is copied to
``<work_dir>/models/census/1`` and served by ``python -m tf_serving.server`` in a subprocess on
127.0.0.1 (so the load-generating client threads don't share the server's GIL). The request is
one ``rank`` call with 200 candidates: user features as one context row, and workclass /
education / education_num / occupation of 200 real UCI Adult rows as the candidates. Every
client sends the context once (``repeat_context=False``: the server does not batch ``rank``),
so the in-process call and the served ones run the same [1, 1] + [200, 1] inputs.

Reported (JSON with ``--output_json``, Markdown with ``--output_md``, printed too):

1. In-process p50/p99 of ``tf.saved_model.load(path).signatures["rank"]`` after warm-up; then,
   with the server up, in-process and 1-client gRPC calls in alternating blocks: the ratio
   of their p50s is the gRPC figure (both measured under the same machine state).
2. gRPC and REST p50/p99 and requests/s with 1, 4 and 16 concurrent clients (threads, each
   its own client), ``--seconds`` per point.
3. A ``--soak_seconds`` 16-client gRPC soak: failed requests, the server's RSS sampled every
   second (at 10 s, at the end, growth after the first 10 s).
4. A hot reload at mid-soak (version 2 published as ``temp-x`` then renamed): time until
   version 2 is AVAILABLE, and requests that failed during the reload.
5. ``--keepalive_clients`` (200) REST clients, each on its own keep-alive connection, for
   ``--keepalive_seconds`` (10): requests, failed, latency.
6. The body limit (``--body_limit_mib``, the server's ``--max_body_bytes``) on raw
   sockets: how fast a chunk size of -1, a Content-Length over the limit and a chunked body
   over the limit are answered, and how much of that body was sent before the answer.
7. One Predict request with a body just under the limit (``instances`` rows): server RSS
   before, at its peak (sampled every 10 ms) and 2 s after.
8. Where the time of one gRPC ``rank`` call goes: client encode, serialization, server
   parse and decode, checks, the model (numpy inputs, as the server calls it), server
   encode, client decode, each timed in this process with the server's own functions;
   transport and dispatch are the gRPC p50 minus their sum.
"""

from __future__ import annotations

import csv
import datetime
import gzip
import json
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # this checkout's packages, also for the server subprocess
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from wdl_tf.ports import free_port  # noqa: E402

FLAGS = flags.FLAGS
MODEL_NAME = "census"
HOST = "127.0.0.1"
RATIO_TARGET = 1.5  # gRPC 1-client p50 / in-process p50
RSS_BASELINE_S = 10.0  # RSS growth is measured after this point of the soak
MAX_REQUESTS_PER_CLIENT = 1_000_000  # bounds every load loop besides its deadline
CANDIDATE_FEATURES = ("workclass", "education", "education_num", "occupation")

flags.DEFINE_string("saved_model_base", None, "Export base (versions as subdirs); else train.")
flags.DEFINE_string("work_dir", None, "Scratch directory (default: a temporary one, removed).")
flags.DEFINE_integer("candidates", 200, "Candidates per rank request.")
flags.DEFINE_float("seconds", 10.0, "Seconds per (protocol, concurrency) point.")
flags.DEFINE_float("soak_seconds", 30.0, "Seconds of the 16-client gRPC soak.")
flags.DEFINE_list("concurrency", ["1", "4", "16"], "Concurrent clients per point.")
flags.DEFINE_integer("in_process_iters", 200, "Timed in-process calls (after warm-up).")
flags.DEFINE_float("startup_timeout", 300.0, "Seconds to wait for the server / version 2.")
flags.DEFINE_bool("quick", False, "Tiny model (16, 8) and short points: < 60 s in all.")
flags.DEFINE_integer("keepalive_clients", 200, "Concurrent keep-alive REST clients.")
flags.DEFINE_float("keepalive_seconds", 10.0, "Seconds of the keep-alive REST point.")
flags.DEFINE_integer("body_limit_mib", 64, "The server's --max_body_bytes, in MiB.")
flags.DEFINE_integer("profile_iters", 200, "Timed iterations per step of the gRPC profile.")
flags.DEFINE_string("output_json", None, "Write the report here as JSON.")
flags.DEFINE_string("output_md", None, "Write the Markdown table here.")


# ----------------------------------------------------------------------------------------
# Model and request.


def train_model(root: str, hidden_units: tuple[int, ...]) -> str:
    """Trains one epoch on synthetic census and exports; returns the export base."""
    from wdl_tf import config as config_lib
    from wdl_tf import train_lib

    export_base = os.path.join(root, "export")
    result = train_lib.train_and_evaluate(
        config_lib.preset(
            "test",
            model_dir=os.path.join(root, "model"),
            export_base=export_base,
            epochs=1,
            model=config_lib.ModelConfig(hidden_units=hidden_units),
        )
    )
    if not result.export_path:
        raise RuntimeError("training did not export a model")
    return export_base


def latest_version_dir(base: str) -> str:
    from wdl_tf.export_lib import versions as exported_versions

    versions = exported_versions(base)
    if not versions:
        raise ValueError(f"no numeric version directories under {base}")
    return os.path.join(base, str(versions[-1]))


def adult_rows(n: int) -> list[dict[str, str]]:
    """The first ``n`` complete rows of the embedded UCI Adult training file."""
    from wdl_tf import features
    from wdl_tf.datasets import CENSUS_TRAIN as path

    columns = features.preset("census").csv.columns
    rows = []
    with gzip.open(path, "rt") as f:
        for record in csv.reader(f):
            if len(record) != len(columns):
                continue
            rows.append({k: v.strip() for k, v in zip(columns, record)})
            if len(rows) >= n:
                break
    if len(rows) < n:
        raise ValueError(f"only {len(rows)} rows in {path}")
    return rows


def _value(raw: str | None, dtype) -> Any:
    np_dtype = np.dtype(dtype)
    if np_dtype == np.dtype(object):
        return raw if raw is not None else ""
    return np_dtype.type(float(raw) if raw not in (None, "", "?") else 0)


def build_request(
    input_dtypes: dict[str, Any], n: int
) -> tuple[dict[str, list], dict[str, list], dict[str, Any]]:
    """(context, candidates, numpy dtypes) of a ``rank`` request with ``n`` candidates."""
    rows = adult_rows(n)
    context, candidates = {}, {}
    for name, dtype in input_dtypes.items():
        if name in CANDIDATE_FEATURES:
            candidates[name] = [_value(r.get(name), dtype) for r in rows]
        else:
            context[name] = [_value(rows[0].get(name), dtype)]
    if not candidates:
        raise ValueError(f"the rank signature has none of {CANDIDATE_FEATURES}")
    return context, candidates, input_dtypes


def rank_tensors(context, candidates, dtypes) -> dict[str, np.ndarray]:
    """The request as the signature's [1, 1] / [N, 1] arrays."""
    out = {}
    for name, values in {**context, **candidates}.items():
        dtype = dtypes[name]
        if np.dtype(dtype) == np.dtype(object):
            out[name] = np.array([[v.encode()] for v in values], dtype=object)
        else:
            out[name] = np.array(values, dtype=dtype).reshape(-1, 1)
    return out


def percentiles(latencies_s: list[float]) -> dict[str, float]:
    if not latencies_s:
        return {"p50_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}
    ms = np.asarray(latencies_s) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def bench_in_process(path: str, tensors: dict[str, np.ndarray], iters: int) -> dict[str, Any]:
    import tensorflow as tf

    fn = tf.saved_model.load(path).signatures["rank"]
    inputs = {k: tf.constant(v) for k, v in tensors.items()}
    for _ in range(max(5, iters // 10)):
        fn(**inputs)["scores"].numpy()
    latencies = []
    for _ in range(iters):
        start = time.perf_counter()
        fn(**inputs)["scores"].numpy()
        latencies.append(time.perf_counter() - start)
    return {"iters": iters, **percentiles(latencies)}


def bench_side_by_side(
    path: str, server: ServerProcess, request: tuple, rounds: int, calls: int
) -> dict[str, Any]:
    """In-process and 1-client gRPC ``rank`` calls in alternating blocks of ``calls``.

    Both paths see the same machine state (the server idle while the in-process calls run,
    this process idle while the gRPC ones wait), so a drift in CPU speed or background
    load during the run moves both: the ratio of their p50s is the figure, not a ratio of
    two numbers measured minutes apart.
    """
    import tensorflow as tf

    context, candidates, dtypes = request
    fn = tf.saved_model.load(path).signatures["rank"]
    inputs = {k: tf.constant(v) for k, v in rank_tensors(*request).items()}
    client = make_client("grpc", server)

    def grpc_call():
        client.rank(context, candidates, dtypes=dtypes, repeat_context=False)

    def in_process_call():
        fn(**inputs)["scores"].numpy()

    timed: dict[str, list[float]] = {"in_process": [], "grpc": []}
    for call in (in_process_call, grpc_call):  # warm both
        for _ in range(max(5, calls // 2)):
            call()
    for _ in range(rounds):
        for name, call in (("in_process", in_process_call), ("grpc", grpc_call)):
            for _ in range(calls):
                start = time.perf_counter()
                call()
                timed[name].append(time.perf_counter() - start)
    client.close()
    out = {name: {"iters": len(v), **percentiles(v)} for name, v in timed.items()}
    out["ratio_p50"] = out["grpc"]["p50_ms"] / out["in_process"]["p50_ms"]
    out["rounds"], out["calls_per_block"] = rounds, calls
    return out


def rank_input_dtypes(path: str) -> dict[str, Any]:
    import tensorflow as tf

    sig = tf.saved_model.load(path).signatures["rank"]
    return {
        name: spec.dtype.as_numpy_dtype for name, spec in sig.structured_input_signature[1].items()
    }


# ----------------------------------------------------------------------------------------
# Server.


class ServerProcess:
    """``python -m tf_serving.server`` on free loopback ports."""

    def __init__(self, base_path: str, log_path: str, max_body_bytes: int = 64 << 20):
        self.grpc_port, self.rest_port = free_port(HOST), free_port(HOST)
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tf_serving.server",
                f"--model_name={MODEL_NAME}",
                f"--model_base_path={base_path}",
                f"--port={self.grpc_port}",
                f"--rest_api_port={self.rest_port}",
                f"--host={HOST}",
                "--file_system_poll_wait_seconds=0.5",
                f"--max_body_bytes={max_body_bytes}",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        )

    @property
    def grpc_target(self) -> str:
        return f"{HOST}:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://{HOST}:{self.rest_port}"

    def version_states(self) -> dict[int, str]:
        from tf_serving.client import RestClient

        try:
            status = RestClient(self.rest_url, MODEL_NAME, timeout=5, retries=0).status()
        except Exception:  # noqa: BLE001 - not up yet
            return {}
        return {int(v["version"]): v["state"] for v in status.get("model_version_status", [])}

    def wait_for_version(self, version: int, timeout: float) -> float:
        """Seconds until ``version`` is AVAILABLE; raises after ``timeout``."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            if self.version_states().get(version) == "AVAILABLE":
                return time.monotonic() - start
            time.sleep(0.1)
        raise TimeoutError(f"version {version} not AVAILABLE within {timeout} s")

    def rss_bytes(self) -> int:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.log.close()


# ----------------------------------------------------------------------------------------
# Load.


def make_client(protocol: str, server: ServerProcess):
    from tf_serving.client import GrpcClient, RestClient

    if protocol == "grpc":
        return GrpcClient(server.grpc_target, MODEL_NAME, timeout=30, retries=0)
    return RestClient(server.rest_url, MODEL_NAME, timeout=30, retries=0)


def run_load(
    protocol: str,
    server: ServerProcess,
    request: tuple,
    clients: int,
    seconds: float,
    on_tick=None,
    until: threading.Event | None = None,
    max_extra_seconds: float = 0.0,
) -> dict[str, Any]:
    """``clients`` threads calling rank for ``seconds``; ``on_tick(elapsed)`` about every 1 s.

    With ``until``, the load goes on past ``seconds`` until it is set (at most
    ``max_extra_seconds`` more).

    Returns the latency summary, requests/s, failures and the (start, end, ok) of each call
    (relative to the start) so callers can count failures in a window.
    """
    context, candidates, dtypes = request
    calls: list[tuple[float, float, bool]] = []
    errors: list[str] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    deadline = t0 + seconds
    hard_deadline = deadline + max_extra_seconds

    def finished(now: float) -> bool:
        if now < deadline:
            return False
        return until is None or until.is_set() or now >= hard_deadline

    def call(client) -> None:
        client.rank(context, candidates, dtypes=dtypes, repeat_context=False)

    def worker() -> None:
        client = make_client(protocol, server)
        try:
            call(client)  # warm the connection
            mine = []
            for _ in range(MAX_REQUESTS_PER_CLIENT):
                start = time.monotonic()
                if finished(start):
                    break
                ok = True
                try:
                    call(client)
                except Exception as e:  # noqa: BLE001 - every failure is counted
                    ok = False
                    with lock:
                        if len(errors) < 10:
                            errors.append(repr(e)[:300])
                mine.append((start - t0, time.monotonic() - t0, ok))
            with lock:
                calls.extend(mine)
        finally:
            client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    tick = 1.0
    while any(t.is_alive() for t in threads):
        elapsed = time.monotonic() - t0
        if on_tick is not None and elapsed >= tick:
            on_tick(elapsed)
            tick += 1.0
        if elapsed > seconds + max_extra_seconds + 120:  # hung calls: give up (daemon threads)
            errors.append("load threads did not finish in time")
            break
        time.sleep(0.05)
    wall = max(time.monotonic() - t0, 1e-9)
    ok_latencies = [end - start for start, end, ok in calls if ok]
    return {
        "protocol": protocol,
        "clients": clients,
        "seconds": round(wall, 2),
        "requests": len(calls),
        "failed": sum(1 for *_, ok in calls if not ok),
        "requests_per_s": len(ok_latencies) / wall,
        **percentiles(ok_latencies),
        "errors": errors,
        "_calls": calls,
    }


def publish_version(base: str, src: str, version: int) -> None:
    """Copies ``src`` to ``base/temp-x``, then renames it to ``base/<version>`` (atomic)."""
    tmp = os.path.join(base, f"temp-{version}-{os.getpid()}")
    shutil.copytree(src, tmp)
    os.rename(tmp, os.path.join(base, str(version)))


def run_soak(
    server: ServerProcess, request: tuple, base: str, clients: int, seconds: float, timeout: float
) -> dict[str, Any]:
    rss: list[tuple[float, int]] = []
    reload: dict[str, Any] = {}
    reload_done = threading.Event()
    baseline_s = min(RSS_BASELINE_S, seconds / 3)

    def reload_thread() -> None:
        try:
            reload["start_s"] = time.monotonic() - t0
            publish_version(base, os.path.join(base, "1"), 2)
            reload["seconds_to_available"] = server.wait_for_version(2, timeout)
        except Exception as e:  # noqa: BLE001 - reported
            reload["error"] = repr(e)
        reload["end_s"] = time.monotonic() - t0
        reload_done.set()

    def on_tick(elapsed: float) -> None:
        try:
            rss.append((elapsed, server.rss_bytes()))
        except Exception:  # noqa: BLE001 - process gone: the load reports failures
            pass
        if not reload and elapsed >= seconds / 2:
            reload["start_s"] = None
            reload["rss_mib_before"] = rss[-1][1] / 2**20 if rss else 0.0
            threading.Thread(target=reload_thread, daemon=True).start()

    t0 = time.monotonic()
    result = run_load(
        "grpc",
        server,
        request,
        clients,
        seconds,
        on_tick=on_tick,
        until=reload_done,
        max_extra_seconds=timeout,
    )
    calls = result.pop("_calls")
    reload_done.wait(timeout)
    if reload.get("start_s") is not None:
        end = reload.get("end_s", float("inf"))
        during = [c for c in calls if c[1] >= reload["start_s"] and c[0] <= end]
        reload["requests_during"] = len(during)
        reload["failed_during"] = sum(1 for *_, ok in during if not ok)
    reload["final_states"] = server.version_states()

    at_baseline = next((b for t, b in rss if t >= baseline_s), rss[0][1] if rss else 0)
    after = [b for t, b in rss if t >= baseline_s]
    end_rss = rss[-1][1] if rss else 0
    growth = end_rss - at_baseline
    result["rss"] = {
        "baseline_at_s": baseline_s,
        "mib_at_baseline": at_baseline / 2**20,
        "mib_at_end": end_rss / 2**20,
        "mib_max_after_baseline": (max(after) if after else 0) / 2**20,
        "growth_mib": growth / 2**20,
        "growth_before_reload_mib": reload.get("rss_mib_before", 0.0) - at_baseline / 2**20,
        "grew_after_baseline": growth > 0,
        "samples_mib": [[round(t, 1), round(b / 2**20, 1)] for t, b in rss],
    }
    result["reload"] = reload
    return result


# ----------------------------------------------------------------------------------------
# Hostile and busy clients (REST front), memory, and the gRPC profile.


def rank_body(request: tuple) -> bytes:
    """The rank request as the REST client sends it (columnar JSON)."""
    from tf_serving.client import RestClient, _rank_inputs

    context, candidates, dtypes = request
    single = {k: v[0] for k, v in context.items()}
    inputs = _rank_inputs(single, candidates, repeat_context=False)
    return json.dumps(RestClient.predict_body(inputs, "rank", True, dtypes)).encode()


def run_keepalive(server: ServerProcess, body: bytes, clients: int, seconds: float) -> dict:
    """``clients`` threads, each on one keep-alive connection, POSTing ``body`` for ``seconds``."""
    import http.client

    path = f"/v1/models/{MODEL_NAME}:predict"
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    failures: list[str] = []
    counts = {"requests": 0, "failed": 0, "connections": 0}
    lock = threading.Lock()
    window: list[float] = []  # [start, deadline], set once every client is connected

    def open_window() -> None:  # run by the last thread to arrive, before any is released
        now = time.monotonic()
        window[:] = [now, now + seconds]

    barrier = threading.Barrier(clients, action=open_window)

    def worker() -> None:
        connection = http.client.HTTPConnection(HOST, server.rest_port, timeout=60)
        mine, failed, errors = [], 0, []
        try:
            barrier.wait(120)
            for _ in range(MAX_REQUESTS_PER_CLIENT):
                start = time.monotonic()
                if start >= window[1]:
                    break
                try:
                    connection.request("POST", path, body, headers)
                    response = connection.getresponse()
                    response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}")
                    mine.append(time.monotonic() - start)
                except Exception as e:  # noqa: BLE001 - every failure is counted
                    failed += 1
                    errors.append(repr(e)[:200])
                    connection.close()
                    connection = http.client.HTTPConnection(HOST, server.rest_port, timeout=60)
        finally:
            connection.close()
            with lock:
                latencies.extend(mine)
                counts["requests"] += len(mine) + failed
                counts["failed"] += failed
                failures.extend(errors[: max(0, 10 - len(failures))])

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 300)
    if not window:
        raise RuntimeError(f"the {clients} keep-alive clients did not all connect")
    wall = max(time.monotonic() - window[0], 1e-9)
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        **counts,
        "requests_per_s": len(latencies) / wall,
        **percentiles(latencies),
        "errors": failures,
    }


def _raw_answer(sock, timeout: float) -> tuple[int, float, bytes]:
    """(status, seconds to the status line, body start) of the next response on ``sock``."""
    sock.settimeout(timeout)
    start = time.monotonic()
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    elapsed = time.monotonic() - start
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, elapsed, data.split(b"\r\n\r\n", 1)[-1][:200]


def check_limits(server: ServerProcess, limit: int) -> dict[str, Any]:
    """The body limit on raw sockets: each case's status and seconds to the answer."""
    head = (
        f"POST /v1/models/{MODEL_NAME}:predict HTTP/1.1\r\nHost: {HOST}\r\n".encode()
        + b"Content-Type: application/json\r\n"
    )
    out: dict[str, Any] = {}

    def case(name: str, first: bytes, stream: bytes = b"", stream_max: int = 0) -> None:
        sock = socket.create_connection((HOST, server.rest_port), timeout=30)
        sent = 0
        try:
            sock.sendall(first)
            start = time.monotonic()
            sock.setblocking(False)
            offset = 0
            while stream and sent < stream_max:  # keep sending until the server answers
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break
                except BlockingIOError:
                    pass
                try:
                    n = sock.send(stream[offset:])
                except BlockingIOError:
                    time.sleep(0.001)
                    continue
                except OSError:
                    break
                sent += n
                offset = (offset + n) % len(stream)
            sock.setblocking(True)
            status, _, body = _raw_answer(sock, 30)
            out[name] = {
                "status": status,
                "seconds": round(time.monotonic() - start, 4),
                "body_bytes_sent_after_headers": sent,
                "answer": body.decode("utf-8", "replace"),
            }
        except OSError as e:
            out[name] = {"error": repr(e)}
        finally:
            sock.close()

    case("chunk_size_minus_1", head + b"Transfer-Encoding: chunked\r\n\r\n-1\r\n" + b"x" * 65536)
    case("content_length_over_limit", head + f"Content-Length: {limit + 1}\r\n\r\n".encode())
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b" " * (1 << 20))
    case(
        "chunked_over_limit",
        head + b"Transfer-Encoding: chunked\r\n\r\n",
        stream=chunk,
        stream_max=4 * limit,
    )
    return out


def limit_sized_body(input_dtypes: dict[str, Any], limit: int) -> tuple[bytes, int]:
    """A serving_default ``instances`` body just under ``limit`` bytes, and its row count."""
    rows = adult_rows(50)
    encoded = []
    for r in rows:
        row = {}
        for name, dtype in input_dtypes.items():
            value = _value(r.get(name), dtype)
            row[name] = [value if isinstance(value, str) else float(value)]
        encoded.append(json.dumps(row).encode())
    head, tail = b'{"instances": [', b"]}"
    parts, size = [], len(head) + len(tail)
    while True:
        row = encoded[len(parts) % len(encoded)]
        if size + len(row) + 1 > limit:
            break
        parts.append(row)
        size += len(row) + 1
    return head + b",".join(parts) + tail, len(parts)


def measure_limit_request(server: ServerProcess, body: bytes, rows: int) -> dict[str, Any]:
    """Server RSS before, at the peak of, and 2 s after one request of ``body``."""
    import http.client

    import psutil

    process = psutil.Process(server.proc.pid)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                samples.append(process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.01)

    before = process.memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    connection = http.client.HTTPConnection(HOST, server.rest_port, timeout=600)
    start = time.monotonic()
    try:
        connection.request(
            "POST", f"/v1/models/{MODEL_NAME}:predict", body, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        answer = response.read()
        status = response.status
    finally:
        connection.close()
    seconds = time.monotonic() - start
    time.sleep(2.0)
    stop.set()
    sampler.join()
    after = process.memory_info().rss
    mib = 2**20
    return {
        "body_mib": len(body) / mib,
        "rows": rows,
        "status": status,
        "answer_mib": len(answer) / mib,
        "seconds": seconds,
        "rss_mib_before": before / mib,
        "rss_mib_peak": max(samples + [before]) / mib,
        "rss_mib_after_2s": after / mib,
    }


def profile_grpc(path: str, request: tuple, iters: int, grpc_p50_ms: float) -> dict[str, Any]:
    """Median ms of each step of one gRPC rank call, timed here with the server's functions."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    from tf_serving.client import GrpcClient, _rank_inputs
    from tf_serving.server import inference as inf
    from tf_serving.server.runner import Runner
    from tf_serving.server.servables import Servable
    from tf_serving.tensors import tensor_array

    context, candidates, dtypes = request
    single = {k: v[0] for k, v in context.items()}
    client = GrpcClient("127.0.0.1:1", MODEL_NAME)  # never connects: only builds requests
    servable = Servable(MODEL_NAME, 1, path)
    sig = servable.signatures["rank"]
    inputs_py = _rank_inputs(single, candidates, repeat_context=False)

    def timed(fn) -> tuple[float, Any]:
        for _ in range(max(3, iters // 10)):
            result = fn()
        ms = []
        for _ in range(iters):
            start = time.perf_counter()
            result = fn()
            ms.append((time.perf_counter() - start) * 1e3)
        return float(np.median(ms)), result

    steps: dict[str, float] = {}
    steps["client_encode"], req = timed(
        lambda: client.predict_request(inputs_py, "rank", dtypes=dtypes)
    )
    steps["serialize"], wire = timed(req.SerializeToString)
    steps["server_parse"], parsed = timed(lambda: predict_pb2.PredictRequest.FromString(wire))
    steps["server_decode"], arrays = timed(
        lambda: {a: inf.tensor_to_array(a, p, sig.inputs[a][0]) for a, p in parsed.inputs.items()}
    )

    def checks():
        inf.check_input_names(sig, parsed.inputs.keys())
        inf.check_output_filter(sig, ())
        inf.check_shapes(sig, arrays)
        inf.check_finite(arrays)

    steps["server_checks"], _ = timed(checks)
    steps["model"], outputs = timed(lambda: Runner.call_signature(sig.fn, arrays))
    constants = {k: tf.constant(v) for k, v in arrays.items()}
    steps["model_in_process_constants"], _ = timed(
        lambda: {k: v.numpy() for k, v in sig.fn(**constants).items()}
    )

    def encode():
        response = predict_pb2.PredictResponse()
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(inf.array_to_tensor(value))
        return response.SerializeToString()

    steps["server_encode"], answer = timed(encode)
    steps["client_decode"], _ = timed(
        lambda: {
            k: tensor_array(t)
            for k, t in predict_pb2.PredictResponse.FromString(answer).outputs.items()
        }
    )
    counted = sum(v for k, v in steps.items() if k != "model_in_process_constants")
    return {
        "iters": iters,
        "grpc_p50_ms": grpc_p50_ms,
        "steps_ms": steps,
        "transport_and_dispatch_ms": grpc_p50_ms - counted,
        "request_bytes": len(wire),
        "response_bytes": len(answer),
    }


# ----------------------------------------------------------------------------------------
# Report.


def environment() -> dict[str, Any]:
    import tensorflow as tf

    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "command": shlex.join([os.path.basename(sys.executable)] + sys.argv),
    }


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    ip = report["in_process"]
    lines = [
        f"Model: census, {_model_text(report)}; `rank` request with "
        f"{report['candidates']} candidates. {env['date']}, {env['cpu_count']} CPU cores, "
        f"load average before {env['load_average']}, after {report['load_average_after']}; "
        f"TF {env['tensorflow']}.",
        "",
        "| path | clients | p50 ms | p99 ms | req/s | failed |",
        "|---|---:|---:|---:|---:|---:|",
        f"| in-process `signatures['rank']` | 1 | {ip['p50_ms']:.2f} | {ip['p99_ms']:.2f} "
        f"| {1e3 / ip['mean_ms']:.1f} | 0 |",
    ]
    for p in report["points"]:
        lines.append(
            f"| {p['protocol']} | {p['clients']} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} "
            f"| {p['requests_per_s']:.1f} | {p['failed']} |"
        )
    s = report["soak"]
    lines.append(
        f"| gRPC soak {s['seconds']:.0f} s (with reload) | {s['clients']} | {s['p50_ms']:.2f} "
        f"| {s['p99_ms']:.2f} | {s['requests_per_s']:.1f} | {s['failed']} |"
    )
    t = report["targets"]
    r, rl = s["rss"], s["reload"]
    sb = report["side_by_side"]
    met = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    lines += [
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        f"| gRPC 1-client p50 / in-process p50 (side by side: {sb['grpc']['p50_ms']:.2f} / "
        f"{sb['in_process']['p50_ms']:.2f} ms, {sb['rounds']} alternating blocks of "
        f"{sb['calls_per_block']}) | {t['grpc_vs_in_process_p50']:.2f}× "
        f"| ≤ {RATIO_TARGET}× | {met(t['ratio_met'])} |",
        f"| failed requests (all points + soak) | {t['failed_total']} | 0 "
        f"| {met(t['failed_total'] == 0)} |",
        f"| soak server RSS at {r['baseline_at_s']:.0f} s → end | {r['mib_at_baseline']:.0f} → "
        f"{r['mib_at_end']:.0f} MiB (max after {r['mib_max_after_baseline']:.0f}; "
        f"{r['growth_mib']:+.1f} MiB; {r['growth_before_reload_mib']:+.1f} MiB before the "
        f"reload) | no growth | {met(not r['grew_after_baseline'])} |",
        f"| hot reload to version 2 at {rl.get('start_s', 0):.0f} s | AVAILABLE after "
        f"{rl.get('seconds_to_available', float('nan')):.1f} s; "
        f"{rl.get('failed_during', 'n/a')} of {rl.get('requests_during', 'n/a')} requests "
        f"failed | 0 failed | {met(t['reload_ok'])} |",
    ]
    k = report["keepalive"]
    lines.append(
        f"| {k['clients']} keep-alive REST clients, {k['seconds']:.0f} s | {k['requests']} "
        f"requests, {k['failed']} failed, p50 {k['p50_ms']:.0f} ms, p99 {k['p99_ms']:.0f} ms "
        f"| 0 failed | {met(k['failed'] == 0 and k['requests'] > 0)} |"
    )
    lim = report["limits"]
    cases = ", ".join(
        f"{name} → {c.get('status')} in {c.get('seconds', float('nan')) * 1e3:.0f} ms"
        for name, c in lim.items()
        if isinstance(c, dict)
    )
    lines.append(
        f"| body limit {lim['max_body_bytes'] >> 20} MiB | {cases} | refused at once "
        f"| {met(t['limits_ok'])} |"
    )
    m = report["limit_request_memory"]
    lines.append(
        f"| {m['body_mib']:.1f} MiB request ({m['rows']} rows, HTTP {m['status']}, "
        f"{m['seconds']:.1f} s) | server RSS {m['rss_mib_before']:.0f} → peak "
        f"{m['rss_mib_peak']:.0f} → {m['rss_mib_after_2s']:.0f} MiB 2 s after | reported | |"
    )
    prof = report["grpc_profile"]
    lines += [
        "",
        f"gRPC 1-client rank p50 {prof['grpc_p50_ms']:.2f} ms, by step (median ms, "
        f"{prof['iters']} iterations each; request {prof['request_bytes']} B, response "
        f"{prof['response_bytes']} B):",
        "",
        "| step | ms |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {ms:.3f} |" for name, ms in prof["steps_ms"].items()]
    lines.append(
        f"| transport + dispatch (p50 − the steps) | {prof['transport_and_dispatch_ms']:.3f} |"
    )
    return "\n".join(lines) + "\n"


def _model_text(report: dict[str, Any]) -> str:
    if report["hidden_units"] is None:
        return f"the given SavedModel {report['saved_model']}"
    return f"hidden units {tuple(report['hidden_units'])}"


def run_benchmark(work_dir: str) -> dict[str, Any]:
    quick = FLAGS.quick
    hidden = (16, 8) if quick else (1024, 512, 256)
    seconds = min(FLAGS.seconds, 1.5) if quick else FLAGS.seconds
    soak_seconds = min(FLAGS.soak_seconds, 6.0) if quick else FLAGS.soak_seconds
    iters = min(FLAGS.in_process_iters, 30) if quick else FLAGS.in_process_iters
    concurrency = [int(c) for c in FLAGS.concurrency]
    keep_clients = min(FLAGS.keepalive_clients, 50) if quick else FLAGS.keepalive_clients
    keep_seconds = min(FLAGS.keepalive_seconds, 1.5) if quick else FLAGS.keepalive_seconds
    limit = (min(FLAGS.body_limit_mib, 4) if quick else FLAGS.body_limit_mib) << 20
    profile_iters = min(FLAGS.profile_iters, 20) if quick else FLAGS.profile_iters
    env = environment()

    export_base = FLAGS.saved_model_base
    if export_base is None:
        t = time.monotonic()
        export_base = train_model(os.path.join(work_dir, "train"), hidden)
        print(f"trained and exported in {time.monotonic() - t:.1f} s", flush=True)
    src = latest_version_dir(export_base)
    base = os.path.join(work_dir, "models", MODEL_NAME)
    os.makedirs(base)
    shutil.copytree(src, os.path.join(base, "1"))

    dtypes = rank_input_dtypes(src)
    request = build_request(dtypes, FLAGS.candidates)
    in_process = bench_in_process(src, rank_tensors(*request), iters)
    print(f"in-process p50 {in_process['p50_ms']:.2f} ms", flush=True)

    server = ServerProcess(base, os.path.join(work_dir, "server.log"), max_body_bytes=limit)
    try:
        startup = server.wait_for_version(1, FLAGS.startup_timeout)
        side = bench_side_by_side(src, server, request, 4 if quick else 20, 10 if quick else 30)
        print(
            f"side by side: in-process p50 {side['in_process']['p50_ms']:.2f} ms, gRPC "
            f"p50 {side['grpc']['p50_ms']:.2f} ms, ratio {side['ratio_p50']:.2f}",
            flush=True,
        )
        points = []
        for protocol in ("grpc", "rest"):
            for clients in concurrency:
                point = run_load(protocol, server, request, clients, seconds)
                point.pop("_calls")
                print(
                    f"{protocol} x{clients}: p50 {point['p50_ms']:.2f} ms, "
                    f"{point['requests_per_s']:.1f} req/s, failed {point['failed']}",
                    flush=True,
                )
                points.append(point)
        soak = run_soak(
            server, request, base, max(concurrency), soak_seconds, FLAGS.startup_timeout
        )
        keepalive = run_keepalive(server, rank_body(request), keep_clients, keep_seconds)
        print(
            f"REST keep-alive x{keep_clients}: {keepalive['requests']} requests, "
            f"failed {keepalive['failed']}",
            flush=True,
        )
        limits = check_limits(server, limit)
        body, rows = limit_sized_body(dtypes, limit)
        memory = measure_limit_request(server, body, rows)
        del body
        print(
            f"{memory['body_mib']:.1f} MiB request: RSS {memory['rss_mib_before']:.0f} → peak "
            f"{memory['rss_mib_peak']:.0f} → {memory['rss_mib_after_2s']:.0f} MiB",
            flush=True,
        )
    finally:
        server.stop()

    grpc_1 = next((p for p in points if p["protocol"] == "grpc" and p["clients"] == 1), None)
    ratio = side["ratio_p50"]
    profile = profile_grpc(src, request, profile_iters, grpc_1["p50_ms"] if grpc_1 else 0.0)
    limits_ok = (
        limits.get("chunk_size_minus_1", {}).get("status") == 400
        and limits.get("content_length_over_limit", {}).get("status") == 413
        and limits.get("chunked_over_limit", {}).get("status") == 413
        and all(case.get("seconds", 99) < 5 for case in limits.values())
    )
    failed_total = sum(p["failed"] for p in points) + soak["failed"]
    reload = soak["reload"]
    report = {
        "environment": env,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "quick": quick,
        "hidden_units": None if FLAGS.saved_model_base else list(hidden),
        "saved_model": src,
        "candidates": FLAGS.candidates,
        "server_startup_s": startup,
        "in_process": in_process,
        "side_by_side": side,
        "points": points,
        "soak": soak,
        "keepalive": keepalive,
        "limits": {"max_body_bytes": limit, **limits},
        "limit_request_memory": memory,
        "grpc_profile": profile,
        "targets": {
            "grpc_vs_in_process_p50": ratio,
            "ratio_target": RATIO_TARGET,
            "ratio_met": bool(ratio <= RATIO_TARGET),
            "failed_total": failed_total,
            "memory_growth_mib": soak["rss"]["growth_mib"],
            "memory_grew": soak["rss"]["grew_after_baseline"],
            "reload_ok": "error" not in reload
            and reload.get("failed_during") == 0
            and "seconds_to_available" in reload,
            "keepalive_failed": keepalive["failed"],
            "limits_ok": limits_ok,
        },
    }
    return report


def main(argv: list[str]) -> None:
    del argv
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_serving_")
    os.makedirs(work_dir, exist_ok=True)
    try:
        report = run_benchmark(work_dir)
    finally:
        if FLAGS.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    markdown = to_markdown(report)
    print(markdown)
    if FLAGS.output_json:
        with open(FLAGS.output_json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    if FLAGS.output_md:
        with open(FLAGS.output_md, "w") as f:
            f.write(markdown)


if __name__ == "__main__":
    app.run(main)
