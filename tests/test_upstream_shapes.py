"""A broken upstream means fallback: valid JSON of the wrong shape, bad usage, 1xx/204/3xx answers.

The emulated RunPod is made to send each broken answer (``x-emulator-fault`` in its configured headers);
the emulated Cerebras answers. Every case must fall back and leave a ledger row with sane numbers.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from llmroute import LLMRouter, StreamInterrupted
from llmroute.ledger import Ledger, open_store
from llmroute.pricing import MAX_USAGE_TOKENS, InvalidUsage, usage_tokens

from .gateway.conftest import RunningGateway, gateway_factory  # noqa: F401
from .providers.upstreams import QuietHandler, threaded_upstream

SHAPE_FAULTS = ["bad_choices", "bad_message", "bad_usage", "negative_usage", "overflow_usage"]


def ledger_at(tmp_path: Path) -> Ledger:
    return Ledger(open_store(str(tmp_path / "ledger.sqlite3")), flush_interval_s=0.01)


def rows(ledger: Ledger) -> list[dict[str, Any]]:
    assert ledger.flush()
    names = ["provider", "status", "prompt_tokens", "completion_tokens", "cost_usd", "fallback", "attempts"]
    return [dict(zip(names, r)) for r in ledger.store.fetch(f"SELECT {', '.join(names)} FROM requests ORDER BY id")]


def broken_runpod_first(config: dict[str, Any], fault: str) -> dict[str, Any]:
    """cost_optimized tries runpod (made cheapest) first; runpod answers with ``fault``."""
    config["providers"]["runpod"]["price_per_m"] = {"input": 0.01, "output": 0.01}
    config["providers"]["runpod"]["headers"] = {"x-emulator-fault": fault}
    config["strategy"] = "cost_optimized"
    return config


def assert_sane(row: dict[str, Any]) -> None:
    for key in ("prompt_tokens", "completion_tokens"):
        assert type(row[key]) is int and 0 <= row[key] <= MAX_USAGE_TOKENS
    assert 0 <= row["cost_usd"] < 1


@pytest.mark.parametrize(("fault", "kind"), [*((f, "malformed") for f in SHAPE_FAULTS),
                                             ("204", "unexpected_status"), ("302", "unexpected_status")])
@pytest.mark.parametrize("endpoint", ["chat", "completions"])
async def test_wrong_answers_fall_back_with_a_ledger_row(
    seed_config: dict[str, Any], tmp_path: Path, fault: str, kind: str, endpoint: str,
) -> None:
    ledger = ledger_at(tmp_path)
    async with LLMRouter(config=broken_runpod_first(seed_config, fault), ledger=ledger) as router:
        if endpoint == "chat":
            result = await router.generate("Qualify this lead: TechCorp", max_tokens=20)
        else:
            result = await router.complete("Qualify this lead: TechCorp", max_tokens=20)
    assert result.provider == "cerebras" and result.fallback
    assert [(a.provider, a.kind) for a in result.attempts] == [("runpod", kind), ("cerebras", "ok")]
    [row] = rows(ledger)
    assert row["provider"] == "cerebras" and row["status"] == "ok" and row["fallback"]
    assert f'"kind":"{kind}"' in row["attempts"]
    assert_sane(row)
    ledger.close()


@pytest.mark.parametrize("fault", ["bad_choices", "bad_message", "bad_usage"])
async def test_a_bad_first_stream_chunk_falls_back(seed_config: dict[str, Any], tmp_path: Path, fault: str) -> None:
    ledger = ledger_at(tmp_path)
    async with LLMRouter(config=broken_runpod_first(seed_config, fault), ledger=ledger) as router:
        stream = router.stream(prompt="Qualify this lead: TechCorp", max_tokens=20)
        chunks = [chunk async for chunk in stream]
    assert chunks and stream.result is not None
    assert stream.result.provider == "cerebras" and stream.result.fallback
    assert [a.kind for a in stream.result.attempts] == ["malformed", "ok"]
    [row] = rows(ledger)
    assert row["status"] == "ok" and row["fallback"]
    assert_sane(row)
    ledger.close()


@pytest.mark.parametrize("fault", ["negative_usage", "overflow_usage"])
async def test_a_bad_usage_chunk_after_the_answer_started_interrupts_cleanly(
    seed_config: dict[str, Any], tmp_path: Path, fault: str,
) -> None:
    ledger = ledger_at(tmp_path)
    async with LLMRouter(config=broken_runpod_first(seed_config, fault), ledger=ledger) as router:
        stream = router.stream(prompt="Qualify this lead: TechCorp", max_tokens=20, resume=False)
        seen = 0
        with pytest.raises(StreamInterrupted, match="wrong shape"):
            async for _ in stream:
                seen += 1
    assert seen > 0
    [row] = rows(ledger)
    assert row["status"] == "interrupted" and row["provider"] == "runpod"
    assert_sane(row)  # billed from an estimate of the text, not from the broken usage
    assert row["completion_tokens"] > 0
    ledger.close()


@pytest.mark.parametrize("fault", ["negative_usage", "bad_usage", "bad_choices"])
def test_gateway_streams_end_with_done_whatever_the_upstream_sends(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], fault: str,  # noqa: F811
) -> None:
    gw = gateway_factory(broken_runpod_first(seed_config, fault))
    body = {"model": "cost_optimized", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with httpx.stream("POST", gw.base_url + "/v1/chat/completions", json=body, timeout=10) as resp:
        assert resp.status_code == 200
        events = [line[6:] for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    payloads = [orjson.loads(e) for e in events[:-1]]
    if fault == "negative_usage":  # the answer had started: it ends with an error event, then [DONE]
        assert resp.headers["x-llmroute-provider"] == "runpod"
        assert payloads[-1]["error"]["code"] == "stream_interrupted"
    else:  # the first chunk was bad: cerebras answered instead, and says so
        assert resp.headers["x-llmroute-provider"] == "cerebras"
        assert resp.headers["x-llmroute-fallback"] == "true"
        assert resp.headers["x-llmroute-attempts"] == "runpod:malformed,cerebras:200"
        assert all("error" not in p for p in payloads)
    metrics = httpx.get(gw.base_url + "/metrics")
    assert metrics.status_code == 200


@pytest.mark.parametrize("fault", ["204", "302", "bad_choices", "overflow_usage"])
def test_gateway_falls_back_instead_of_relaying_a_broken_answer(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], fault: str,  # noqa: F811
) -> None:
    gw = gateway_factory(broken_runpod_first(seed_config, fault))
    resp = httpx.post(gw.base_url + "/v1/chat/completions", timeout=10,
                      json={"model": "cost_optimized", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-llmroute-provider"] == "cerebras"
    assert resp.headers["x-llmroute-attempts"].startswith("runpod:")
    assert isinstance(resp.json()["choices"][0]["message"]["content"], str)


async def _raw_upstream(answer: bytes) -> tuple[asyncio.Server, str]:
    """A server that answers every request with ``answer`` and hangs up: a broken proxy in front of a provider."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


@pytest.fixture
async def informational_only() -> AsyncIterator[str]:
    server, url = await _raw_upstream(b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n")
    async with server:
        yield url


async def test_a_lone_informational_answer_falls_back(seed_config: dict[str, Any], informational_only: str) -> None:
    config = broken_runpod_first(seed_config, "400")
    config["providers"]["runpod"].update(base_url=informational_only, headers={})
    async with LLMRouter(config=config, ledger=False) as router:
        result = await router.generate("hi", max_tokens=5)
    assert result.provider == "cerebras" and result.fallback
    assert result.attempts[0].provider == "runpod" and not result.attempts[0].ok


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": "x"}, {"completion_tokens": -1}, {"completion_tokens": 1e308}, {"prompt_tokens": 1.5},
    {"prompt_tokens": True}, {"completion_tokens": MAX_USAGE_TOKENS + 1}, 5, "usage",
    {"prompt_tokens_details": 7}, {"prompt_tokens_details": {"cached_tokens": -3}},
])
def test_usage_tokens_refuses_what_is_not_a_count(usage: Any) -> None:
    with pytest.raises(InvalidUsage):
        usage_tokens(usage)


def test_usage_tokens_accepts_counts() -> None:
    assert usage_tokens({"prompt_tokens": 10, "completion_tokens": 2.0, "prompt_tokens_details": None}) == (10, 2, 0)
    assert usage_tokens({}) == (0, 0, 0) and usage_tokens(None) == (0, 0, 0)


async def _fallback_from(seed_config: dict[str, Any], url: str, *, stream: bool = False) -> Any:
    """The result of one request that tries the upstream at ``url`` first, then the emulated Cerebras."""
    config = broken_runpod_first(seed_config, "400")
    config["providers"]["runpod"].update(base_url=url, headers={})
    async with LLMRouter(config=config, ledger=False) as router:
        if not stream:
            return await router.generate("hi", max_tokens=5)
        chunks = router.stream(prompt="hi", max_tokens=5)
        texts = [c["choices"][0]["delta"].get("content") or "" async for c in chunks if c.get("choices")]
        return chunks.result, "".join(texts)


class EndlessHead(QuietHandler):
    """200, then header lines until the client hangs up (or twice the head's byte limit)."""

    written = 0
    hung_up = threading.Event()

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # count what the peer took, roughly
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            while EndlessHead.written < 16 * 1024 * 1024:  # without a line limit the client reads 8 MiB of it
                self.wfile.write(b"X-A: b\r\n" * 512)
                EndlessHead.written += 8 * 512
        except ConnectionError:
            pass
        finally:
            self.close_connection = True
            EndlessHead.hung_up.set()


async def test_endless_header_lines_are_cut_early(seed_config: dict[str, Any]) -> None:
    with threaded_upstream(EndlessHead) as host:
        result = await _fallback_from(seed_config, f"http://{host}/v1")
        assert await asyncio.to_thread(EndlessHead.hung_up.wait, 10)
    assert result.provider == "cerebras" and result.fallback
    assert result.attempts[0].provider == "runpod" and result.attempts[0].kind == "too_large"
    assert "header lines" in result.attempts[0].error
    assert EndlessHead.written < 1024 * 1024  # hung up on after a few KiB, not after megabytes of callbacks


def _sse_answer(events: list[bytes], eol: bytes, *, prefix: bytes = b"") -> bytes:
    """A close-delimited SSE answer: ``data:`` lines ended by ``eol``, blank-line separated."""
    body = prefix + b"".join(b"data: " + e + eol + eol for e in events)
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n" + body


def _chunk(text: str) -> bytes:
    return orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                         "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


@pytest.mark.parametrize(("eol", "prefix", "done"), [
    (b"\r", b"", b"[DONE]"),  # bare CR line endings
    (b"\r\n", b"", b"[DONE]   "),  # [DONE] with trailing spaces
    (b"\n", b"", b"[DONE]\t "),
    (b"\n", b"\xef\xbb\xbf", b"[DONE]"),  # a byte order mark before the first event
    (b"\r", b"\xef\xbb\xbf", b"[DONE] "),
])
async def test_valid_sse_variants_are_read_whole(seed_config: dict[str, Any], eol: bytes, prefix: bytes,
                                                 done: bytes) -> None:
    # A chunk with no choices (Azure's content filter results) is legitimate in a stream.
    no_choices = b'{"id": "c1", "object": "chat.completion.chunk", "choices": [], "prompt_filter_results": []}'
    events = [_chunk("Hello"), no_choices, _chunk(", world"), done]
    server, url = await _raw_upstream(_sse_answer(events, eol, prefix=prefix))
    async with server:
        result, text = await _fallback_from(seed_config, url, stream=True)
    assert result.provider == "runpod" and not result.fallback, result.attempts
    assert text == "Hello, world"  # the first chunk was not dropped


async def test_an_answer_with_no_choices_falls_back(seed_config: dict[str, Any], tmp_path: Path) -> None:
    body = orjson.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [],
                         "usage": {"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5}})
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    server, url = await _raw_upstream(answer)
    async with server:
        result = await _fallback_from(seed_config, url)
    assert result.provider == "cerebras" and result.fallback
    assert [(a.provider, a.kind) for a in result.attempts] == [("runpod", "malformed"), ("cerebras", "ok")]
    assert "'choices' is empty" in result.attempts[0].error
    assert result.text
