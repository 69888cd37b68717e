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
from collections.abc import AsyncIterator, Callable, Mapping

from .connection import (DEFAULT_MAX_RESPONSE_BYTES, MAX_HEADER_LINES, Connection, InvalidHeader, InvalidResponse,
                         OpenFilesExhausted, PoolTimeout, Response, ResponseTooLarge, UpstreamClosed, encode_headers)
from .deadlines import Deadlines
from .poolstats import DEFAULT_MAX_CONNECTIONS, PoolStats
from .proxy import Proxy, ProxyError, open_tunnel, proxy_from_environment
from .tls import client_context

__all__ = ["DEFAULT_MAX_RESPONSE_BYTES", "MAX_HEADER_LINES", "ConnectionPool", "InvalidHeader", "InvalidResponse",
           "OpenFilesExhausted", "PoolTimeout", "Response", "ResponseTooLarge", "StreamingResponse", "UpstreamClosed",
           "encode_headers"]


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
        self._idle: list[Connection] = []
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

    def _idle_connection(self) -> Connection | None:
        """The most recently used open idle connection, if any."""
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
        return None

    async def _connection(self) -> Connection:
        return self._idle_connection() or await self._open()

    async def _open(self) -> Connection:
        if self._proxy_error is not None:
            raise self._proxy_error
        loop = asyncio.get_running_loop()

        def connection() -> Connection:
            return Connection(loop, self.max_response_bytes, via_proxy=self._absolute_form)

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

    def _release(self, conn: Connection) -> None:
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

    def _finish_stream(self, conn: Connection) -> None:
        self._release(conn)
        self._release_slot()

    async def aclose(self) -> None:
        if self._deadlines is not None:
            self._deadlines.close()
        while self._idle:
            self._idle.pop().close()


class StreamingResponse:
    """Status and headers now, body pieces as they come (``async for``, or everything received so far with
    ``take()``, then ``await more()`` when that was nothing). Always ``aclose()`` it."""

    def __init__(self, pool: ConnectionPool, conn: Connection) -> None:
        self._pool = pool
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers
        self._open = True
        # The batch interface (see ``Connection.take``): bound once, no call through this object per read.
        self.take = conn.take
        self.decoded = conn.decoded
        self.more = conn.more
        self.expire_waiting = conn.expire_waiting

    @property
    def pushable(self) -> bool:
        """Whether ``push_to`` may be used: not for a content-encoded body, whose pieces must be decoded with a
        bound on each, which is the reader's loop to do."""
        return self._conn.decoder is None

    def push_to(self, sink: Callable[[list[bytes]], None] | None) -> None:
        """Hand each network read's body pieces to ``sink`` from the read callback, instead of queueing them for
        ``take()`` (only when ``pushable``); None queues them again."""
        self._conn.sink = sink

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
