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
    """A body that is not what its ``Content-Encoding`` says, or an encoding llmroute cannot undo.

    ``problem``: ``invalid``, ``truncated``, ``trailing`` (data after a deflate stream's end) or ``unsupported``.
    """

    def __init__(self, message: str, problem: str = "invalid") -> None:
        super().__init__(message)
        self.problem = problem


class ContentDecoder:
    """Incremental gzip or deflate decoding; ``decode(data, max_bytes)`` never returns more than asked.

    Used for answers from providers and for request bodies sent to the gateway alike. A gzip body may
    hold several members one after another (the format allows it); "deflate" is zlib-wrapped as the
    standard says, or raw as some servers and clients send it, which its first two bytes tell.
    """

    __slots__ = ("encoding", "_zlib", "_head")

    def __init__(self, encoding: str) -> None:
        if encoding not in _WBITS:
            raise ContentDecodingError(f"unsupported Content-Encoding {encoding[:40]!r}", "unsupported")
        self.encoding = encoding
        self._zlib: zlib._Decompress | None = None if encoding == "deflate" else zlib.decompressobj(_WBITS[encoding])
        self._head = b""

    @classmethod
    def for_header(cls, value: str | None) -> ContentDecoder | None:
        """The decoder a ``Content-Encoding`` header asks for; None for none or ``identity``."""
        if not value:
            return None
        encoding = value.strip().lower()
        return None if encoding in ("", "identity") else cls(encoding)

    def decode(self, data: bytes, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` (> 0) of output from ``data`` and what earlier calls left (``pending``)."""
        inflater = self._zlib
        if inflater is None:  # deflate, not yet known which
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            self._head = b""
            inflater = self._zlib = zlib.decompressobj(zlib.MAX_WBITS if _zlib_header(data) else -zlib.MAX_WBITS)
        elif inflater.eof:
            data = inflater.unused_data + data
            if not data:
                return b""
            if self.encoding == "deflate":
                raise ContentDecodingError(f"data after the end of its {self.encoding} stream", "trailing")
            inflater = self._zlib = zlib.decompressobj(_WBITS[self.encoding])  # the next gzip member
        elif inflater.unconsumed_tail:
            data = inflater.unconsumed_tail + data
        try:
            return inflater.decompress(data, max_bytes)
        except zlib.error as exc:
            raise ContentDecodingError(f"invalid {self.encoding} body: {exc}") from None

    @property
    def pending(self) -> bytes:
        """Input not yet decoded: what did not fit the last call's output, or a next member's start."""
        inflater = self._zlib
        if inflater is None:
            return b""
        return inflater.unused_data if inflater.eof else inflater.unconsumed_tail

    def pieces(self, data: bytes, piece_bytes: int) -> Iterator[bytes]:
        """All of ``data`` decoded, in pieces of at most ``piece_bytes``, produced one at a time."""
        out = self.decode(data, piece_bytes)
        while True:
            if out:
                yield out
            if not self.pending:
                return
            out = self.decode(b"", piece_bytes)

    def finish(self) -> None:
        """Raise if the body ended before its compressed stream did."""
        if self._zlib is None or not self._zlib.eof:
            raise ContentDecodingError(f"truncated {self.encoding} body", "truncated")


def _zlib_header(data: bytes) -> bool:
    return data[0] & 0x0F == 8 and ((data[0] << 8) | data[1]) % 31 == 0
