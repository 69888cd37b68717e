"""A whole JSON answer, serialised in one string and sent in one write.

aiohttp's ``web.Response`` puts the headers in a multidict, sets defaults one by
one, checks each header for control characters and joins them in its writer:
about 7% of the gateway's CPU for a short answer (4% here). An answer to a
completion has a fixed shape (a known body and a handful of headers llmroute
wrote), so its head is one f-string here. Everything that is per connection
still comes from aiohttp: keep-alive (``Connection: close`` when the client asks
for it), the HTTP version, and the writer that counts what was sent (the
connection's deadlines read it). A handler returns an ``Answer`` (body and
header lines, no aiohttp object): the hot path (``gateway.hotpath``) frames it
itself, and only aiohttp's routes turn it into a ``JsonAnswer``.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import HttpVersion10, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time

# As aiohttp refuses in a header: a control character other than tab could end the header and inject another.
FORBIDDEN_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
REASONS = {s.value: s.phrase for s in HTTPStatus}


def header_lines(headers: Mapping[str, str]) -> str:
    """``name: value\\r\\n`` lines; a ``ValueError`` for a control character that could end a line early."""
    if FORBIDDEN_IN_HEADER.search("".join(headers.values())):
        raise ValueError("a control character in a response header")
    return "".join([f"{name}: {value}\r\n" for name, value in headers.items()])


def http11_head(status: int, lines: str, keep_alive: bool, framing: str) -> bytes:
    """An HTTP/1.1 status line and header section for a connection that frames its own answers: ``lines``
    from ``header_lines``, ``framing`` the Content-Length or Transfer-Encoding line."""
    connection = "" if keep_alive else "Connection: close\r\n"
    return (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n{lines}{framing}Date: {rfc822_formatted_time()}\r\n"
            f"{connection}\r\n").encode()


class JsonAnswer(web.StreamResponse):
    """``body`` (JSON bytes) with ``headers``, written whole by ``prepare``: no chunking, no compression.

    For the answer to a POST: a HEAD request, or a status without a body (204, 304), needs aiohttp's
    ``web.Response``."""

    def __init__(self, body: bytes, headers: Mapping[str, str] | str, status: int = 200) -> None:
        """``headers``: a mapping, or header lines already rendered and checked (``header_lines``)."""
        super().__init__(status=status)
        self.body = body  # read by the connection to decide whether sending it can wait on the client
        self._lines = headers if isinstance(headers, str) else header_lines(headers)
        self._writer: AbstractStreamWriter | None = None
        self._sent = False
        self._keeps: bool | None = None

    @property
    def keep_alive(self) -> bool | None:
        return self._keeps

    def force_close(self) -> None:
        self._keeps = False

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._sent:
            return self._writer
        self._sent = True
        keep_alive = self._keeps = request.keep_alive and self._keeps is not False
        version = request.version
        if keep_alive:
            connection = "Connection: keep-alive\r\n" if version == HttpVersion10 else ""
        else:
            connection = "Connection: close\r\n" if version != HttpVersion10 else ""
        status = self.status
        head = (f"HTTP/{version.major}.{version.minor} {status} {REASONS.get(status, '')}\r\n{self._lines}"
                f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n"
                f"Date: {rfc822_formatted_time()}\r\n{connection}\r\n")
        writer = self._writer = request.writer
        await writer.write(head.encode() + self.body, drain=False)
        return writer

    async def write_eof(self, data: bytes = b"") -> None:
        """Wait until the client has taken the answer when its buffer is full, as ``web.Response`` does: a
        client that sends requests without reading their answers must not make them pile up here."""
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.write_eof(data)
            await writer.drain()

    @property
    def prepared(self) -> bool:
        return self._sent

    def __repr__(self) -> str:
        return f"<JsonAnswer {self.status} {len(self.body)} bytes>"


class Answer:
    """A completion's JSON answer as its handler made it: the body and its metadata header lines, no aiohttp
    object. The hot path frames it itself (``encode``); aiohttp's routes send it as a ``JsonAnswer``
    (``for_aiohttp``)."""

    __slots__ = ("body", "lines", "status")
    keep_alive = None  # the connection decides, as for an aiohttp response that was not force-closed

    def __init__(self, body: bytes, lines: str, status: int = 200) -> None:
        self.body, self.lines, self.status = body, lines, status

    def encode(self, keep_alive: bool) -> bytes:
        """The whole answer as HTTP/1.1 bytes."""
        body = self.body
        return http11_head(self.status, self.lines, keep_alive,
                           f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n") + body


def for_aiohttp(handler: Callable[[Any], Awaitable[Any]]) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` as an aiohttp route: an ``Answer`` it returns goes out as a ``JsonAnswer``."""

    async def handle(request: web.Request) -> web.StreamResponse:
        answer = await handler(request)
        return JsonAnswer(answer.body, answer.lines, answer.status) if type(answer) is Answer else answer

    return handle
