"""SSEDecoder: events whatever the chunking, and bounded lines and events."""

from __future__ import annotations

import pytest

from llmroute.providers.http import ResponseTooLarge
from llmroute.providers.sse import SSEDecoder

STREAM = (b": keep-alive comment\n\n"
          b"event: message\nid: 1\ndata: {\"a\": 1}\n\n"
          b"data: {\"b\":\r\n"
          b"data: 2}\r\n\r\n"
          b"data:no-space\n\n"
          b"data: [DONE]\n\n")
EVENTS = [b'{"a": 1}', b'{"b":\n2}', b"no-space", b"[DONE]"]


def decode(pieces: list[bytes], max_line_bytes: int = 1024) -> list[bytes]:
    decoder = SSEDecoder(max_line_bytes)
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.flush()


def test_events_are_the_same_whatever_the_chunking() -> None:
    assert decode([STREAM]) == EVENTS
    assert decode([STREAM[i:i + 1] for i in range(len(STREAM))]) == EVENTS
    for cut in range(1, len(STREAM)):
        assert decode([STREAM[:cut], STREAM[cut:]]) == EVENTS, cut


def test_unterminated_last_event_is_flushed() -> None:
    assert decode([b"data: [DONE]"]) == [b"[DONE]"]
    assert decode([b"data: x\ndata: [DO", b"NE]"]) == [b"x\n[DONE]"]


def test_an_endless_line_is_refused_at_the_limit() -> None:
    decoder = SSEDecoder(max_line_bytes=1000)
    fed = 0
    with pytest.raises(ResponseTooLarge, match="SSE line longer than 1000 bytes"):
        for _ in range(10_000):
            decoder.feed(b"data: " + b"x" * 94)
            fed += 100
    assert fed <= 1000  # refused as soon as the buffered part of the line passed the limit


def test_a_long_line_in_one_piece_is_refused() -> None:
    with pytest.raises(ResponseTooLarge):
        SSEDecoder(max_line_bytes=1000).feed(b"data: " + b"x" * 5000)
    with pytest.raises(ResponseTooLarge):
        SSEDecoder(max_line_bytes=1000).feed(b"data: " + b"x" * 5000 + b"\n")


def test_an_event_of_many_short_lines_is_refused() -> None:
    decoder = SSEDecoder(max_line_bytes=1000)
    with pytest.raises(ResponseTooLarge, match="SSE event longer"):
        for _ in range(1000):
            decoder.feed(b"data: " + b"y" * 50 + b"\n")


def test_lines_at_the_limit_pass() -> None:
    line = b"data: " + b"z" * 994
    assert decode([line[:500], line[500:], b"\n\n"], max_line_bytes=1000) == [b"z" * 994]


@pytest.mark.parametrize("eol", [b"\r", b"\r\n", b"\n"])
def test_every_line_ending_whatever_the_chunking(eol: bytes) -> None:
    stream = STREAM.replace(b"\r\n", b"\n").replace(b"\n", eol)
    assert decode([stream]) == EVENTS
    assert decode([stream[i:i + 1] for i in range(len(stream))]) == EVENTS
    for cut in range(1, len(stream)):  # "\r" | "\n" across two pieces included
        assert decode([stream[:cut], stream[cut:]]) == EVENTS, cut


def test_mixed_line_endings() -> None:
    stream = b"data: a\rdata: b\r\n\rdata: c\n\r\ndata: d\r\r"
    assert decode([stream]) == [b"a\nb", b"c", b"d"]
    for cut in range(1, len(stream)):
        assert decode([stream[:cut], stream[cut:]]) == [b"a\nb", b"c", b"d"], cut


def test_an_event_is_given_as_soon_as_a_bare_cr_ends_it() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\r\r") == [b"x"]  # not held back waiting for a "\n" that never comes
    assert decoder.feed(b"\n") == []  # read as the end of the split "\r\n": no empty line, no event
    assert decoder.feed(b"data: y\r\r") == [b"y"]


def test_a_leading_byte_order_mark_is_dropped() -> None:
    stream = b"\xef\xbb\xbfdata: first\n\n" + STREAM
    assert decode([stream]) == [b"first", *EVENTS]
    for cut in range(1, 6):  # the mark split across pieces
        assert decode([stream[:cut], stream[cut:]]) == [b"first", *EVENTS], cut
    assert decode([b"data: a\xef\xbb\xbf\n\n"]) == [b"a\xef\xbb\xbf"]  # only at the very start


def test_a_bare_cr_line_is_bounded() -> None:
    with pytest.raises(ResponseTooLarge):
        decode([b"data: " + b"x" * 500] * 4, max_line_bytes=1000)
    assert decode([b"data: " + b"x" * 900 + b"\r", b"\r"], max_line_bytes=1000) == [b"x" * 900]
