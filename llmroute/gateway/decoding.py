"""Request bodies as sent, decoded in the app: ``Content-Encoding`` gzip/deflate inflated a piece at a time.

aiohttp is run with ``auto_decompress=False``: it would inflate a whole body before the handler sees it,
so a 1 MB gzip bomb expanding to 1 GB would block the event loop for seconds before anyone could refuse
it. Here the compressed bytes are read as they arrive (bounded by the body limit too), inflated in pieces
of at most ``PIECE_BYTES`` with ``zlib.decompressobj(max_length=...)``, and the loop yields between
pieces, so an oversize body gets its 413 once its inflated size passes the limit, and other requests
(``/health`` included) keep being answered meanwhile.
"""

from __future__ import annotations

import asyncio
import zlib

from aiohttp import web

from .errors import BadRequest, quote_input

PIECE_BYTES = 256 * 1024
"""Most output one inflate call may produce: a fraction of a millisecond of work between yields."""

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_CODINGS = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
SUPPORTED = ("gzip", "deflate", "identity")


def too_large(limit: int) -> BadRequest:
    return BadRequest(413, f"request body is over the limit of {limit} bytes", code="request_too_large")


def content_coding(header: str | None) -> str | None:
    """The one coding to undo (``gzip`` or ``deflate``), None for none; 415 for anything else."""
    if not header:
        return None
    codings = [c.strip().lower() for c in header.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) > 1 or codings[0] not in _CODINGS:
        raise BadRequest(
            415, f"Content-Encoding {quote_input(header)} is not supported; send one of {', '.join(SUPPORTED)}",
            param="Content-Encoding", code="unsupported_content_encoding",
        )
    return _CODINGS[codings[0]]


async def read_body(request: web.Request, max_body_bytes: int) -> bytes:
    """The request body, inflated when it says it is compressed; 413 past ``max_body_bytes`` as sent or inflated."""
    if request.content_length is not None and request.content_length > max_body_bytes:
        raise BadRequest(413, f"request body is {request.content_length} bytes; the limit is {max_body_bytes}",
                         code="request_too_large")
    coding = content_coding(request.headers.get("Content-Encoding"))
    inflater = _Inflater(coding) if coding is not None else None
    out = bytearray()
    received = 0
    async for piece in request.content.iter_any():
        received += len(piece)
        if received > max_body_bytes:  # as sent, before inflating
            raise too_large(max_body_bytes)
        if inflater is None:
            out += piece
        else:
            await inflater.feed(piece, out, max_body_bytes)
    if inflater is not None:
        inflater.finish()
    return bytes(out)


class _Inflater:
    """gzip (several members allowed, as the format does) or deflate (zlib-wrapped, or raw as some clients send)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._zlib: zlib._Decompress | None = zlib.decompressobj(_GZIP_WBITS) if coding == "gzip" else None
        self._head = b""

    async def feed(self, data: bytes, out: bytearray, limit: int) -> None:
        while True:
            if self._zlib is None:  # deflate: the first two bytes say whether there is a zlib header
                data = self._head + data
                if len(data) < 2:
                    self._head = data
                    return
                self._zlib = zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(data) else -zlib.MAX_WBITS)
            elif self._zlib.eof:
                if not data:
                    return
                if self.coding != "gzip":
                    raise BadRequest(400, "request body has data after the end of its deflate stream",
                                     param="Content-Encoding", code="invalid_content_encoding")
                self._zlib = zlib.decompressobj(_GZIP_WBITS)  # the next gzip member
            max_length = min(PIECE_BYTES, limit - len(out) + 1)
            try:
                piece = self._zlib.decompress(data, max_length)
            except zlib.error as exc:
                raise BadRequest(400, f"request body is not valid {self.coding} ({exc})",
                                 param="Content-Encoding", code="invalid_content_encoding") from None
            out += piece
            if len(out) > limit:
                raise too_large(limit)
            data = self._zlib.unused_data if self._zlib.eof else self._zlib.unconsumed_tail
            if not data and len(piece) < max_length:
                return  # all input used and nothing held back: wait for more
            await asyncio.sleep(0)  # let other requests run between pieces

    def finish(self) -> None:
        if self._zlib is None or not self._zlib.eof:
            raise BadRequest(400, f"request body is truncated {self.coding} data", param="Content-Encoding",
                             code="invalid_content_encoding")


def _zlib_header(data: bytes) -> bool:
    return data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
