"""The checks every streamed event pays, written out for speed, decide as the general ones do."""

from __future__ import annotations

from typing import Any

import pytest

from llmroute.config import ProviderConfig
from llmroute.errors import ProviderError
from llmroute.providers import OpenAICompatProvider
from llmroute.providers.connection import ResponseTooLarge
from llmroute.providers.openai_compat import chunk_problem, shape_problem
from llmroute.providers.sse import SSEDecoder

CHUNKS: list[Any] = [
    {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [{"index": 0, "text": "hi", "finish_reason": None}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 5}},
    {"choices": None, "usage": None},
    {"id": "x"},
    {"choices": "nope"},
    {"choices": [1]},
    {"choices": [{"delta": "text"}]},
    {"choices": [{"delta": {"content": 5}}]},
    {"choices": [{"delta": {"content": "a"}, "finish_reason": 1}]},
    {"choices": [{"text": ["a"]}]},
    {"choices": [{"delta": {"content": "a"}}], "usage": {"prompt_tokens": -1}},
    {"choices": [{"delta": {"content": "a"}}], "usage": "lots"},
    {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 1, "prompt_tokens_details": 7}},
]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_the_chunk_check_agrees_with_the_shape_check(chunk: dict[str, Any]) -> None:
    assert chunk_problem(chunk) == shape_problem(chunk, stream=True)


@pytest.mark.parametrize("event", [b'{"error": {"message": "overloaded"}}', b'{"error": "overloaded"}',
                                   b'{"object": "error", "message": "overloaded"}', b'{"status": "FAILED"}',
                                   b'{"err": "worker died"}'])
def test_an_error_in_a_stream_event_is_still_found(event: bytes) -> None:
    provider = OpenAICompatProvider(ProviderConfig(base_url="http://127.0.0.1:1/v1", model="m",
                                                   price_per_m={"input": 1, "output": 1}))
    with pytest.raises(ProviderError) as caught:
        provider._parse_event(event)
    assert caught.value.kind == "error_in_stream"


@pytest.mark.parametrize("pieces, events", [
    ([b"data: {}\n\n"], [b"{}"]),
    ([b"data:{}\n\n"], [b"{}"]),
    ([b"data:   {}\n\n"], [b"{}"]),
    ([b"data:\n\n"], [b""]),
    ([b"data: a\rdata: b\n\n"], [b"a\nb"]),  # a bare "\r" ends a line
    ([b"data: a\r\n\r\n"], [b"a"]),
    ([b"data: a\ndata: b\n\n"], [b"a\nb"]),  # two data lines: one event
    ([b"data: a\n\ndata: b\n\n"], [b"a", b"b"]),
    ([b"data: a", b"bc\n\n"], [b"abc"]),  # a line split across pieces
    ([b"data: a\n", b"data: b\n\n"], [b"a\nb"]),  # an event split between its lines
    ([b": keep-alive\n\n", b"data: a\n\n"], [b"a"]),
    ([b"event: x\n", b"data: a\n\n"], [b"a"]),
])
def test_one_event_pieces_and_their_near_misses_decode_alike(pieces: list[bytes], events: list[bytes]) -> None:
    decoder = SSEDecoder()
    decoder.feed(b": opening comment\n\n")  # past the stream's start (its byte order mark check)
    assert [e for piece in pieces for e in decoder.feed(piece)] == events


def test_a_one_line_event_past_the_limit_is_refused() -> None:
    decoder = SSEDecoder(max_line_bytes=64)
    decoder.feed(b"\n")
    assert decoder.feed(b"data: " + b"x" * 62 + b"\n\n") == [b"x" * 62]
    with pytest.raises(ResponseTooLarge):
        decoder.feed(b"data: " + b"x" * 64 + b"\n\n")
