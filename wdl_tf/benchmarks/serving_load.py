"""Load on a served model: concurrent clients, the soak with a hot reload, keep-alive REST
clients, the body limit on raw sockets and the memory of one request at the limit.

Every call is timed and every failure counted (never raised), since the failures are one of
the figures.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from wdl_tf.benchmarks.serving_server import (
    HOST,
    MODEL_NAME,
    ServerProcess,
    make_client,
    publish_version,
)
from wdl_tf.benchmarks.stats import percentiles

RSS_BASELINE_S = 10.0  # RSS growth is measured after this point of the soak
# Allocator noise, not a leak: the 2026-12-01 runs moved -0.2 to +0.2 MiB before the reload.
LEAK_TOLERANCE_MIB = 2.0
MAX_REQUESTS_PER_CLIENT = 1_000_000  # bounds every load loop besides its deadline
WARMUP_TIMEOUT_S = 120.0  # for every client to connect or make its first call


class _Window:
    """A timed window of ``seconds`` (plus up to ``extra`` more) that opens when the last of
    ``clients`` threads calls `ready`, so that connecting and warm-up calls stay outside it.
    ``on_open(start)`` runs in the last thread to arrive, before any is released."""

    def __init__(self, clients: int, seconds: float, extra: float = 0.0, on_open=None):
        self.start = self.deadline = self.hard_deadline = None
        self._seconds, self._extra, self._on_open = seconds, extra, on_open
        self._barrier = threading.Barrier(clients, action=self._open)

    def _open(self) -> None:
        now = time.monotonic()
        self.start, self.deadline = now, now + self._seconds
        self.hard_deadline = self.deadline + self._extra
        if self._on_open is not None:
            self._on_open(now)

    def ready(self) -> None:
        """Waits until every client is ready (raises `threading.BrokenBarrierError` after
        `WARMUP_TIMEOUT_S`)."""
        self._barrier.wait(WARMUP_TIMEOUT_S)

    @property
    def opened(self) -> bool:
        return self.start is not None


def run_load(
    protocol: str,
    server: ServerProcess,
    request: tuple,
    clients: int,
    seconds: float,
    on_tick=None,
    until: threading.Event | None = None,
    max_extra_seconds: float = 0.0,
    on_open=None,
) -> dict[str, Any]:
    """``clients`` threads calling rank for ``seconds``; ``on_tick(elapsed)`` about every 1 s.

    The timed window opens once every client has made its first (warm-up) call:
    ``on_open(start)`` gets its `time.monotonic` start, and elapsed times count from it.
    (It used to open before the clients started; 16 clients' warm-up calls on a loaded
    2-core machine once outlasted a 0.75 s window, which then held no request at all.)
    With ``until``, the load goes on past ``seconds`` until it is set (at most
    ``max_extra_seconds`` more).

    Returns the latency summary, requests/s, failures and the (start, end, ok) of each call
    (relative to the window's start) so callers can count failures in a window.
    """
    context, candidates, dtypes = request
    calls: list[tuple[float, float, bool]] = []
    errors: list[str] = []
    warmup_failures = 0  # clients whose first call failed: counted as failed requests
    lock = threading.Lock()
    window = _Window(clients, seconds, max_extra_seconds, on_open)

    def finished(now: float) -> bool:
        if now < window.deadline:
            return False
        return until is None or until.is_set() or now >= window.hard_deadline

    def call(client) -> None:
        client.rank(context, candidates, dtypes=dtypes, repeat_context=False)

    def worker() -> None:
        nonlocal warmup_failures
        client = None
        try:
            try:
                client = make_client(protocol, server)
                call(client)  # warm the connection, outside the window
            finally:
                window.ready()  # a failed warm-up still lets the others go
            t0 = window.start
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
        except Exception as e:  # noqa: BLE001 - a client that could not start is reported
            with lock:
                warmup_failures += 1
                if len(errors) < 10:
                    errors.append(f"warm-up: {e!r}"[:300])
        finally:
            if client is not None:
                client.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    started = time.monotonic()
    tick = 1.0
    while any(t.is_alive() for t in threads):
        now = time.monotonic()
        if on_tick is not None and window.opened and now - window.start >= tick:
            on_tick(now - window.start)
            tick += 1.0
        if now - started > WARMUP_TIMEOUT_S + seconds + max_extra_seconds + 120:
            errors.append("load threads did not finish in time")  # hung calls (daemon threads)
            break
        time.sleep(0.05)
    stopped = time.monotonic()
    if not window.opened:
        errors.append(f"the {clients} clients did not all finish their warm-up call")
    wall = max(stopped - window.start, 1e-9) if window.opened else 1e-9
    ok_latencies = [end - start for start, end, ok in calls if ok]
    return {
        "protocol": protocol,
        "clients": clients,
        "seconds": round(wall, 2),
        "requests": len(calls) + warmup_failures,
        "failed": sum(1 for *_, ok in calls if not ok) + warmup_failures,
        "requests_per_s": len(ok_latencies) / wall,
        **percentiles(ok_latencies),
        "errors": errors,
        "_calls": calls,
    }


def run_soak(
    server: ServerProcess, request: tuple, base: str, clients: int, seconds: float, timeout: float
) -> dict[str, Any]:
    rss: list[tuple[float, int]] = []
    reload: dict[str, Any] = {}
    reload_done = threading.Event()
    baseline_s = min(RSS_BASELINE_S, seconds / 3)
    t0 = 0.0  # the load window's start (`run_load`'s ``on_open``): the origin of every time

    def opened(start: float) -> None:
        nonlocal t0
        t0 = start

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

    result = run_load(
        "grpc",
        server,
        request,
        clients,
        seconds,
        on_tick=on_tick,
        until=reload_done,
        max_extra_seconds=timeout,
        on_open=opened,
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
    # Growth under a steady load is measured up to the reload: loading version 2 adds its
    # graph (~50 MiB here), and the freed version 1 stays in the allocator's arenas.
    before_reload = reload.get("rss_mib_before")
    steady = before_reload - at_baseline / 2**20 if before_reload is not None else growth / 2**20
    result["rss"] = {
        "baseline_at_s": baseline_s,
        "mib_at_baseline": at_baseline / 2**20,
        "mib_at_end": end_rss / 2**20,
        "mib_max_after_baseline": (max(after) if after else 0) / 2**20,
        "growth_mib": growth / 2**20,
        "growth_before_reload_mib": steady,
        "grew_under_load": steady > LEAK_TOLERANCE_MIB,
        "samples_mib": [[round(t, 1), round(b / 2**20, 1)] for t, b in rss],
    }
    result["reload"] = reload
    return result


def run_keepalive(server: ServerProcess, body: bytes, clients: int, seconds: float) -> dict:
    """``clients`` threads, each on one keep-alive connection, POSTing ``body`` for ``seconds``."""
    import http.client

    path = f"/v1/models/{MODEL_NAME}:predict"
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    failures: list[str] = []
    counts = {"requests": 0, "failed": 0, "connections": 0}
    lock = threading.Lock()
    window = _Window(clients, seconds)  # opens once every client is connected

    def worker() -> None:
        connection = http.client.HTTPConnection(HOST, server.rest_port, timeout=60)
        mine, failed, errors = [], 0, []
        try:
            window.ready()
            for _ in range(MAX_REQUESTS_PER_CLIENT):
                start = time.monotonic()
                if start >= window.deadline:
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
    if not window.opened:
        raise RuntimeError(f"the {clients} keep-alive clients did not all connect")
    wall = max(time.monotonic() - window.start, 1e-9)
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
