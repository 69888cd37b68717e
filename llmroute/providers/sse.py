"""Server-sent events to their ``data`` payloads, in linear time and bounded memory.

A line that spans many body pieces is kept as a list of pieces and joined once,
when its end arrives, so a long line costs O(length), not O(length x pieces).
A line or an event longer than ``max_line_bytes`` raises ``ResponseTooLarge``:
an upstream that never ends a line must not grow the buffer without end.

Lines end with ``\r\n``, ``\n`` or a bare ``\r`` (the spec allows all three, mixed),
split by ``bytes.splitlines`` (those three only, in C, cheaper than the ``\n`` split
and ``rstrip`` it replaced). A ``\r\n`` split across two pieces drops the ``\n`` that
starts the second. A UTF-8 byte order mark at the very start of the stream is dropped.
"""

from __future__ import annotations

from .connection import ResponseTooLarge

DEFAULT_MAX_LINE_BYTES = 1024 * 1024
_BOM = b"\xef\xbb\xbf"


class SSEDecoder:
    """Feed body pieces, get the ``data`` payload of each complete event, whatever the byte chunking."""

    __slots__ = ("_data", "_data_bytes", "_max", "_partial", "_partial_bytes", "_skip")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self._max = max_line_bytes
        self._partial: list[bytes] = []  # the pieces of a line whose end has not arrived
        self._partial_bytes = 0
        self._data: list[bytes] = []  # the data lines of the event being read
        self._data_bytes = 0
        self._skip = _BOM  # bytes to drop if the next piece starts with them: the BOM, or the "\n" of a split "\r\n"

    def feed(self, piece: bytes) -> list[bytes]:
        if self._skip:
            piece = self._drop_skip(piece)
        elif not self._partial and not self._data and piece[:5] == b"data:" and piece.find(b"\n") == len(piece) - 2 \
                and piece[-1:] == b"\n" and 13 not in piece:
            # The usual piece: exactly one whole one-line event, "data: ...\n\n" (no "\r" anywhere).
            line = piece[5:-2].lstrip(b" ")
            if len(line) + 1 > self._max:
                raise ResponseTooLarge(f"SSE event longer than {self._max} bytes")
            return [line]
        if self._partial:
            self._partial.append(piece)
            self._partial_bytes += len(piece)
            if 10 not in piece and 13 not in piece:  # int membership is a memchr; b"\n" in piece is not
                if self._partial_bytes > self._max:
                    raise ResponseTooLarge(f"SSE line longer than {self._max} bytes")
                return []
            piece = b"".join(self._partial)  # once per line end: each byte is copied at most once here
            self._partial = []
        lines = piece.splitlines()  # "\r\n", "\n" and "\r", in C
        end = piece[-1:]
        if end == b"\n":
            rest = b""
        elif end == b"\r":  # a "\r\n" may be split here: drop a "\n" that starts the next piece
            rest, self._skip = b"", b"\n"
        else:
            rest = lines.pop() if lines else b""
            if len(rest) > self._max:
                raise ResponseTooLarge(f"SSE line longer than {self._max} bytes")
            if rest:
                self._partial.append(rest)
        self._partial_bytes = len(rest)
        events = []
        data, size = self._data, self._data_bytes
        for line in lines:
            if line[:5] == b"data:":
                line = line[5:].lstrip(b" ")
                size += len(line) + 1
                if size > self._max:
                    raise ResponseTooLarge(f"SSE event longer than {self._max} bytes")
                data.append(line)
            elif data and not line:
                events.append(b"\n".join(data))
                data, size = [], 0
            # comments (":"), "event:" and "id:" lines carry nothing llmroute needs
        self._data, self._data_bytes = data, size
        return events

    def _drop_skip(self, piece: bytes) -> bytes:
        """``piece`` without the start of ``_skip`` it begins with; a piece shorter than it (a split BOM) waits
        for the rest."""
        skip = self._skip
        size = min(len(skip), len(piece))
        if piece[:size] == skip[:size]:
            self._skip = skip[size:]
            return piece[size:]
        self._skip = b""
        return piece

    def flush(self) -> list[bytes]:
        """Whatever event the stream's end left unterminated."""
        line = b"".join(self._partial)
        if line.startswith(b"data:"):
            self._data.append(line[5:].strip())
        events = [b"\n".join(self._data)] if self._data else []
        self._partial, self._partial_bytes, self._data, self._data_bytes, self._skip = [], 0, [], 0, _BOM
        return events
