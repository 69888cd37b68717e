"""The gateway's HTTP connections: aiohttp's protocol, bounded against slow and hostile clients.

aiohttp's server closes idle keep-alive connections, but has no deadline for a
request's headers or body, no cap on open connections, and answers its own
parser's errors in plain text with a traceback in the log. This module adds:

- ``header_timeout_s``: from a request's first byte to the end of its headers;
- ``body_timeout_s``: from the end of the headers to the end of the body;
- ``max_connections``: past it, a new connection gets a 503 and is closed at once;
- parser errors (a header line too long, too many headers, a bad chunk, an unknown
  method...) answered as OpenAI-shaped JSON with a fitting status, logged in one line.

A request cut off by a timeout gets a 408 when nothing has been sent for it yet.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.http_parser import RawRequestMessage
from aiohttp.http_exceptions import BadHttpMethod, DecompressSizeError, HttpProcessingError, LineTooLong

from .direct import dispatcher
from .errors import error_body, error_response

log = logging.getLogger("llmroute.gateway")

_LOG_EVERY_S = 10.0
_HEAD_ROOM_BYTES = 4096  # what a writer adds around a body: status line and headers, chunk framing


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    write_timeout_s: float = 30.0
    """A whole (non-streamed) answer must be taken by the client within this; streams bound each write."""
    keepalive_timeout_s: float = 75.0
    max_header_bytes: int = 8190
    max_headers: int = 128
    max_body_bytes: int = 4 * 1024 * 1024


def write_may_wait(protocol: Any, size: int) -> bool:
    """Whether writing ``size`` more bytes to a client can wait on it: only when its buffer would pass the
    high-water mark, or writing is paused already. Below that a write returns at once, so a write timeout's
    timer (about 10 µs each) is armed only for the writes that can wait."""
    transport = protocol.transport
    if transport is None or protocol.writing_paused:
        return True
    return transport.get_write_buffer_size() + size + _HEAD_ROOM_BYTES >= transport.get_write_buffer_limits()[1]


def default_max_connections() -> int:
    """Half the process's open-file limit (the other half is for providers, the ledger and logs), at most 10,000."""
    try:
        import resource
    except ImportError:  # Windows
        return 10_000
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, soft // 2))


def raw_error(status: int, message: str, code: str) -> bytes:
    """A complete JSON error response with ``Connection: close``, for a connection no handler will answer."""
    body = orjson.dumps(error_body(message, "invalid_request_error" if status < 500 else "server_error", code))
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


TOO_MANY_CONNECTIONS = raw_error(503, "the gateway has too many open connections; retry shortly",
                                 "too_many_connections")


class _Throttled:
    """Log a recurring event at most once per interval, with how many happened so far: hits inside an
    interval are logged at its end, so a burst is reported whole, not as its first one."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.count = 0
        self._logged = 0
        self._last = -_LOG_EVERY_S
        self._args: tuple[Any, ...] = ()
        self._pending: asyncio.TimerHandle | None = None

    def hit(self, *args: Any) -> None:
        """Called from the event loop (protocol callbacks)."""
        self.count += 1
        self._args = args
        wall = time.monotonic()
        if wall - self._last >= _LOG_EVERY_S:
            self._emit()
        elif self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(self._last + _LOG_EVERY_S - wall, self._flush)

    def _flush(self) -> None:
        self._pending = None
        if self.count > self._logged:
            self._emit()

    def _emit(self) -> None:
        self._last = time.monotonic()
        self._logged = self.count
        log.warning(self.message, self.count, *self._args)


class OwnConnection(Protocol):
    """A connection served by another protocol than aiohttp's (the hot path): drained on shutdown too."""

    def close(self) -> None: ...

    async def shutdown(self, timeout_s: float | None) -> None: ...


class GatewayServer(web.Server):
    """aiohttp's ``Server`` for the app, making ``GatewayProtocol`` connections (or, given a
    ``connection_factory``, that factory's, which hand over to ``adopting_protocol()``) and counting them."""

    def __init__(self, app_server: web.Server, limits: ConnectionLimits, *, request_handler: Any = None,
                 connection_factory: Callable[[GatewayServer], asyncio.Protocol] | None = None,
                 **handler_kwargs: Any) -> None:
        super().__init__(request_handler or app_server.request_handler, request_factory=app_server.request_factory,
                         handler_cancellation=app_server.handler_cancellation, **handler_kwargs)
        self.limits = limits
        self.open_connections = 0
        self.connection_factory = connection_factory
        self.own_connections: set[OwnConnection] = set()
        self._handler_kwargs = handler_kwargs
        self._event_loop = asyncio.get_running_loop()
        self.refused = _Throttled("gateway.max_connections reached: %d connections refused so far (limit %d); "
                                  "new connections get a 503 until others close")
        self.slow_headers = _Throttled("closed %d connections so far whose headers took longer than "
                                       "gateway.header_timeout_s (%g s)")
        self.slow_bodies = _Throttled("closed %d connections so far whose body took longer than "
                                      "gateway.body_timeout_s (%g s)")
        self.slow_readers = _Throttled("closed %d connections so far whose client did not take its answer within "
                                       "gateway.write_timeout_s (%g s)")

    def __call__(self) -> asyncio.Protocol:
        if self.connection_factory is not None:
            return self.connection_factory(self)
        return GatewayProtocol(self, loop=self._event_loop, **self._handler_kwargs)

    def admit(self) -> bool:
        """Count a new connection, of either protocol; False (and logged, throttled) past max_connections: it
        gets ``TOO_MANY_CONNECTIONS`` and is closed."""
        if self.open_connections >= self.limits.max_connections:
            self.refused.hit(self.limits.max_connections)
            return False
        self.open_connections += 1
        return True

    def release(self) -> None:
        """An admitted connection is gone."""
        self.open_connections -= 1

    def adopting_protocol(self) -> GatewayProtocol:
        """aiohttp's protocol for a connection another protocol accepted and counted (``GatewayProtocol.adopt``)."""
        return GatewayProtocol(self, loop=self._event_loop, **self._handler_kwargs)

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for connection in list(self.own_connections):
            connection.close()

    async def shutdown(self, timeout: float | None = None) -> None:
        await asyncio.gather(super().shutdown(timeout),
                             *(c.shutdown(timeout) for c in list(self.own_connections)))


class GatewayRunner(web.AppRunner):
    """An ``AppRunner`` whose server is a ``GatewayServer``, dispatching the app's exact-path POST routes
    directly (``dispatch.dispatcher``); its connections are ``connection_factory``'s when given."""

    def __init__(self, app: web.Application, limits: ConnectionLimits, *, shutdown_timeout: float,
                 handler_cancellation: bool = True,
                 connection_factory: Callable[[GatewayServer], asyncio.Protocol] | None = None,
                 **handler_kwargs: Any) -> None:
        super().__init__(app, shutdown_timeout=shutdown_timeout, handler_cancellation=handler_cancellation,
                         **handler_kwargs)
        self._limits = limits
        self._connection_factory = connection_factory
        self._handler_kwargs = handler_kwargs

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # the app is started and frozen: its routes are final
        return GatewayServer(server, self._limits, request_handler=dispatcher(self.app, server.request_handler),
                             connection_factory=self._connection_factory, **self._handler_kwargs)


class GatewayProtocol(web.RequestHandler):
    """One client connection, with deadlines for headers and body and JSON answers to malformed requests."""

    __slots__ = ("_gateway_server", "_counted", "_header_timer", "_body_timer", "_body")

    def __init__(self, manager: GatewayServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gateway_server = manager
        self._counted = False
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body: Any = None

    # -- connection cap ---------------------------------------------------------------

    def adopt(self, transport: asyncio.Transport, data: bytes, *, writing_paused: bool) -> None:
        """Take over a connection another protocol accepted and counted, with the bytes it read and did not
        answer (they start at a request's first byte)."""
        self._counted = True
        super().connection_made(transport)
        if writing_paused:
            self.pause_writing()
        if data:
            self.data_received(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._gateway_server.admit():
            self._abort(TOO_MANY_CONNECTIONS)
            return
        self._counted = True

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._gateway_server.release()
        self._cancel_timers()
        super().connection_lost(exc)

    # -- header and body deadlines ------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:  # a request's headers are complete, or the parser gave up
            self._headers_done()
        elif data and self._header_timer is None and self._body is None and not self._force_close:
            # A request has begun and its headers are not all here: they have header_timeout_s from now. (A
            # request that arrives whole, the usual case, never needs the timer.)
            self._header_timer = self._loop.call_later(self._gateway_server.limits.header_timeout_s,
                                                       self._header_timeout)
        if self._body is not None and self._body.is_eof():
            self._body = None
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

    def _headers_done(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        message, payload = self._messages[-1]
        if isinstance(message, RawRequestMessage) and not message.path.startswith("/"):
            self._messages.pop()  # CONNECT host:port, OPTIONS *: no route can take it, and aiohttp's answer is text
            connect = message.method == "CONNECT"
            log.info("rejected a request for %s %s", message.method, "a tunnel" if connect else "a non-path target")
            self._abort(raw_error(405 if connect else 400, "llmroute is not a proxy: CONNECT is not supported"
                                  if connect else "the request target must be a path such as /v1/chat/completions",
                                  "method_not_allowed" if connect else "bad_request"))
            return
        if self._body is not None and not isinstance(message, RawRequestMessage):
            self._body_refused(message.exc)  # e.g. a bad chunk size in a body a handler is reading
        elif not payload.is_eof():
            if self._body_timer is not None:
                self._body_timer.cancel()
            self._body = payload
            self._body_timer = self._loop.call_later(self._gateway_server.limits.body_timeout_s, self._body_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._request_in_progress or self._messages:  # a pipelined request trickling in behind one in flight
            self.close()  # finish what is in flight, then close
            return
        limits = self._gateway_server.limits
        self._gateway_server.slow_headers.hit(limits.header_timeout_s)
        self._abort(raw_error(408, f"request headers not received within "
                              f"{limits.header_timeout_s:g} s", "header_timeout"))

    def _body_timeout(self) -> None:
        self._body_timer = None
        if self._body is None or self._body.is_eof():
            return
        self._body = None
        limits = self._gateway_server.limits
        self._gateway_server.slow_bodies.hit(limits.body_timeout_s)
        current = self._current_request
        answered = current is None and not self._messages or current is not None and current.writer.output_size
        self._abort(None if answered else raw_error(
            408, f"request body not received within {limits.body_timeout_s:g} s", "body_timeout"))

    def _body_refused(self, exc: BaseException) -> None:
        """The parser failed in the middle of a body a handler is waiting for: answer for it and close."""
        status, code, text = parser_error(exc) if isinstance(exc, HttpProcessingError) else (400, "bad_request", "")
        log.info("rejected a malformed request body: %d %s", status, text)
        current = self._current_request
        started = current is not None and current.writer.output_size
        self._abort(None if started else raw_error(status, f"malformed HTTP request: {text}", code))

    def _abort(self, response: bytes | None) -> None:
        """Send ``response`` if given, then close; a handler still reading the request is cancelled."""
        transport = self.transport
        if transport is not None and response is not None and not transport.is_closing():
            transport.write(response)
        self._cancel_timers()
        if self._request_in_progress and self._task_handler is not None:
            # Now, not when the connection is reported lost: a handler woken by the last bytes read would
            # otherwise run first and find its connection gone.
            self._task_handler.cancel()
        self.force_close()  # transport.close(): what was written is still sent, then FIN

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None
        self._body = None

    # -- a client that does not take its answer -------------------------------------------

    async def finish_response(self, request: Any, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        """Send a whole answer, within ``write_timeout_s`` when it can wait: a client that never reads would
        otherwise hold its connection and the answer's bytes for good. Nearly every answer fits the socket's
        buffer and cannot wait, so it gets no timer (one would cost ~10 µs a request)."""
        body = getattr(resp, "body", None)
        if not write_may_wait(self, len(body) if isinstance(body, (bytes, bytearray)) else 0):
            return await super().finish_response(request, resp, start_time)
        limits = self._gateway_server.limits
        try:
            async with asyncio.timeout(limits.write_timeout_s):
                return await super().finish_response(request, resp, start_time)
        except TimeoutError:
            self._gateway_server.slow_readers.hit(limits.write_timeout_s)
            if self.transport is not None:
                self.transport.abort()  # what is buffered for the client is let go
            return resp, True

    # -- errors aiohttp answers itself ----------------------------------------------------

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """OpenAI-shaped JSON instead of aiohttp's plain text; one log line for a malformed request."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        if isinstance(exc, HttpProcessingError):
            status, code, text = parser_error(exc)
            log.info("rejected a malformed request from %s: %d %s", request.remote, status, text)
            response = error_response(status, f"malformed HTTP request: {text}", code=code)
        elif status == 504:
            log.warning("request handler timed out: %s %s", request.method, request.path)
            response = error_response(504, "the request timed out in llmroute", "server_error", "timeout")
        else:
            log.error("unexpected error handling %s %s", request.method, request.path, exc_info=exc)
            response = error_response(500, "internal error in llmroute", "server_error", "internal_error")
        response.force_close()
        return response


def parser_error(exc: HttpProcessingError) -> tuple[int, str, str]:
    """Status, error code and a one-line reason for an error from aiohttp's HTTP parser."""
    text = (exc.message or type(exc).__name__).strip().splitlines()[0].rstrip(":")[:200]
    if isinstance(exc, LineTooLong):
        return 431, "header_too_large", "a request line or header line is over the size limit (gateway.max_header_bytes)"
    if "Too many headers" in text:
        return 431, "too_many_headers", "too many header lines (gateway.max_headers)"
    if isinstance(exc, BadHttpMethod):
        if "HTTPS" in text:
            return 400, "bad_request", text
        return 501, "method_not_implemented", "unknown or malformed HTTP method"
    if isinstance(exc, DecompressSizeError):
        return 413, "request_too_large", text
    return 400, "bad_request", text
