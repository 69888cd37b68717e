"""``Content-Encoding`` of an upstream answer (gzip, deflate), undone piece by piece with bounded output.

llmroute never asks for compression, but some providers (or the proxies in front
of them) compress anyway. Each call produces at most the output the caller has
room for, so a small compressed body that inflates to gigabytes (a "gzip bomb")
costs no more memory than the caller's limit.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class ContentDecodingError(ValueError):
    """A body that is not what its ``Content-Encoding`` says, or an encoding llmroute cannot undo."""


class ContentDecoder:
    """Incremental gzip or deflate decoding; ``decode(data, max_bytes)`` never returns more than asked."""

    __slots__ = ("encoding", "_zlib", "_started")

    def __init__(self, encoding: str) -> None:
        wbits = _WBITS.get(encoding)
        if wbits is None:
            raise ContentDecodingError(f"unsupported Content-Encoding {encoding[:40]!r}")
        self.encoding = encoding
        self._zlib = zlib.decompressobj(wbits)
        self._started = False

    @classmethod
    def for_header(cls, value: str | None) -> ContentDecoder | None:
        """The decoder a ``Content-Encoding`` header asks for; None for none or ``identity``."""
        if not value:
            return None
        encoding = value.strip().lower()
        return None if encoding in ("", "identity") else cls(encoding)

    def decode(self, data: bytes, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` (> 0) of output; input that did not fit waits in ``pending``."""
        try:
            out = self._zlib.decompress(data, max_bytes)
        except zlib.error as exc:
            if self.encoding != "deflate" or self._started:
                raise ContentDecodingError(f"invalid {self.encoding} body: {exc}") from None
            # "deflate" should be zlib-wrapped, but some servers send raw deflate (browsers accept both)
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            return self.decode(data, max_bytes)
        self._started = True
        return out

    @property
    def pending(self) -> bytes:
        """Compressed input not yet decoded because the last call's output was full."""
        return self._zlib.unconsumed_tail

    def pieces(self, data: bytes, piece_bytes: int) -> Iterator[bytes]:
        """All of ``data`` decoded, in pieces of at most ``piece_bytes``, produced one at a time."""
        out = self.decode(data, piece_bytes)
        while True:
            if out:
                yield out
            if not self.pending:
                return
            out = self.decode(self.pending, piece_bytes)
