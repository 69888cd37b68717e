"""The completion endpoints' own HTTP/1.1 connection: httptools parsing, one write per answer.

aiohttp's server costs 25-44 µs of CPU a request over a bare httptools protocol
(its request, response and writer objects, a task per request, URL dispatch):
a fifth of a gateway request. Nearly every request a gateway sees is the same
shape: ``POST /v1/chat/completions`` (or ``/v1/completions``), HTTP/1.1, a
``Content-Length`` body under the limit, no ``Expect``, no content coding. Such
requests are parsed here and handed to the gateway's handler as a
``HotRequest``; the answer is framed in one string and sent in one write.

Anything else goes to aiohttp, unchanged: at the first request of any other
shape (another path or method, a chunked or compressed body, an ``Expect``,
HTTP/1.0, a header section over ``gateway.max_header_bytes``, too many headers,
a malformed request), the connection and every byte not yet answered are handed
to ``GatewayProtocol``, which answers it and every later request exactly as
before. The requests answered here keep the same limits: the connection cap
(counted once, whichever protocol holds it), header and body deadlines (408),
the body limit, the write deadline for a client that does not read, cancellation
when the client leaves, keep-alive with an idle timeout, pipelining, and a
graceful drain on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import httptools
from aiohttp import HttpVersion11, web
from aiohttp.tcp_helpers import tcp_keepalive
from multidict import CIMultiDict, CIMultiDictProxy

from .answer import Answer, header_lines, http11_head
from .protocol import TOO_MANY_CONNECTIONS, raw_error, write_may_wait
from .sse_writer import DONE, within

if TYPE_CHECKING:
    from .protocol import GatewayServer

log = logging.getLogger("llmroute.gateway")

HotHandler = Callable[["HotRequest"], Awaitable[Any]]

_MAX_QUEUED = 4  # pipelined requests parsed ahead of the one being answered; then reading pauses until 2
_HEAD_END = b"\r\n\r\n"
_CR_LF = (10, 13)
_NOT_HOT = frozenset((b"transfer-encoding", b"expect", b"content-encoding", b"upgrade"))


class _HandOver(Exception):
    """Raised from a parser callback: this request is not one for the hot path."""


class _QueueFull(Exception):
    """Raised from a parser callback: enough requests are parsed ahead of the one being answered."""


class HotRequest(dict[str, Any]):
    """What the gateway's completion handlers read of a request, for one parsed here.

    A dict, as aiohttp's request is a mapping for per-request values (the key, the prompt's token estimate).
    Its body is complete before the handler runs: ``content`` is the request itself, always at its end."""

    __slots__ = ("_connection", "body", "content_length", "events", "headers", "keep_alive", "method", "path")
    version = HttpVersion11

    def __init__(self, connection: HotConnection, path: str, headers: CIMultiDictProxy[str], body: bytes,
                 keep_alive: bool) -> None:
        super().__init__()
        self.method = "POST"
        self.path = path
        self.headers = headers
        self.body = body
        self.content_length = len(body)
        self.keep_alive = keep_alive
        self.events: HotEvents | None = None  # a stream's writer, once opened: the answer is its to send
        self._connection = connection

    @property
    def content(self) -> HotRequest:
        return self

    def is_eof(self) -> bool:
        return True

    def read_nowait(self) -> bytes:
        return self.body

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._connection.transport

    def open_events(self, headers: Mapping[str, str], timeout_s: float) -> HotEvents:
        """A stream's writer for this request: its head goes out with the first events."""
        self.keep_alive = self.keep_alive and not self._connection.closing
        self.events = HotEvents(self._connection, http11_head(200, header_lines(headers), self.keep_alive,
                                                              "Transfer-Encoding: chunked\r\n"), timeout_s)
        return self.events


def encode_answer(response: Answer | web.StreamResponse, keep_alive: bool) -> bytes:
    """A handler's whole answer (an ``Answer``, or an ``aiohttp`` ``Response`` such as an error) as bytes."""
    if type(response) is Answer:
        return response.encode(keep_alive)
    if not isinstance(response, web.Response) or response.prepared:
        raise TypeError(f"the hot path cannot send {response!r}")
    body = response.body
    if not isinstance(body, bytes):
        body = b"" if body is None else bytes(body)  # type: ignore[arg-type]
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "connection")}
    keep_alive = keep_alive and response.keep_alive is not False
    return http11_head(response.status, header_lines(headers), keep_alive, f"Content-Length: {len(body)}\r\n") + body


class HotEvents:
    """Writes a stream's events to a hot connection: ``write`` when that cannot wait, else ``send_bounded``."""

    __slots__ = ("_connection", "_head", "_room", "_timeout_s", "ended")

    def __init__(self, connection: HotConnection, head_bytes: bytes, timeout_s: float) -> None:
        self._connection = connection
        self._head = head_bytes  # sent with the first events: one write, as aiohttp does
        self._timeout_s = timeout_s
        self.ended = False  # the chunked body's end went out: the connection can take the next request
        transport = connection.transport
        # The client's high-water mark, less room for the head and chunk framing: read once, not per event.
        self._room = (transport.get_write_buffer_limits()[1] if transport is not None else 0) - len(head_bytes) - 64

    @property
    def response(self) -> None:
        """Nothing for a handler to return: the answer is on the wire already."""
        return None

    def _framed(self, data: bytes) -> bytes:
        framed = b"%x\r\n%s\r\n" % (len(data), data)
        if self._head:
            framed, self._head = self._head + framed, b""
        return framed

    def write(self, data: bytes) -> bool:
        """Hand ``data`` to the client's transport if that cannot wait; False (nothing written) if it could."""
        connection = self._connection
        transport = connection.transport
        if transport is None or connection.writing_paused or transport.is_closing() \
                or transport.get_write_buffer_size() + len(data) >= self._room:
            return False
        transport.write(self._framed(data))
        return True

    async def send_bounded(self, data: bytes) -> None:
        """Write ``data``; when the client's buffer is full, wait for it to take enough, within the timeout."""
        await self._send(self._framed(data))

    async def close(self) -> None:
        """``[DONE]``, then the end of the chunked body."""
        await self._send(self._framed(DONE) + b"0\r\n\r\n")
        self.ended = True

    async def _send(self, data: bytes) -> None:
        connection = self._connection
        waits = write_may_wait(connection, len(data))
        transport = connection.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        transport.write(data)
        if waits:
            await within(self._timeout_s, connection.drain())


class HotConnection(asyncio.Protocol):
    """One client connection, served by the hot path until a request of another shape hands it to aiohttp."""

    __slots__ = (
        "transport", "writing_paused", "closing", "_server", "_routes", "_loop", "_parser", "_buffer",
        "_url", "_headers", "_headers_done", "_high_water", "_length", "_body_start", "_keep_alive", "_queue",
        "_worker", "_waiter", "busy",
        "_handing_over", "_reading_paused", "_drain_waiter", "_header_timer", "_body_timer", "_idle_timer",
        "_linger_timer", "_idle_since", "_counted",
    )

    def __init__(self, server: GatewayServer, routes: Mapping[bytes, HotHandler]) -> None:
        self._server = server
        self._routes = routes
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.writing_paused = False
        self.closing = False  # shutting down: answer what is in flight, then close
        self._parser = httptools.HttpRequestParser(self)
        self._buffer = bytearray()  # bytes not yet answered, from the current message's first byte
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._headers_done = False
        self._length = 0
        self._body_start = 0
        self._high_water = 0
        self._keep_alive = True
        self._queue: list[tuple[HotHandler, HotRequest]] = []
        self._worker: asyncio.Task[None] | None = None  # answers the queue, one request at a time
        self._waiter: asyncio.Future[None] | None = None  # the idle worker waits on it
        self.busy = False  # a request is being answered
        self._handing_over = False
        self._reading_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None  # aborts a closed connection whose bytes do not go
        self._idle_since = 0.0
        self._counted = False

    @property
    def queued(self) -> int:
        """Requests parsed and waiting behind the one being answered (at most ``_MAX_QUEUED``)."""
        return len(self._queue)

    # -- the connection ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self._server
        if not server.admit():
            transport.write(TOO_MANY_CONNECTIONS)  # type: ignore[attr-defined]
            transport.close()
            return
        self._counted = True
        server.own_connections.add(self)
        tcp_keepalive(transport)  # as aiohttp does: a peer that vanished is found
        # Past this many unsent bytes an answer waits for the client (under the write deadline): read once.
        self._high_water = transport.get_write_buffer_limits()[1]  # type: ignore[attr-defined]
        self._idle()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._release()
        self.transport = None
        if self._worker is not None:
            self._worker.cancel()  # the client left: its handler stops, and the provider's stream is closed
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ConnectionResetError("the client closed the connection"))
            waiter.exception()  # retrieved: a drain cancelled meanwhile (shielded) would never read it

    def _release(self) -> None:
        """This connection no longer counts as open here (closed, or handed to aiohttp, which counts it)."""
        self._cancel_timers()
        if self._counted:
            self._counted = False
            self._server.release()
        self._server.own_connections.discard(self)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def drain(self) -> None:
        """Wait until the client's buffer is below its low-water mark."""
        if self.transport is None:
            raise ConnectionResetError("the client closed the connection")
        if not self.writing_paused:
            return
        if self._drain_waiter is None:
            self._drain_waiter = self._loop.create_future()
        await asyncio.shield(self._drain_waiter)

    # -- reading ----------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        if self._handing_over or self._reading_paused:
            return  # kept for whoever reads on: aiohttp, or this parser once the queue has room
        if buffer[0] in _CR_LF:
            self._skip_empty_lines()
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Feed the parser ``data`` (the end of the buffer); answer, time or hand over what it found."""
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _QueueFull):
                # The parser stopped after a request that filled the queue; reading is paused. What came after
                # it stays in the buffer, from the next request's first byte, for a new parser once there is room.
                self._parser = httptools.HttpRequestParser(self)
            else:  # malformed, or not for here (_HandOver): aiohttp answers it
                self._hand_over()
        else:
            if self._buffer:  # a request has begun and is not all here
                self._deadlines()
        if self._queue and not self.busy and self.transport is not None:
            self._wake()

    def _skip_empty_lines(self) -> None:
        """Drop the CR and LF bytes before a request line (the parser skips them too): the buffer starts at a
        request's first byte, which the body's offset is counted from."""
        buffer = self._buffer
        n = 1
        while n < len(buffer) and buffer[n] in _CR_LF:
            n += 1
        del buffer[:n]

    def _resume(self) -> None:
        """The queue has room: read again, and parse what was read while it had none."""
        self._reading_paused = False
        if self.transport is not None:
            self.transport.resume_reading()
        buffer = self._buffer
        if buffer:
            if buffer[0] in _CR_LF:
                self._skip_empty_lines()
            if buffer:
                self._parse(bytes(buffer))

    def _deadlines(self) -> None:
        """A request has begun and is not all here: its headers, then its body, get their own deadline."""
        limits = self._server.limits
        if not self._headers_done:
            if len(self._buffer) > limits.max_header_bytes:
                self._hand_over()  # a header section this large: aiohttp's limits decide (431 or serve)
            elif self._header_timer is None:
                self._header_timer = self._loop.call_later(limits.header_timeout_s, self._header_timeout)
        elif self._body_timer is None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None
            self._body_timer = self._loop.call_later(limits.body_timeout_s, self._body_timeout)

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Whether the request is one for here; else ``_HandOver`` stops the parser (aiohttp takes it)."""
        parser = self._parser
        if (self._url not in self._routes or parser.get_method() != b"POST"
                or parser.get_http_version() != "1.1" or len(self._headers) > self._server.limits.max_headers):
            raise _HandOver
        length = -1
        for name, value in self._headers:
            lower = name.lower()
            if lower == b"content-length":
                if length >= 0 or not value.isdigit():
                    raise _HandOver
                length = int(value)
            elif lower in _NOT_HOT:
                raise _HandOver
        if length < 0 or length > self._server.limits.max_body_bytes:
            raise _HandOver
        buffer = self._buffer  # it starts at this request's first byte (``_skip_empty_lines``)
        end_of_head = buffer.find(_HEAD_END)
        if end_of_head < 0 or end_of_head > self._server.limits.max_header_bytes \
                or buffer.count(b"\n", 0, end_of_head) != buffer.count(b"\r\n", 0, end_of_head):
            raise _HandOver  # a bare LF line end, or a header section this large: aiohttp's parser and limits
        self._body_start = end_of_head + 4
        self._length = length
        self._keep_alive = parser.should_keep_alive()
        self._headers_done = True

    def on_message_complete(self) -> None:
        buffer = self._buffer
        body_start = self._body_start
        end = body_start + self._length
        body = bytes(buffer[body_start:end])
        del buffer[:end]  # what is left starts at the next request's first byte
        if buffer and buffer[0] in _CR_LF:
            self._skip_empty_lines()
        self._headers_done = False
        url, self._url = self._url, b""
        raw_headers, self._headers = self._headers, []
        if self._header_timer is not None or self._body_timer is not None:
            self._cancel_request_timers()
        headers = CIMultiDictProxy(CIMultiDict(
            [(name.decode("latin-1"), value.decode("utf-8", "surrogateescape")) for name, value in raw_headers]))
        self._queue.append((self._routes[url], HotRequest(self, url.decode("ascii"), headers, body, self._keep_alive)))
        if len(self._queue) >= _MAX_QUEUED and self.transport is not None:  # parsed far enough ahead: stop
            self._reading_paused = True
            self.transport.pause_reading()
            raise _QueueFull

    # -- answering --------------------------------------------------------------------

    def _wake(self) -> None:
        """A request is queued: start the connection's worker, or wake it."""
        if self._worker is None:
            self._worker = self._loop.create_task(self._work())
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _work(self) -> None:
        """Answer the queued requests in order, one at a time. One task for the connection's life: waking it
        costs less than starting a task per request (0.9 against 2.2 µs on uvloop)."""
        try:
            while self.transport is not None:
                if not self._queue:
                    if self._handing_over:
                        self._hand_over()
                        return
                    self._idle()
                    self._waiter = self._loop.create_future()
                    try:
                        await self._waiter
                    finally:
                        self._waiter = None
                    continue
                handler, request = self._queue.pop(0)
                self.busy = True  # first: parsing on below must not hand the connection over under this request
                if self._reading_paused and not self._handing_over and len(self._queue) < _MAX_QUEUED // 2:
                    self._resume()
                try:
                    response = await handler(request)
                    keep_alive, waits = self._send(request, response)
                    if waits:  # the client has not taken it all: wait, within write_timeout_s
                        keep_alive = await self._drained(keep_alive)
                except asyncio.CancelledError:
                    self._close()  # the client left, or a shutdown or deadline ended it: no answer follows
                    raise
                except Exception:
                    log.exception("unexpected error answering %s %s", request.method, request.path)
                    started = request.events is not None
                    if not started and self.transport is not None:
                        self.transport.write(raw_error(500, "internal error in llmroute", "internal_error"))
                    self._close(abort=started)
                    return
                self.busy = False
                if not keep_alive or (self.closing and not self._queue):
                    self._close()
                    return
        finally:
            self.busy = False
            self._worker = None

    def _send(self, request: HotRequest, response: Any) -> tuple[bool, bool]:
        """Send a handler's answer: whether the connection may go on to the next request, and whether the
        client must take the answer first (not a coroutine: the usual answer fits its buffer at once)."""
        if request.events is not None:  # a stream: its writer sent it, whole or not
            if not request.events.ended:
                self._close(abort=True)  # a body cut short: the client must not wait for the rest
                return False, False
            return request.keep_alive, False
        keep_alive = request.keep_alive and not self.closing
        data = encode_answer(response, keep_alive)
        transport = self.transport
        if transport is None or transport.is_closing():
            return False, False
        transport.write(data)
        return (keep_alive and response.keep_alive is not False,
                self.writing_paused or transport.get_write_buffer_size() >= self._high_water)

    async def _drained(self, keep_alive: bool) -> bool:
        """Wait for the client to take a whole answer; one that does not within ``write_timeout_s`` is cut off."""
        timeout_s = self._server.limits.write_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self.drain()
        except TimeoutError:
            self._server.slow_readers.hit(timeout_s)
            if self.transport is not None:
                self.transport.abort()  # what is buffered for the client is let go
            return False
        except ConnectionError:
            return False
        return keep_alive

    def _idle(self) -> None:
        self._idle_since = self._loop.time()
        if self._idle_timer is None:
            self._idle_timer = self._loop.call_at(self._idle_since + self._server.limits.keepalive_timeout_s,
                                                  self._idle_check)

    def _idle_check(self) -> None:
        """Close a keep-alive connection that sent nothing for ``keepalive_timeout_s``. One timer per idle spell,
        moved on (not re-armed per request) while requests keep coming."""
        self._idle_timer = None
        if self.busy or self._queue or self._buffer or self.transport is None:
            return
        due = self._idle_since + self._server.limits.keepalive_timeout_s
        if self._loop.time() >= due:
            self._close()
        else:
            self._idle_timer = self._loop.call_at(due, self._idle_check)

    def _close(self, abort: bool = False) -> None:
        """Close (or abort) the transport. It still counts against the cap until it is lost; one closed with
        bytes unsent (the client is not reading) is aborted after ``write_timeout_s``, not held for good."""
        self._cancel_timers()
        transport = self.transport
        if transport is None:
            return
        if abort:
            transport.abort()
            return
        transport.close()
        if transport.get_write_buffer_size():
            self._linger_timer = self._loop.call_later(self._server.limits.write_timeout_s, transport.abort)

    # -- deadlines ----------------------------------------------------------------------

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.busy or self._queue:  # a pipelined request trickling in behind one in flight
            self.closing = True  # answer what is in flight, then close
            return
        limits = self._server.limits
        self._server.slow_headers.hit(limits.header_timeout_s)
        self._abort(raw_error(408, f"request headers not received within {limits.header_timeout_s:g} s",
                              "header_timeout"))

    def _body_timeout(self) -> None:
        self._body_timer = None
        limits = self._server.limits
        self._server.slow_bodies.hit(limits.body_timeout_s)
        answering = self.busy or bool(self._queue)  # an answer may be on the wire: no 408 into it
        self._abort(None if answering else raw_error(
            408, f"request body not received within {limits.body_timeout_s:g} s", "body_timeout"))

    def _abort(self, response: bytes | None) -> None:
        transport = self.transport
        if transport is not None and response is not None and not transport.is_closing():
            transport.write(response)
        if self._worker is not None:
            self._worker.cancel()
        self._queue.clear()
        self._close()

    def _cancel_request_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def _cancel_timers(self) -> None:
        self._cancel_request_timers()
        for timer in (self._idle_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._linger_timer = None

    # -- handing the connection to aiohttp ----------------------------------------------

    def _hand_over(self) -> None:
        """Give the connection, and what it sent that is not answered, to aiohttp's protocol; once the
        requests before it are answered (their answers must come first, in order)."""
        self._handing_over = True
        transport = self.transport
        if transport is None:
            return
        if self.busy or self._queue:
            if not self._reading_paused:
                self._reading_paused = True
                transport.pause_reading()
            self._cancel_request_timers()  # the wait is for the answers before it, not the client's
            return
        if self.closing:  # shutting down: aiohttp's drain may already have counted its connections
            self._abort(raw_error(503, "the gateway is shutting down; retry the request", "shutting_down"))
            return
        self._counted = False  # aiohttp's protocol counts it from here, and uncounts it when it closes
        self._release()
        self.transport = None
        protocol = self._server.adopting_protocol()
        transport.set_protocol(protocol)
        if self._reading_paused:  # before adopt: a pause aiohttp makes while it takes the bytes must hold
            self._reading_paused = False
            transport.resume_reading()
        protocol.adopt(transport, bytes(self._buffer), writing_paused=self.writing_paused)
        self._buffer = bytearray()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)  # the idle worker finds the connection gone, and ends

    # -- shutdown -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop taking requests: close now if idle, else once the request in flight is answered."""
        self.closing = True
        if not self.busy and not self._queue and not self._buffer:
            self._close()

    async def shutdown(self, timeout_s: float | None) -> None:
        """Wait up to ``timeout_s`` for the request in flight, then cancel it and close."""
        self.closing = True
        worker = self._worker
        if worker is not None and self.busy:
            await asyncio.wait({worker}, timeout=timeout_s)  # closing: it ends after its answer
            if not worker.done():
                worker.cancel()
                await asyncio.wait({worker}, timeout=1.0)
        self._queue.clear()
        self._close()


def hot_connections(routes: Mapping[bytes, HotHandler]) -> Callable[[GatewayServer], asyncio.Protocol]:
    """A ``GatewayServer`` connection factory serving ``routes`` (exact path -> handler) on the hot path."""
    table = dict(routes)

    def connection(server: GatewayServer) -> asyncio.Protocol:
        return HotConnection(server, table)

    return connection
