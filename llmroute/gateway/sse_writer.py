"""Server-sent events to one client: straight to its socket while that cannot wait, bounded when it can.

``StreamResponse.write`` is a coroutine over ``StreamWriter.write`` over the chunked framing over
``transport.write``: four Python layers and an await per event, about a tenth of a relayed event's CPU.
Below the client's high-water mark a transport write never waits, so ``EventWriter.write`` frames the event
itself and hands it to the transport. Only a write that can wait (the client's buffer near full, writing
paused) goes through aiohttp, under ``write_timeout_s``: a client that stops reading is cut off, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import orjson
from aiohttp import HttpVersion11, web

from .protocol import write_may_wait

DONE = b"data: [DONE]\n\n"
_FRAMING_BYTES = 16  # a chunk's size line and its end


class ClientTooSlow(Exception):
    """The client took none of the stream for ``gateway.write_timeout_s``: it is cut off, the upstream closed."""


def encode_event(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def within(timeout_s: float, pending: Awaitable[Any]) -> None:
    """Await a write to the client. ``write`` waits while the client's socket is full, and a client that stops
    reading must not hold the provider's stream, and its connection, forever."""
    try:
        async with asyncio.timeout(timeout_s):
            await pending
    except TimeoutError:
        raise ClientTooSlow(f"the client read nothing for {timeout_s:g} s (gateway.write_timeout_s)") from None


async def open_stream(request: web.BaseRequest, headers: dict[str, str], timeout_s: float) -> EventWriter:
    """Send an event stream's head (aiohttp holds it for the first write) and return its writer."""
    response = web.StreamResponse(headers=headers)
    await within(timeout_s, response.prepare(request))
    return EventWriter(request, response, timeout_s)


class EventWriter:
    """Writes a prepared ``StreamResponse``'s events: ``write(data)`` when it cannot wait (the usual case), else
    ``await send_bounded(data)``."""

    __slots__ = ("_chunked", "_drain", "_protocol", "_response", "_room", "_timeout_s", "_transport")

    def __init__(self, request: web.BaseRequest, response: web.StreamResponse, timeout_s: float) -> None:
        self._response = response
        self._protocol = request.protocol
        self._drain = request.writer.drain  # the response's writer: waits while the client's buffer is full
        self._timeout_s = timeout_s
        # aiohttp frames a body of unknown length in chunks for HTTP/1.1 and sends it raw (closing the
        # connection at its end) for HTTP/1.0; ``response.chunked`` only says whether the handler forced it.
        self._chunked = response.chunked or request.version >= HttpVersion11
        # Set once aiohttp wrote the headers (it holds them back to send with the first body write), and
        # never past a content encoding: then the framing is aiohttp's to do.
        self._transport: asyncio.Transport | None = None
        self._room = 0  # the client's high-water mark, less the chunk framing

    @property
    def response(self) -> web.StreamResponse:
        return self._response

    def write(self, data: bytes) -> bool:
        """Hand ``data`` to the client's transport if that cannot wait; False (nothing written) if it could."""
        transport = self._transport
        if transport is None or self._protocol.writing_paused or transport.is_closing() \
                or transport.get_write_buffer_size() + len(data) >= self._room:
            return False
        transport.write(b"%x\r\n%s\r\n" % (len(data), data) if self._chunked else data)
        return True

    async def send_bounded(self, data: bytes) -> None:
        """Through aiohttp; when the write can wait, under ``write_timeout_s`` and until the client took enough
        that writing may go on (aiohttp's own drain counts only the bytes it wrote, not the direct ones)."""
        response = self._response
        if write_may_wait(self._protocol, len(data)):  # near the client's high-water mark: rare
            await within(self._timeout_s, self._write_drained(data))
        else:
            await response.write(data)
        if self._transport is None and not response.compression and response.content_length is None:
            transport = self._protocol.transport
            if transport is not None:
                self._room = transport.get_write_buffer_limits()[1] - _FRAMING_BYTES
                self._transport = transport

    async def _write_drained(self, data: bytes) -> None:
        await self._response.write(data)
        await self._drain()

    async def close(self) -> None:
        """``[DONE]``, then the end of the body."""
        await within(self._timeout_s, self._response.write(DONE))
        await within(self._timeout_s, self._response.write_eof())
