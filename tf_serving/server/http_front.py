"""The REST front: aiohttp's HTTP server (C llhttp parser) in front of `RestApi`.

Why aiohttp (BUILD.md, "Local server"): a maintained asyncio server whose llhttp parser
refuses malformed framing (bad chunk sizes, duplicate or conflicting Content-Length),
with keep-alive timeouts and line/header limits, and no ASGI layer in between. What this
module adds on top, so that a hostile or busy client cannot hurt the server:

* a body limit for every transfer encoding: a Content-Length above it is answered 413
  before the body is read; a chunked (or compressed) body is counted while it is read and
  refused as soon as it passes the limit; the rest is discarded for at most
  ``LINGER_S`` (so the client can read the answer), then the connection is closed;
* at most ``max_in_flight`` requests at once; the next one is answered 503 at once
  (``{"error": ...}``, ``Retry-After``), never reset;
* the model work runs in a thread pool of ``max_in_flight`` threads, off the event loop;
* every error body, parse errors included, is TF Serving's ``{"error": "..."}``; a 500
  says nothing of the exception (it is logged); the ``Server`` header names no version.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import gc
import logging
import re
import threading
from collections.abc import Callable

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMessage,
    BadHttpMethod,
    HttpProcessingError,
    LineTooLong,
)
from aiohttp.web_protocol import RequestHandler

from tf_serving.server.json_codec import dumps
from tf_serving.server.rest_api import Answer, RestApi
from tf_serving.server.status import INTERNAL_MESSAGE

log = logging.getLogger("tf_serving")

SERVER_HEADER = "tf-serving-compatible"
DEFAULT_MAX_BODY_BYTES = 64 << 20
DEFAULT_MAX_IN_FLIGHT = 256
DEFAULT_BACKLOG = 1024
DEFAULT_KEEPALIVE_S = 60.0
MAX_REQUEST_LINE = 16384  # bytes of method + URL + version (414 above)
MAX_FIELD_SIZE = 8190  # bytes of one header line (431 above)
MAX_HEADERS = 128  # header lines (431 above)
LINGER_S = 1.0  # how long the rest of a refused body is read and discarded
_TRIM_ABOVE_BYTES = 4 << 20
# The method token of a request line as llhttp quotes it in its error (RFC 9110 tchars).
_METHOD_TOKEN = re.compile(
    r"b'([!#$%&*+.^_`|~0-9A-Za-z-]+) "
)  # give freed heap back to the OS after bodies this large


def _json_response(status: int, message: str, close: bool = False, **headers: str):
    response = web.Response(
        status=status,
        body=dumps({"error": message}),
        content_type="application/json",
        headers={"Server": SERVER_HEADER, **headers},
    )
    if close:
        response.force_close()
    return response


class _Protocol(RequestHandler):
    """aiohttp's connection handler with JSON error bodies and no internals in a 500."""

    __slots__ = ()

    def close_after_response(self) -> None:
        """Close once the answer is written, without reading the rest of a broken body."""
        self._lingering_time = 0.0

    def data_received(self, data: bytes) -> None:
        waiting = len(self._messages)
        super().data_received(data)
        request = self._current_request
        if request is not None and len(self._messages) > waiting:
            message = self._messages[-1][0]
            exc = getattr(message, "exc", None)
            if isinstance(exc, HttpProcessingError) and not request.content.is_eof():
                # A framing error inside the body of the request being read (a chunk size
                # of -1, say): fail its read now instead of waiting for more data.
                request.content.set_exception(exc)

    def handle_error(self, request, status=500, exc=None, message=None):
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        if status == 500:
            log.error("internal error in the HTTP layer", exc_info=exc)
            text = INTERNAL_MESSAGE
        elif isinstance(exc, LineTooLong):
            limit = exc.args[1] if len(exc.args) > 1 else None
            if limit == MAX_REQUEST_LINE:
                status, text = 414, f"Request-URI too long: the limit is {MAX_REQUEST_LINE} bytes"
            else:
                status = 431
                text = f"Request header field too large: the limit is {MAX_FIELD_SIZE} bytes"
        elif isinstance(exc, BadHttpMethod) and _METHOD_TOKEN.search(exc.message):
            # A well-formed method llhttp does not know: evhttp answers 501 (http.c).
            method = _METHOD_TOKEN.search(exc.message).group(1)
            status, text = 501, f"Method not implemented: {method}"
        elif isinstance(exc, BadHttpMessage) and "Too many headers" in exc.message:
            status, text = 431, f"Too many request header fields: the limit is {MAX_HEADERS}"
        else:
            detail = exc.message if isinstance(exc, HttpProcessingError) else (message or "")
            text = f"Malformed HTTP request: {str(detail)[:300]}"
        return _json_response(status, text, close=True)


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Protocol(self, loop=self._loop, **self._kwargs)


class _TooLarge(Exception):
    pass


class HttpFront:
    """Serves a `RestApi` on ``host:port`` from an event loop in its own thread.

    Args:
      max_body_bytes: largest request body (after decompression) accepted; 413 above.
      max_in_flight: requests handled at once (body read to answer written); the next
        ones are answered 503 until one finishes. Also the size of the inference pool.
      backlog: the listen backlog (connections the kernel queues before accept).
      keepalive_timeout_s: an idle keep-alive connection is closed after this long.
      observe: called with every `Answer` and its duration (the metrics).
    """

    def __init__(
        self,
        api: RestApi,
        host: str,
        port: int,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        backlog: int = DEFAULT_BACKLOG,
        keepalive_timeout_s: float = DEFAULT_KEEPALIVE_S,
        observe: Callable[[Answer, float, str], None] | None = None,
    ):
        for name, value in (
            ("max_body_bytes", max_body_bytes),
            ("max_in_flight", max_in_flight),
            ("backlog", backlog),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if keepalive_timeout_s <= 0:
            raise ValueError(f"keepalive_timeout_s must be > 0, got {keepalive_timeout_s!r}")
        self.api = api
        self.host = host
        self.port = port
        self.max_body_bytes = max_body_bytes
        self.max_in_flight = max_in_flight
        self.backlog = backlog
        self.keepalive_timeout_s = keepalive_timeout_s
        self.observe = observe
        self.in_flight = 0
        self.rejected = 0
        self.stopping = False
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_in_flight, thread_name_prefix="rest-inference"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.ServerRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> int:
        """Binds and starts serving; returns the port. Raises OSError if it cannot bind."""
        self._thread = threading.Thread(target=self._run, name="rest", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise OSError(f"cannot serve REST on {self.host}:{self.port}: {self._error}")
        return self.port

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._start())
        except BaseException as e:  # noqa: BLE001 - reported by start()
            self._error = e
            loop.close()  # before start() returns: a stop() then finds it closed
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    async def _start(self) -> None:
        server = _Server(
            self._handle,
            keepalive_timeout=self.keepalive_timeout_s,
            lingering_time=LINGER_S,
            max_line_size=MAX_REQUEST_LINE,
            max_field_size=MAX_FIELD_SIZE,
            max_headers=MAX_HEADERS,
            access_log=None,
        )
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self.host, self.port, backlog=self.backlog, reuse_address=True
        )
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        """Answers new requests 503, closes the listener and connections, joins the thread."""
        self.stopping = True
        if self._thread is not None:  # start() ran, so the thread has set self._loop
            try:
                self._loop.call_soon_threadsafe(self._loop.stop)
            except RuntimeError:  # the loop is closed: a failed start, or stopped already
                pass
            self._thread.join(30)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- requests -------------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        start = loop.time()
        if self.stopping:
            return _json_response(503, "Server is shutting down", close=True)
        if self.in_flight >= self.max_in_flight:
            self.rejected += 1
            answer = Answer(503, code="UNAVAILABLE")
            self._observe(answer, loop.time() - start, request.path)
            return _json_response(
                503,
                f"Server is overloaded: {self.in_flight} requests in flight, the limit "
                f"(max_in_flight_requests) is {self.max_in_flight}; retry later",
                **{"Retry-After": "1"},
            )
        self.in_flight += 1
        try:
            try:
                body = await self._read_body(request)
            except _TooLarge as e:
                self._observe(Answer(413, code="RESOURCE_EXHAUSTED"), loop.time() - start, "")
                return _json_response(
                    413,
                    f"Request body too large: {e}; the limit is {self.max_body_bytes} bytes "
                    "(max_body_bytes)",
                    close=True,
                )
            except HttpProcessingError as e:
                if isinstance(request.protocol, _Protocol):
                    request.protocol.close_after_response()
                return _json_response(400, f"Malformed HTTP request: {e.message[:300]}", close=True)
            size = len(body)
            answer = await loop.run_in_executor(
                self._pool,
                self._call,
                request.method,
                request.raw_path,
                body,
                request.headers.get("Origin", ""),
                size,
            )
            del body
        finally:
            self.in_flight -= 1
        self._observe(answer, loop.time() - start, request.path)
        headers = {"Server": SERVER_HEADER, **answer.headers}
        if answer.text is not None:
            return web.Response(
                status=answer.status,
                text=answer.text,
                content_type=answer.content_type,
                headers=headers,
            )
        data = b"" if answer.obj is None else dumps(answer.obj)
        return web.Response(
            status=answer.status, body=data, content_type=answer.content_type, headers=headers
        )

    async def _read_body(self, request: web.BaseRequest) -> bytearray:
        """The whole body, refusing it (`_TooLarge`) as soon as it passes the limit."""
        limit = self.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise _TooLarge(f"Content-Length is {length} bytes")
        if not request.body_exists:
            return bytearray()
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = bytearray()
        while True:
            chunk = await request.content.readany()
            if not chunk:
                return body
            if len(body) + len(chunk) > limit:
                raise _TooLarge(f"more than {limit} bytes were sent")
            body += chunk

    def _call(self, method: str, path: str, body: bytearray, origin: str, size: int) -> Answer:
        try:
            return self.api.handle(method, path, body, origin)
        finally:
            del body
            if size > _TRIM_ABOVE_BYTES:
                release_memory()

    def _observe(self, answer: Answer, seconds: float, path: str) -> None:
        if self.observe is not None:
            try:
                self.observe(answer, seconds, path)
            except Exception:  # noqa: BLE001 - metrics never fail a request
                log.exception("recording metrics failed")


def release_memory() -> None:
    """Frees what a large request left: cyclic garbage, then the C heap's free pages."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass
