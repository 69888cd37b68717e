"""Request bodies as sent, decoded in the app: ``Content-Encoding`` gzip/deflate inflated a piece at a time.

aiohttp is run with ``auto_decompress=False``: it would inflate a whole body before the handler sees it,
so a 1 MB gzip bomb expanding to 1 GB would block the event loop for seconds before anyone could refuse
it. Here the compressed bytes are read as they arrive (bounded by the body limit too) and inflated in
pieces of at most ``PIECE_BYTES`` by ``providers.decoding.ContentDecoder`` (the decoder answers from
providers go through), yielding between pieces, so an oversize body gets its 413 once its inflated size
passes the limit, and other requests (``/health`` included) keep being answered meanwhile.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..providers.decoding import ContentDecoder, ContentDecodingError
from .errors import BadRequest, quote_input

PIECE_BYTES = 256 * 1024
"""Most output one inflate call may produce: a fraction of a millisecond of work between yields."""

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
    content = request.content
    if coding is None and content.is_eof():  # the usual case: the whole body came with the headers
        raw = content.read_nowait()
        if len(raw) > max_body_bytes:
            raise too_large(max_body_bytes)
        return raw
    decoder = ContentDecoder(coding) if coding is not None else None
    out = bytearray()
    received = 0
    async for piece in content.iter_any():
        received += len(piece)
        if received > max_body_bytes:  # as sent, before inflating
            raise too_large(max_body_bytes)
        if decoder is None:
            out += piece
        else:
            await _inflate(decoder, piece, out, max_body_bytes)
    if decoder is not None:
        try:
            decoder.finish()
        except ContentDecodingError as exc:
            raise _invalid(exc, coding) from None
    return bytes(out)


async def _inflate(decoder: ContentDecoder, data: bytes, out: bytearray, limit: int) -> None:
    """Inflate ``data`` onto ``out`` a piece at a time, letting other requests run between pieces."""
    try:
        for piece in decoder.pieces(data, PIECE_BYTES):
            out += piece
            if len(out) > limit:
                raise too_large(limit)
            if decoder.pending:
                await asyncio.sleep(0)
    except ContentDecodingError as exc:
        raise _invalid(exc, decoder.encoding) from None


def _invalid(exc: ContentDecodingError, coding: str) -> BadRequest:
    if exc.problem == "truncated":
        message = f"request body is truncated {coding} data"
    elif exc.problem == "trailing":
        message = f"request body has data after the end of its {coding} stream"
    else:
        message = f"request body is not valid {coding} ({exc})"
    return BadRequest(400, message, param="Content-Encoding", code="invalid_content_encoding")
