"""One keep-alive HTTP/1.1 connection to an upstream, parsed by llhttp (``httptools``).

It writes a request in one ``write`` and reads the answer whole (``response()``), or piece by piece for a
stream with back-pressure (``body_pieces()``, or ``take()``/``more()`` for a reader that wants everything
received so far at once): reading from the socket pauses when the pieces queued pass a bound, so a stream
holds little more than that whatever the upstream sends. A reader that can take pieces at once sets a
``sink``: each network read's body pieces are handed to it from the read callback, with no queue, future or
task wake-up in between (see ``providers/events.py``). Answers are decoded (gzip,
deflate) as they arrive and counted after decoding, so a hostile upstream costs bounded memory and CPU.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import httptools

from .decoding import ContentDecoder, ContentDecodingError
from .proxy import ProxyError

_QUEUE_HIGH = 64  # body pieces buffered before reading from the socket pauses...
_QUEUE_HIGH_BYTES = 512 * 1024  # ...or bytes: a stream holds little more than this whatever the upstream sends
_DECODED_PIECE_BYTES = 64 * 1024  # a decoded stream piece; bounds what one compressed piece can inflate to at once
DEFAULT_MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_HEADER_LINES = 256
"""Header lines of one answer (interim ones included). Each costs a Python callback, so the head's byte limit
alone would let 8 MiB of ``X-A: b`` lines hold the event loop for a fifth of a second; real answers send ~20."""


class UpstreamClosed(ConnectionError):
    """The upstream closed the connection before a complete answer."""


class InvalidResponse(ConnectionError):
    """Bytes that are not an HTTP/1.1 response."""


class ResponseTooLarge(InvalidResponse):
    """An answer (or one SSE line) past its byte limit; the connection was cut there."""


class PoolTimeout(Exception):
    """Every connection slot stayed in use for the whole wait (``ConnectionPool.acquire_slot``)."""


class OpenFilesExhausted(PoolTimeout):
    """The process is out of file descriptors (``EMFILE``/``ENFILE``): llmroute's own limit, not the upstream's
    failure, so it is handled like a full pool (the next provider is tried; no breaker counts it)."""


class InvalidHeader(ValueError):
    """A header that cannot be sent: ``name`` and what is wrong with it."""

    def __init__(self, name: str, problem: str) -> None:
        self.name = name
        super().__init__(f"header {name!r} contains {problem}")


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes


class Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request on it at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_body_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
                 *, via_proxy: bool = False) -> None:
        self._loop = loop
        self.max_body_bytes = max_body_bytes
        """Limit of a whole answer (decoded) read by ``response()``; streams are bounded by their reader."""
        self.via_proxy = via_proxy
        """Requests in absolute form to a proxy: its 407 is about the proxy, not the upstream."""
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reused = False
        self._parser = httptools.HttpResponseParser(self)
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self._interim = False
        self.keep_alive = True
        self.received_any = False
        self.complete = False
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._head_bytes = 0
        self._header_lines = 0
        self.decoder: ContentDecoder | None = None
        self._headers_done: asyncio.Future[None] = self._loop.create_future()
        self._done: asyncio.Future[None] = self._loop.create_future()
        self._queue: deque[bytes] | None = None
        self._queued_bytes = 0
        self._queue_waiter: asyncio.Future[None] | None = None
        self._paused = False
        self.sink: Callable[[list[bytes]], None] | None = None
        """Set by a streaming reader: called with the body pieces of each network read instead of queueing
        them (never with a content encoding: the pieces are as received). It must not raise."""
        self._pushed: list[bytes] = []

    # -- asyncio.Protocol -----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        if not self._headers_done.done():  # llhttp keeps a header however long it is: bound the head too
            self._head_bytes += len(data)
            if self._head_bytes > self.max_body_bytes:
                self._fail(ResponseTooLarge(f"response head larger than {self.max_body_bytes} bytes"))
                self.close()
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__  # what one of the callbacks below raised, if it was one of them
            if isinstance(cause, ContentDecodingError):
                cause = InvalidResponse(str(cause))
            self._fail(cause if isinstance(cause, (InvalidResponse, ProxyError))
                       else InvalidResponse(f"invalid HTTP response: {exc}"))
            self.close()
        if self._pushed:  # the read's pieces in one call, as ``take()`` would have had them: one write downstream
            pieces, self._pushed = self._pushed, []
            if self.sink is not None:
                self.sink(pieces)
            else:
                for piece in pieces:
                    self._enqueue(piece)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self._headers_done.done() and "content-length" not in self.headers and "chunked" not in self.headers.get(
                "transfer-encoding", ""):
            self.on_message_complete()  # a body delimited by the connection closing
            return
        self._fail(UpstreamClosed("connection closed before the answer was complete") if exc is None
                   else UpstreamClosed(f"connection lost: {exc.__class__.__name__}"))

    # -- httptools callbacks --------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_lines += 1
        if self._header_lines > MAX_HEADER_LINES:
            raise ResponseTooLarge(f"response head has more than {MAX_HEADER_LINES} header lines")
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if 100 <= self.status < 200 and self.status != 101:  # 100 Continue, 103 Early Hints: the answer follows
            self._interim = True
            return
        self.keep_alive = self._parser.should_keep_alive()
        if self.status == 407 and self.via_proxy:
            raise ProxyError("proxy refused the request: 407 Proxy Authentication Required")
        if "content-encoding" in self.headers:
            self.decoder = ContentDecoder.for_header(self.headers["content-encoding"])
        if not self._headers_done.done():
            self._headers_done.set_result(None)

    def on_body(self, data: bytes) -> None:
        if self._queue is None:
            decoded = (data,) if self.decoder is None else self.decoder.pieces(data, _DECODED_PIECE_BYTES)
            for piece in decoded:  # each decoded piece is bounded: a bomb stops at the limit, not after it
                self._body_bytes += len(piece)
                if self._body_bytes > self.max_body_bytes:
                    raise ResponseTooLarge(f"answer larger than {self.max_body_bytes} bytes")
                self._body.append(piece)
            return
        if self.sink is not None and self.decoder is None:
            self._pushed.append(data)
        else:
            self._enqueue(data)

    def _enqueue(self, data: bytes) -> None:
        self._queue.append(data)  # type: ignore[union-attr]
        self._queued_bytes += len(data)
        self._wake()
        if (len(self._queue) > _QUEUE_HIGH or self._queued_bytes > _QUEUE_HIGH_BYTES) and not self._paused \
                and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        if self._interim:  # an interim answer ends here; read on for the real one
            self._interim = False
            self.status = 0
            self.headers = {}
            return
        self.complete = True
        if not self._headers_done.done():
            self._headers_done.set_result(None)
        if not self._done.done():
            self._done.set_result(None)
        self._wake()

    # -- use ------------------------------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        for future in (self._headers_done, self._done):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: a streaming reader may never wait on both
        self._wake()

    def expire(self) -> None:
        """The answer's deadline passed: its reader gets ``TimeoutError`` (and hangs up on the connection)."""
        self._fail(TimeoutError("no answer within the deadline"))

    def _wake(self) -> None:
        if self._queue_waiter is not None and not self._queue_waiter.done():
            self._queue_waiter.set_result(None)

    def send(self, data: bytes, *, streaming: bool) -> None:
        if self.complete:
            self._reset()
            self.reused = True
        if streaming:
            self._queue = deque()
        assert self.transport is not None
        self.transport.write(data)

    async def response(self) -> Response:
        await self._done
        return self.answer()

    def answered(self) -> asyncio.Future[None]:
        """Done when the whole answer is in (or failed); then ``answer()`` has it. Awaiting this future
        directly, not ``response()``, saves a coroutine on the request path."""
        return self._done

    def answer(self) -> Response:
        return Response(self.status, self.headers, b"".join(self._body))

    async def response_head(self) -> None:
        await self._headers_done

    def take(self) -> list[bytes]:
        """The raw body pieces received since the last ``take()`` (none yet: an empty list), for ``decoded()``.

        One call per network read, however many events the read carries; reading resumes if the queue had
        paused it, so what a stream holds stays within twice the queue's bound.
        """
        queue = self._queue
        assert queue is not None
        if not queue:
            return []
        pieces = list(queue)
        queue.clear()
        self._queued_bytes = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return pieces

    def decoded(self, raw: bytes) -> Iterable[bytes]:
        """``raw`` with its content encoding undone, in pieces of bounded size (``InvalidResponse`` if it is
        not what the encoding says)."""
        if self.decoder is None:
            return (raw,)
        return self._decoded(raw)

    def _decoded(self, raw: bytes) -> Iterator[bytes]:
        assert self.decoder is not None
        try:
            yield from self.decoder.pieces(raw, _DECODED_PIECE_BYTES)
        except ContentDecodingError as exc:
            raise InvalidResponse(str(exc)) from None

    def more(self) -> asyncio.Future[None] | None:
        """After an empty ``take()``: None if the body is complete, else a future done when more of it (or its
        end, or a failure) arrives. Raises the answer's failure. The reader awaits the future itself: no
        coroutine or generator per read between it and the socket."""
        if self.complete:
            return None
        if self._done.done():
            self._done.result()  # raises the failure
        waiter = self._queue_waiter = self._loop.create_future()
        return waiter

    def expire_waiting(self) -> bool:
        """A silence bound passed: if the reader is waiting in ``more()``, fail the answer with ``TimeoutError``
        (the reader gets it, and hangs up) and say True; False while the reader holds what it took."""
        waiter = self._queue_waiter
        if waiter is None or waiter.done():
            return False
        self.expire()
        return True

    async def body_pieces(self) -> AsyncIterator[bytes]:
        """Decoded body pieces (chunked and content encodings undone) as they arrive."""
        queue = self._queue
        assert queue is not None
        while True:
            while queue:
                raw = queue.popleft()
                self._queued_bytes -= len(raw)
                if self._paused and len(queue) <= _QUEUE_HIGH // 2 and self._queued_bytes <= _QUEUE_HIGH_BYTES // 2 \
                        and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                if self.decoder is None:
                    yield raw
                    continue
                try:
                    for piece in self.decoder.pieces(raw, _DECODED_PIECE_BYTES):
                        yield piece
                except ContentDecodingError as exc:
                    raise InvalidResponse(str(exc)) from None
            if self.complete:
                return
            if self._done.done():
                self._done.result()  # raises the failure
            self._queue_waiter = self._loop.create_future()
            await self._queue_waiter
            self._queue_waiter = None

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """``name: value\\r\\n`` lines. Raises ``InvalidHeader`` for a line break (it would let a value inject
    headers) or a character outside latin-1 (HTTP/1.1 cannot carry it), naming the header."""
    encoded = b""
    for name, value in headers.items():
        line = f"{name}: {value}"
        if "\r" in line or "\n" in line:
            raise InvalidHeader(name, "a line break")
        try:
            encoded += line.encode("latin-1") + b"\r\n"
        except UnicodeEncodeError:
            raise InvalidHeader(name, "a character outside latin-1") from None
    return encoded
