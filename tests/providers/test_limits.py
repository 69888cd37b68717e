"""Upstream answers past their size limits: cut at the limit, classified ``too_large``, and fallen back from.

Each throwaway upstream stands in for a broken paid provider that sends without
end; it counts the bytes it managed to write, so a test can tell that llmroute
hung up near the limit instead of reading everything.
"""

from __future__ import annotations

import asyncio
import gzip
import socket
from typing import Any

import pytest

from llmroute import LLMRouter
from llmroute.errors import StreamInterrupted
from llmroute.emulator import EmulatorThread

from ..conftest import provider
from .test_http import raw_server, read_request

MAX_RESPONSE_BYTES = 1024 * 1024
MAX_SSE_LINE_BYTES = 64 * 1024
ENDLESS = 256 * 1024 * 1024  # what an upstream sends when nobody cuts it: far past any limit
SLACK = 8 * 1024 * 1024  # socket buffers on both sides of loopback, the client's read-ahead queue
PIECE = 64 * 1024


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Endless:
    """Answers with ``head`` then ``piece`` again and again, up to ``ENDLESS`` bytes; counts what it wrote."""

    def __init__(self, head: bytes, piece: bytes) -> None:
        self.head, self.piece = head, piece
        self.written = 0
        self.cut = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIECE)
        writer.write(self.head)
        try:
            while self.written < ENDLESS:
                writer.write(self.piece)
                self.written += len(self.piece)
                await writer.drain()
        except ConnectionError:
            self.cut.set()
        finally:
            writer.close()


def bad_first(url: str, cerebras: EmulatorThread, **limits: Any) -> dict[str, Any]:
    """The broken upstream as the cheapest provider, a good emulator behind it."""
    return {
        "providers": {
            "bad": provider(url, "cerebras", price_per_m={"input": 0.001, "output": 0.001}, timeout_s=10,
                            max_response_bytes=MAX_RESPONSE_BYTES, max_sse_line_bytes=MAX_SSE_LINE_BYTES, **limits),
            "cerebras": provider(cerebras.base_url, "cerebras"),
        },
        "strategy": "cost_optimized",
        "deadline_s": 20,
    }


@pytest.fixture
async def cerebras(emus: dict[str, EmulatorThread]) -> EmulatorThread:
    return emus["cerebras"]


JSON_HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % (ENDLESS + 100)
             + b'{"choices": [{"message": {"role": "assistant", "content": "')
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
EVENT = b'data: {"choices": [{"index": 0, "delta": {"content": "' + b"x" * 900 + b'"}}]}\n\n'


@pytest.mark.parametrize("case, head, piece", [
    ("huge JSON body", JSON_HEAD, b"x" * PIECE),
    ("huge SSE answer to a non-stream request", SSE_HEAD, chunk(EVENT * (PIECE // len(EVENT)))),
])
async def test_huge_answer_is_cut_at_the_limit_and_falls_back(cerebras: EmulatorThread, case: str, head: bytes,
                                                              piece: bytes) -> None:
    upstream = Endless(head, piece)
    server, url = await raw_server(upstream.handle)
    async with server, LLMRouter(config=bad_first(url, cerebras)) as router:
        result = await router.generate("hi", max_tokens=8)
        await upstream.cut.wait()  # the upstream saw the connection go, long before it ran out of bytes
    assert result.provider == "cerebras" and result.fallback
    first = result.attempts[0]
    assert (first.provider, first.kind) == ("bad", "too_large"), case
    assert f"larger than {MAX_RESPONSE_BYTES} bytes" in (first.error or "")
    assert upstream.written < MAX_RESPONSE_BYTES + SLACK, case


async def test_endless_sse_line_in_a_stream_is_cut_and_falls_back(cerebras: EmulatorThread) -> None:
    upstream = Endless(SSE_HEAD + chunk(b"data: "), chunk(b"y" * PIECE))
    server, url = await raw_server(upstream.handle)
    async with server, LLMRouter(config=bad_first(url, cerebras)) as router:
        stream = router.stream(prompt="hi", max_tokens=8)
        chunks = [c async for c in stream]
        await upstream.cut.wait()
    assert chunks and stream.provider == "cerebras"
    assert [(a.provider, a.kind) for a in stream.attempts][0] == ("bad", "too_large")
    assert upstream.written < MAX_SSE_LINE_BYTES + SLACK


BOMB = gzip.compress(b'{"choices": [{"message": {"content": "' + b" " * (64 * 1024 * 1024), compresslevel=1)


async def test_gzip_bomb_is_stopped_while_inflating(cerebras: EmulatorThread) -> None:
    async def bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(BOMB), BOMB))
        await writer.drain()

    server, url = await raw_server(bomb)
    async with server, LLMRouter(config=bad_first(url, cerebras)) as router:
        result = await router.generate("hi", max_tokens=8)
    assert len(BOMB) < MAX_RESPONSE_BYTES  # small on the wire: only counting after decoding catches it
    assert result.provider == "cerebras"
    assert (result.attempts[0].provider, result.attempts[0].kind) == ("bad", "too_large")


async def test_gzip_bomb_in_a_stream_is_stopped_by_the_line_limit(cerebras: EmulatorThread) -> None:
    bomb = gzip.compress(b"data: " + b"z" * (64 * 1024 * 1024), compresslevel=1)

    async def stream_bomb(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD.replace(b"\r\n\r\n", b"\r\ncontent-encoding: gzip\r\n\r\n") + chunk(bomb) + b"0\r\n\r\n")
        await writer.drain()

    server, url = await raw_server(stream_bomb)
    async with server, LLMRouter(config=bad_first(url, cerebras)) as router:
        stream = router.stream(prompt="hi", max_tokens=8)
        chunks = [c async for c in stream]
    assert chunks and stream.provider == "cerebras"
    assert (stream.attempts[0].provider, stream.attempts[0].kind) == ("bad", "too_large")


async def test_an_answer_of_exactly_the_limit_is_read(cerebras: EmulatorThread) -> None:
    head, tail = (b'{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"role": "assistant", '
                  b'"content": "', b'"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}')
    text = b"a" * (MAX_RESPONSE_BYTES - len(head) - len(tail))
    body = head + text + tail

    async def at_the_limit(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()

    server, url = await raw_server(at_the_limit)
    async with server, LLMRouter(config=bad_first(url, cerebras)) as router:
        result = await router.generate("hi", max_tokens=8)
    assert len(body) == MAX_RESPONSE_BYTES
    assert result.provider == "bad" and result.text == text.decode()


async def test_endless_response_head_is_cut(cerebras: EmulatorThread) -> None:
    upstream = Endless(b"HTTP/1.1 200 OK\r\nx-endless: ", b"h" * PIECE)
    server, url = await raw_server(upstream.handle)
    async with server, LLMRouter(config=bad_first(url, cerebras)) as router:
        result = await router.generate("hi", max_tokens=8)
        await upstream.cut.wait()
    assert result.provider == "cerebras"
    assert (result.attempts[0].provider, result.attempts[0].kind) == ("bad", "too_large")
    assert upstream.written < MAX_RESPONSE_BYTES + SLACK


async def test_bytes_dripping_without_an_event_are_silence() -> None:
    """After the first event, ``timeout_s`` bounds the wait for the next *event*: an upstream that keeps the
    connection alive one byte at a time, never finishing a line, is cut at ``timeout_s``, not at the line limit."""
    first = b'data: {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hello"}}]}\n\n'
    stop = asyncio.Event()

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(SSE_HEAD + chunk(first) + chunk(b"data: "))
        try:
            while not stop.is_set():
                writer.write(chunk(b"y"))
                await writer.drain()
                await asyncio.sleep(0.02)  # the drip's pace: a byte every 20 ms, far inside any silence timeout
        except ConnectionError:
            pass
        finally:
            writer.close()

    server, url = await raw_server(drip)
    config = {"providers": {"bad": provider(url, "cerebras", timeout_s=0.5)}, "strategy": "cost_optimized"}
    async with server, LLMRouter(config=config, ledger=False) as router:
        stream = router.stream(prompt="hi", max_tokens=8)
        received = []
        with pytest.raises(StreamInterrupted) as caught:
            async with asyncio.timeout(30):  # without the bound, this stream would last until the line limit
                async for piece in stream:
                    received.append(piece)
        stop.set()
    assert [c["choices"][0]["delta"]["content"] for c in received] == ["Hello"]
    assert "timed out" in caught.value.message
