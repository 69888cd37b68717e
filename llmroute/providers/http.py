"""A lean HTTP/1.1 client for one upstream: keep-alive pool, JSON in, JSON or SSE out.

Why not aiohttp's client: measured on the gateway's hot path it costs about
90 µs of CPU per request, most of the time of a proxy hop (see
docs/BENCHMARKS.md). llmroute only ever POSTs a body to a known base URL and
reads a JSON or SSE answer, so this client does only that: one ``write`` per
request, llhttp (``httptools``) to parse the answer, connections reused LIFO.

Around that core, what an upstream on the internet needs: TLS from ``ssl``
(the system's CAs plus an optional bundle, ``tls.py``); an HTTP proxy from the
config or the environment, with ``CONNECT`` tunnels for HTTPS (``proxy.py``);
gzip and deflate answers decoded as they arrive (``decoding.py``); and a cap on
the bytes of an answer, counted as they arrive and after decoding, so that a
broken or hostile upstream costs bounded memory and CPU. Not supported: HTTP/2,
redirects, asking for compression, ``https://`` or SOCKS proxies.
"""

from __future__ import annotations

import asyncio
import errno
import ssl
import time
import urllib.parse
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import httptools

from .deadlines import Deadlines
from .decoding import ContentDecoder, ContentDecodingError
from .poolstats import DEFAULT_MAX_CONNECTIONS, PoolStats
from .proxy import Proxy, ProxyError, open_tunnel, proxy_from_environment
from .tls import client_context

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


class _Connection(asyncio.Protocol):
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
        self._queue.append(data)
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


class ConnectionPool:
    """Keep-alive connections to one ``base_url`` (scheme, host, port and path prefix).

    ``proxy``: an ``http://[user:password@]host:port`` URL to go through; without
    one, ``trust_env=True`` takes it from ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``.
    ``tls_verify=False`` accepts any certificate (the provider warns about it at start-up).
    ``stats``: where to count slots and waits (the provider's, so that they outlive a pool made for another
    event loop); its ``max_connections`` is set to this pool's.
    """

    def __init__(self, base_url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, connect_timeout_s: float = 5.0,
                 headers: Mapping[str, str] | None = None, ca_bundle: str | None = None, tls_verify: bool = True,
                 proxy: str | None = None, trust_env: bool = False,
                 max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES, stats: PoolStats | None = None) -> None:
        url = urllib.parse.urlsplit(base_url)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"unsupported URL: scheme {url.scheme!r}, host {url.hostname!r}")  # never its key
        self.host = url.hostname
        self.port = url.port or (443 if url.scheme == "https" else 80)
        self.path_prefix = url.path.rstrip("/")
        self._query = url.query
        self._ssl: ssl.SSLContext | None = (
            client_context(ca_bundle=ca_bundle, verify=tls_verify) if url.scheme == "https" else None
        )
        default_port = self.port == (443 if self._ssl else 80)
        host_header = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host:
            host_header = f"[{self.host}]" if default_port else f"[{self.host}]:{self.port}"
        if proxy is None and trust_env:
            proxy = proxy_from_environment(url.scheme, url.netloc.rpartition("@")[2])
        self._proxy_error: ProxyError | None = None
        self.proxy: Proxy | None = None
        try:
            self.proxy = Proxy.from_url(proxy) if proxy else None
        except ProxyError as exc:
            self._proxy_error = exc  # raised by each connection attempt: a provider error, not a crash
        static = {"host": host_header, **(headers or {})}
        self._target_prefix = self.path_prefix  # origin-form: "/v1/chat/completions"
        self._absolute_form = self.proxy is not None and self._ssl is None  # plain HTTP through the proxy
        if self._absolute_form:
            self._target_prefix = f"http://{host_header}{self.path_prefix}"
            if self.proxy.authorization:
                static["proxy-authorization"] = self.proxy.authorization
        self._static_headers = encode_headers(static)
        self.max_response_bytes = max_response_bytes
        self.connect_timeout_s = connect_timeout_s
        self._idle: list[_Connection] = []
        self._free_slots = max_connections
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        """Requests waiting for a slot, first come first served; a freed slot goes to the first one still waiting."""
        self._deadlines: Deadlines | None = None
        self.stats = stats if stats is not None else PoolStats()
        self.stats.max_connections = max_connections

    def _request_bytes(self, path: str, body: bytes, extra_headers: Mapping[str, str] | None,
                       method: bytes = b"POST") -> bytes:
        target = self._target_prefix + path
        if self._query:  # a key in base_url's query (``?key=...``) goes with every request
            target += ("&" if "?" in path else "?") + self._query
        head = method + b" " + target.encode() + b" HTTP/1.1\r\n" + self._static_headers
        if extra_headers:
            head += encode_headers(extra_headers)
        return head + b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body

    def _idle_connection(self) -> _Connection | None:
        """The most recently used open idle connection, if any."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connection(self) -> _Connection:
        return self._idle_connection() or await self._open()

    async def _open(self) -> _Connection:
        if self._proxy_error is not None:
            raise self._proxy_error
        loop = asyncio.get_running_loop()

        def connection() -> _Connection:
            return _Connection(loop, self.max_response_bytes, via_proxy=self._absolute_form)

        async with asyncio.timeout(self.connect_timeout_s):
            try:
                if self.proxy is None:
                    _, conn = await loop.create_connection(connection, self.host, self.port, ssl=self._ssl,
                                                           server_hostname=self.host if self._ssl else None)
                    return conn
                if self._ssl is None:
                    _, conn = await loop.create_connection(connection, self.proxy.host, self.proxy.port)
                    return conn
                return await open_tunnel(loop, connection, self.proxy, self.host, self.port, self._ssl)
            except (ProxyError, ssl.SSLError):
                raise
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    raise OpenFilesExhausted(f"cannot open a connection: {exc.strerror} (raise the open-file "
                                             "limit, or lower max_connections)") from None
                if self.proxy is None:
                    raise
                # say it was the proxy that could not be reached
                raise ProxyError(f"proxy {self.proxy.authority}: {exc.strerror or exc.__class__.__name__}") from None

    def _release(self, conn: _Connection) -> None:
        if conn.reusable:
            self._idle.append(conn)
        else:
            conn.close()

    async def get(self, path: str) -> Response:
        """GET (health checks): the same connections, an empty body."""
        return await self.post(path, b"", method=b"GET")

    async def acquire_slot(self, timeout_s: float | None) -> None:
        """Take a connection slot, waiting at most ``timeout_s`` (None: as long as it takes); ``PoolTimeout``
        after that (as httpx names it).

        The wait is llmroute's own queue, not the upstream's slowness, so it has its own exception.
        Hand the slot on with ``slot_held=True`` to ``post``/``post_stream``, which give it back.
        """
        if self.try_slot():  # free: no timer, no clock
            return
        stats = self.stats
        stats.waiting += 1
        started = time.perf_counter()
        outcome = "cancelled"
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
            outcome = "slot"
        except TimeoutError:
            outcome = "timeout"
            raise PoolTimeout(f"no free connection within {timeout_s:.1f} s (max_connections "
                              f"{stats.max_connections} in use)") from None
        finally:
            stats.waiting -= 1
            if outcome == "slot":
                stats.in_use += 1
            elif waiter.done() and not waiter.cancelled():
                self._hand_on_slot()  # a slot came as the wait ended: it goes to the next one
            else:
                waiter.cancel()
                try:
                    self._slot_waiters.remove(waiter)
                except ValueError:
                    pass
            stats.wait_ended(time.perf_counter() - started, outcome)

    def try_slot(self) -> bool:
        """Take a connection slot if one is free and nobody is queued for it: True, with no await and no
        timer (hand it on like ``acquire_slot``'s); False otherwise."""
        if self._free_slots > 0 and not self._slot_waiters:
            self._free_slots -= 1
            self.stats.in_use += 1
            return True
        return False

    def _release_slot(self) -> None:
        self.stats.in_use -= 1
        self._hand_on_slot()

    def _hand_on_slot(self) -> None:
        waiters = self._slot_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free_slots += 1

    async def post(self, path: str, body: bytes, extra_headers: Mapping[str, str] | None = None,
                   *, method: bytes = b"POST", slot_held: bool = False, timeout_s: float | None = None) -> Response:
        """POST and read the whole answer; ``TimeoutError`` if it has not arrived within ``timeout_s`` (None:
        no limit here). A reused connection the upstream had closed while idle is retried once on a fresh one,
        as nothing was received."""
        if not slot_held:
            await self.acquire_slot(None)
        try:
            data = self._request_bytes(path, body, extra_headers, method)
            deadlines = None
            if timeout_s is not None:
                deadlines = self._deadlines
                if deadlines is None:
                    deadlines = self._deadlines = Deadlines(asyncio.get_running_loop())
                deadline = deadlines.now() + timeout_s
            for _ in range(2):
                conn = self._idle_connection()
                if conn is None:
                    if deadlines is None:
                        conn = await self._open()
                    else:
                        async with asyncio.timeout_at(deadline):
                            conn = await self._open()
                try:
                    conn.send(data, streaming=False)
                    if deadlines is not None:
                        deadlines.watch(conn, deadline)
                    await conn.answered()
                    response = conn.answer()
                except UpstreamClosed:
                    conn.close()
                    if conn.reused and not conn.received_any:
                        continue
                    raise
                except BaseException:
                    conn.close()  # cancelled, timed out or failed mid-answer: the connection's state is unknown
                    raise
                finally:
                    if deadlines is not None:
                        deadlines.forget(conn)
                self._release(conn)
                return response
            raise UpstreamClosed("connection closed before the answer was complete")
        finally:
            self._release_slot()

    async def post_stream(self, path: str, body: bytes, extra_headers: Mapping[str, str] | None = None,
                          *, slot_held: bool = False) -> StreamingResponse:
        """POST and return once the status and headers arrived; read the body from the result."""
        if not slot_held:
            await self.acquire_slot(None)
        try:
            data = self._request_bytes(path, body, extra_headers)
            for attempt in range(2):
                conn = await self._connection()
                try:
                    conn.send(data, streaming=True)
                    await conn.response_head()
                except UpstreamClosed:
                    conn.close()
                    if attempt == 0 and conn.reused and not conn.received_any:
                        continue
                    raise
                except BaseException:
                    conn.close()
                    raise
                return StreamingResponse(self, conn)
            raise UpstreamClosed("connection closed before the answer was complete")
        except BaseException:
            self._release_slot()
            raise

    def _finish_stream(self, conn: _Connection) -> None:
        self._release(conn)
        self._release_slot()

    async def aclose(self) -> None:
        if self._deadlines is not None:
            self._deadlines.close()
        while self._idle:
            self._idle.pop().close()


class StreamingResponse:
    """Status and headers now, body pieces as they come. Always ``aclose()`` it."""

    def __init__(self, pool: ConnectionPool, conn: _Connection) -> None:
        self._pool = pool
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers
        self._open = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._conn.body_pieces()

    async def read(self) -> bytes:
        """The rest of the body, up to the pool's ``max_response_bytes``."""
        pieces, size, limit = [], 0, self._pool.max_response_bytes
        async for piece in self:
            size += len(piece)
            if size > limit:
                raise ResponseTooLarge(f"answer larger than {limit} bytes")
            pieces.append(piece)
        return b"".join(pieces)

    async def aclose(self) -> None:
        """Return the connection if the answer was read to the end; otherwise hang up on it."""
        if not self._open:
            return
        self._open = False
        if not self._conn.complete:
            self._conn.close()
        self._pool._finish_stream(self._conn)


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
