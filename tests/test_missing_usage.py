"""An answer without ``usage`` is still billed: its tokens are estimated, priced and marked as estimated.

A throwaway upstream stands in for a provider that never reports usage (the field absent, or null), on
plain and streamed answers. The library and the gateway must charge the estimate (the request's
estimated prompt, the text returned), and the ledger must say the cost is an estimate.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from llmroute import LLMRouter, StreamInterrupted
from llmroute.ledger import Ledger, open_store
from llmroute.tokens import estimate_message_tokens, estimate_tokens

from .gateway.conftest import RunningGateway, gateway_factory, stop_gateway  # noqa: F401

ANSWER = "TechCorp looks like a qualified lead: budget confirmed, decision maker engaged, timeline this quarter."
PIECES = [ANSWER[i:i + 17] for i in range(0, len(ANSWER), 17)]
PRICE = {"input": 3.0, "output": 15.0}
MESSAGES = [{"role": "user", "content": "Qualify this lead: TechCorp, 200 staff, asked for a demo twice."}]


@dataclass
class NoUsageUpstream:
    """An OpenAI-compatible endpoint that answers ``ANSWER`` and never reports usage."""

    usage: str
    """``absent``: no usage key at all; ``null``: ``"usage": null`` in every body or chunk."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    def _with_usage(self, body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "usage": None} if self.usage == "null" else body

    def _answer(self, request: dict[str, Any]) -> tuple[str, bytes]:
        base = {"id": "cmpl-1", "created": 1, "model": "bare-model"}
        if not request.get("stream"):
            body = {**base, "object": "chat.completion", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}]}
            return "application/json", orjson.dumps(self._with_usage(body))
        events = []
        for i, piece in enumerate(PIECES):
            last = i == len(PIECES) - 1
            chunk = {**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": {"content": piece}, "finish_reason": "stop" if last else None}]}
            events.append(b"data: " + orjson.dumps(self._with_usage(chunk)) + b"\n\n")
        events.append(b"data: [DONE]\n\n")  # asked for include_usage, but no usage chunk comes
        return "text/event-stream", b"".join(events)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
                request = orjson.loads(await reader.readexactly(int(headers.get("content-length", "0"))))
                self.requests.append(request)
                content_type, payload = self._answer(request)
                writer.write(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n"
                             f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # a cancelled handler ends normally: Python 3.11's stream callback logs a cancelled one as an error
        finally:
            writer.close()
            self.handlers.discard(task)

    async def __aenter__(self) -> NoUsageUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.handlers:  # kept-alive connections the client has not closed yet
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


@pytest.fixture(params=["absent", "null"])
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[NoUsageUpstream]:
    async with NoUsageUpstream(request.param) as server:
        yield server


def config_for(upstream: NoUsageUpstream, **extra: Any) -> dict[str, Any]:
    return {"providers": {"bare": {"base_url": upstream.base_url, "model": "bare-model", "price_per_m": PRICE,
                                   "timeout_s": 5}},
            "strategy": "cost_optimized", **extra}


def expected() -> tuple[int, int, float]:
    """(prompt, completion, cost): what the router estimates for ``MESSAGES`` answered with ``ANSWER``."""
    prompt, completion = estimate_message_tokens(MESSAGES), estimate_tokens(ANSWER)
    return prompt, completion, (prompt * PRICE["input"] + completion * PRICE["output"]) / 1e6


def ledger_rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT status, prompt_tokens, completion_tokens, cost_usd, cost_basis FROM requests").fetchall()


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_library_bills_an_answer_without_usage_from_an_estimate(
    upstream: NoUsageUpstream, tmp_path: Path, streamed: bool,
) -> None:
    ledger = Ledger(open_store(str(tmp_path / "ledger.sqlite3")), flush_interval_s=0.01)
    async with LLMRouter(config=config_for(upstream), ledger=ledger) as router:
        if streamed:
            stream = router.stream(MESSAGES, max_tokens=50)
            text = "".join([(c["choices"][0]["delta"].get("content") or "") async for c in stream if c["choices"]])
            result = stream.result
        else:
            result = await router.chat(MESSAGES, max_tokens=50)
            text = result.text
    assert result is not None and text == ANSWER
    assert upstream.requests and upstream.requests[-1].get("stream", False) is streamed
    prompt, completion, cost = expected()
    assert prompt > 0 and completion > 0 and cost > 0
    assert (result.prompt_tokens, result.completion_tokens) == (prompt, completion)
    assert result.cost_usd == pytest.approx(cost, rel=1e-12)
    assert result.attempts[-1].cost_basis == "tokens_estimated"
    ledger.close()
    [(status, row_prompt, row_completion, row_cost, basis)] = ledger_rows(tmp_path / "ledger.sqlite3")
    assert (status, row_prompt, row_completion, basis) == ("ok", prompt, completion, "tokens_estimated")
    assert row_cost == pytest.approx(cost, rel=1e-12)


@pytest.mark.parametrize("streamed", [False, True], ids=["plain", "stream"])
async def test_gateway_bills_an_answer_without_usage_from_an_estimate(
    upstream: NoUsageUpstream, tmp_path: Path, streamed: bool,
    gateway_factory: Callable[..., RunningGateway],  # noqa: F811
) -> None:
    path = tmp_path / "gw.sqlite3"
    gateway = gateway_factory(config_for(upstream, ledger={"path": str(path), "flush_interval_s": 0.01}))
    body = {"model": "cost_optimized", "messages": MESSAGES, "max_tokens": 50, "stream": streamed}
    prompt, completion, cost = expected()
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=10) as client:
        resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    if streamed:
        events = [line[6:] for line in resp.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or ""
                       for e in events[:-1] if orjson.loads(e).get("choices"))
    else:
        assert float(resp.headers["x-llmroute-cost-usd"]) == pytest.approx(cost, abs=1e-9)
        text = resp.json()["choices"][0]["message"]["content"]
    assert text == ANSWER
    assert await asyncio.to_thread(stop_gateway, gateway) == 0  # the ledger is flushed on the way out
    [(status, row_prompt, row_completion, row_cost, basis)] = ledger_rows(path)
    assert (status, row_prompt, row_completion, basis) == ("ok", prompt, completion, "tokens_estimated")
    assert row_cost == pytest.approx(cost, rel=1e-12)


async def cut_after_first_chunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """An upstream that sends ``ANSWER`` as one chunk, no usage, then drops the connection."""
    await reader.readuntil(b"\r\n\r\n")
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": "bare-model",
             "choices": [{"index": 0, "delta": {"content": ANSWER}, "finish_reason": None}]}
    event = b"data: " + orjson.dumps(chunk) + b"\n\n"
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: "
                 + str(len(event) + 1000).encode() + b"\r\n\r\n" + event)
    await writer.drain()
    writer.close()  # before the promised length: the stream breaks after its first chunk


def provider_at(url: str, price: dict[str, float]) -> dict[str, Any]:
    return {"base_url": url, "model": "bare-model", "price_per_m": price, "timeout_s": 5}


async def test_an_interrupted_stream_without_usage_is_marked_estimated_too(tmp_path: Path) -> None:
    """The same rule as a complete answer: text received, no usage -> priced from the estimate, and said so."""
    server = await asyncio.start_server(cut_after_first_chunk, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    config = {"providers": {"bare": provider_at(url, PRICE)}, "strategy": "cost_optimized"}
    ledger = Ledger(open_store(str(tmp_path / "ledger.sqlite3")), flush_interval_s=0.01)
    try:
        async with LLMRouter(config=config, ledger=ledger) as router:
            stream = router.stream(MESSAGES, max_tokens=50, resume=False)
            with pytest.raises(StreamInterrupted):
                async for _ in stream:
                    pass
    finally:
        server.close()
    ledger.close()
    prompt, completion, cost = expected()
    [(status, row_prompt, row_completion, row_cost, basis)] = ledger_rows(tmp_path / "ledger.sqlite3")
    assert (status, row_prompt, row_completion, basis) == ("interrupted", prompt, completion, "tokens_estimated")
    assert row_cost == pytest.approx(cost, rel=1e-12)


async def test_a_resumed_stream_bills_each_provider_for_its_own_text(tmp_path: Path) -> None:
    """The provider that finishes a resumed answer sent only its part: that part is its estimate, not the whole."""
    server = await asyncio.start_server(cut_after_first_chunk, "127.0.0.1", 0)
    cut_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    cheap = {"input": PRICE["input"] / 2, "output": PRICE["output"] / 2}
    try:
        async with NoUsageUpstream("absent") as rest:
            config = {"providers": {"cut": provider_at(cut_url, cheap), "rest": provider_at(rest.base_url, PRICE)},
                      "strategy": "cost_optimized"}
            async with LLMRouter(config=config, ledger=False) as router:
                stream = router.stream(MESSAGES, max_tokens=50, resume=True)
                text = "".join([(c["choices"][0]["delta"].get("content") or "") async for c in stream if c["choices"]])
    finally:
        server.close()
    result = stream.result
    assert result is not None and stream.resumed == 1 and text == ANSWER + ANSWER
    prompt, completion, _ = expected()
    assert [(a.provider, a.prompt_tokens, a.completion_tokens, a.cost_basis) for a in result.attempts] == [
        ("cut", prompt, completion, "tokens_estimated"), ("rest", prompt, completion, "tokens_estimated")]
    costs = [(prompt * p["input"] + completion * p["output"]) / 1e6 for p in (cheap, PRICE)]
    assert [a.cost_usd for a in result.attempts] == pytest.approx(costs, rel=1e-12)
    assert result.cost_usd == pytest.approx(sum(costs), rel=1e-12)
    assert result.completion_tokens == 2 * completion
