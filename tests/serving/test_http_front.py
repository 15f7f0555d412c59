"""The local server's REST front under hostile or busy clients, on raw loopback sockets.

No model is needed: framing, limits, methods and error bodies are answered before (or
without) one. The expectations come from HTTP itself (RFC 9112 framing) and from TF
Serving's REST front (http_server.cc: OPTIONS, methods; evhttp's 501 for other methods).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from tf_serving.server import ModelServer
from tf_serving.server.http_front import MAX_REQUEST_LINE, SERVER_HEADER
from tf_serving.server.status import INTERNAL_MESSAGE

from .conftest import wait_for

LIMIT = 1 << 20  # the body limit of the server under test


@pytest.fixture(scope="module")
def server():
    server = ModelServer(
        {}, grpc_port=None, rest_port=0, max_body_bytes=LIMIT, rest_keepalive_timeout_s=1.0
    ).start()
    yield server
    server.stop()


class Raw:
    """A raw keep-alive connection: send bytes, read one response (status, headers, body)."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def response(self, head: bool = False) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a response; got {self.buffer!r}")
        header, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = header.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers.get("content-length", 0))
        while len(self.buffer) < length:
            if not self._fill():
                break
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed_by_server(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def _request(method: str, path: str, headers: dict[str, str] | None = None, body=b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _error(body: bytes) -> str:
    obj = json.loads(body)
    assert list(obj) == ["error"] and isinstance(obj["error"], str), obj
    return obj["error"]


# ----------------------------------------------------------------------------------------
# Framing and the body limit.


def test_chunk_size_minus_one_is_refused_at_once(server):
    """A chunk size of -1 is malformed (RFC 9112 §7.1: hex digits); answered without EOF."""
    raw = Raw(server.rest_port)
    try:
        raw.send(
            _request("POST", "/v1/models/m:predict", {"Transfer-Encoding": "chunked"})
            + b"-1\r\n"
            + b"x" * 4096
        )
        start = time.monotonic()
        status, headers, body = raw.response()  # the client keeps the connection open
        # A server waiting for more body (or EOF) would never answer: the read would time
        # out at 30 s. Well under that, with room for a loaded machine (it was < 3).
        assert time.monotonic() - start < 20
        assert status == 400
        assert headers["content-type"].startswith("application/json")
        assert "Malformed HTTP request" in _error(body)
        assert raw.closed_by_server(30)  # returns once closed
    finally:
        raw.close()


def test_content_length_over_the_limit_is_refused_before_the_body(server):
    raw = Raw(server.rest_port)
    try:
        raw.send(
            _request("POST", "/v1/models/m:predict", {"Content-Length": str(LIMIT + 1)})
        )  # no body is sent: the answer must not wait for it
        status, _, body = raw.response()
        assert status == 413
        message = _error(body)
        assert str(LIMIT + 1) in message and str(LIMIT) in message
    finally:
        raw.close()


def test_chunked_body_over_the_limit_is_refused_without_waiting_for_its_end(server):
    raw = Raw(server.rest_port)
    try:
        raw.send(_request("POST", "/v1/models/m:predict", {"Transfer-Encoding": "chunked"}))
        chunk = b"%x\r\n%s\r\n" % (64 << 10, b" " * (64 << 10))
        for _ in range(
            LIMIT // (64 << 10) + 2
        ):  # past the limit; the terminating chunk never comes
            raw.send(chunk)
        status, _, body = raw.response()
        assert status == 413 and str(LIMIT) in _error(body)
    finally:
        raw.close()


def test_two_content_length_headers_are_a_bad_request(server):
    raw = Raw(server.rest_port)
    try:
        raw.send(
            b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Content-Length: 50\r\n\r\n{}   "
        )
        status, _, body = raw.response()
        assert status == 400 and "Content-Length" in _error(body)
    finally:
        raw.close()


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (b"GET /" + b"a" * (MAX_REQUEST_LINE + 10) + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", 431),
        (
            b"GET /v1/models/m HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: 1\r\n" % i for i in range(200))
            + b"\r\n",
            431,
        ),
        (b"\x16\x03\x01garbage that is not HTTP\r\n\r\n", 400),
    ],
    ids=["uri-too-long", "header-too-large", "too-many-headers", "not-http"],
)
def test_bad_request_heads_get_json_errors(server, request_bytes, status):
    raw = Raw(server.rest_port)
    try:
        raw.send(request_bytes)
        got, headers, body = raw.response()
        assert got == status
        assert headers["content-type"].startswith("application/json")
        _error(body)
    finally:
        raw.close()


def test_consumed_body_is_released(server):
    """RestApi drops the raw body once parsed (the decoded document is all it keeps)."""
    body = bytearray(b'{"instances": [1]}')
    answer = server._rest_api.handle("POST", "/v1/models/absent:predict", body)
    assert answer.status == 404 and len(body) == 0


# ----------------------------------------------------------------------------------------
# Methods and error bodies (TF Serving's http_server.cc and evhttp's method set).


def test_head_options_and_other_methods_as_tf_serving(server):
    raw = Raw(server.rest_port)
    try:
        raw.send(_request("HEAD", "/v1/models/m"))
        status, headers, body = raw.response(head=True)
        assert status == 400 and body == b""  # "Malformed request: HEAD ...", body omitted
        assert headers["content-type"] == "application/json"

        raw.send(_request("OPTIONS", "/v1/models/m:predict", {"Origin": "https://app.example"}))
        status, _, body = raw.response()
        assert (status, body) == (200, b"")

        raw.send(_request("OPTIONS", "/v1/models/m:predict"))
        status, _, body = raw.response()
        assert status == 400
        assert _error(body) == "Origin header is missing in CORS preflight"

        for method in ("PUT", "DELETE", "PATCH"):
            raw.send(_request(method, "/v1/models/m", {"Content-Length": "0"}))
            status, _, body = raw.response()
            assert status == 400
            assert _error(body) == f"Malformed request: {method} /v1/models/m"

    finally:
        raw.close()
    for method in ("TRACE", "CONNECT", "FOO", "get"):  # not in evhttp's set: 501
        raw = Raw(server.rest_port)
        try:
            raw.send(_request(method, "/v1/models/m"))
            status, _, body = raw.response()
            assert status == 501 and _error(body) == f"Method not implemented: {method}"
        finally:
            raw.close()


def test_lone_surrogate_is_a_bad_request_not_a_500(server):
    raw = Raw(server.rest_port)
    try:
        body = b'{"instances": [{"w": ["\\ud800"]}]}'
        raw.send(_request("POST", "/v1/models/m:predict", {"Content-Length": str(len(body))}, body))
        status, _, answer = raw.response()
        assert status == 400
        message = _error(answer)
        assert "surrogate" in message and "Error" not in message.split(":")[0]
        assert "UnicodeEncodeError" not in message
    finally:
        raw.close()


def test_internal_errors_do_not_leak(server, monkeypatch):
    def boom(spec):
        raise RuntimeError("secret /etc/internal/path")

    monkeypatch.setattr(server.core, "model_status", boom)
    raw = Raw(server.rest_port)
    try:
        raw.send(_request("GET", "/v1/models/m"))
        status, headers, body = raw.response()
        assert status == 500
        assert _error(body) == INTERNAL_MESSAGE
        assert "secret" not in body.decode()
    finally:
        raw.close()


def test_server_header_names_no_versions(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    try:
        connection.request("GET", "/v1/models/m")
        response = connection.getresponse()
        response.read()
        assert response.getheader("Server") == SERVER_HEADER
        assert not any(c.isdigit() for c in SERVER_HEADER)
    finally:
        connection.close()


# ----------------------------------------------------------------------------------------
# Load: in-flight cap, keep-alive, many clients.


def test_requests_over_the_in_flight_cap_get_503_then_service_resumes():
    server = ModelServer({}, grpc_port=None, rest_port=0, max_in_flight_requests=1).start()
    holder = Raw(server.rest_port)
    try:
        # A request whose body has not all arrived holds the only slot.
        holder.send(_request("POST", "/v1/models/m:predict", {"Content-Length": "20"}, b"{"))
        # Until the server has taken it in (a fixed 0.3 s sleep assumed it had by then).
        wait_for(lambda: server.rest_stats["in_flight"] >= 1, timeout=60, interval=0.01)
        assert server.rest_stats["in_flight"] == 1
        other = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
        other.request("GET", "/v1/models/m")
        response = other.getresponse()
        assert response.status == 503 and response.getheader("Retry-After") == "1"
        assert "max_in_flight_requests" in _error(response.read())
        assert server.rest_stats["rejected"] >= 1
        holder.send(b'"instances": [1]}  ')
        assert holder.response()[0] == 404  # the held request completes
        other.request("GET", "/v1/models/m")  # and the same keep-alive connection works
        response = other.getresponse()
        assert response.status == 404
        response.read()
        other.close()
    finally:
        holder.close()
        server.stop()


def test_idle_keep_alive_connections_are_closed(server):
    raw = Raw(server.rest_port)
    try:
        raw.send(_request("GET", "/v1/models/m"))
        assert raw.response()[0] == 404
        assert raw.closed_by_server(30)  # rest_keepalive_timeout_s=1; returns once closed
    finally:
        raw.close()


def test_200_concurrent_keep_alive_clients_all_answered(server):
    clients, per_client = 200, 3
    failures: list[str] = []
    barrier = threading.Barrier(clients)

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
        try:
            barrier.wait(30)
            for _ in range(per_client):
                connection.request("GET", "/v1/models/m")
                response = connection.getresponse()
                response.read()
                if response.status != 404:
                    failures.append(str(response.status))
        except Exception as e:  # noqa: BLE001 - every failure counts
            failures.append(repr(e))
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:5]
