"""Streaming clients that stop reading are cut off after ``gateway.write_timeout_s``, releasing the provider's
connection and recording what the request cost; every streamed response carries its ``x-request-id``."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from .conftest import RunningGateway, stop_gateway
from .test_parser_errors import address


class EndlessUpstream:
    """A provider whose streams never end (a long generation), in a thread; it notes when a stream is dropped."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.streams = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.base_url = ""
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            big = body["messages"][0]["content"] == "a big answer"  # 6 MB: more than any socket buffer holds
            return web.json_response({
                "id": "c1", "object": "chat.completion", "created": 0, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * 1_200_000 if big else "ok"},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1_200_000 if big else 1, "total_tokens": 4},
            })
        self.streams += 1
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        event = b"data: " + orjson.dumps({"id": "s1", "object": "chat.completion.chunk", "created": 0, "model": "m",
                                          "choices": [{"index": 0, "delta": {"content": "word " * 200}}]}) + b"\n\n"
        try:
            while True:
                await response.write(event)
                await asyncio.sleep(0)
        except (ConnectionError, asyncio.CancelledError):
            self.released.set()
            raise

    def _serve(self) -> None:
        async def main() -> None:
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._chat)
            runner = web.AppRunner(app, handler_cancellation=True)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self._stop.wait()
            await runner.cleanup()

        asyncio.run(main())

    def __enter__(self) -> EndlessUpstream:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def upstream() -> Iterator[EndlessUpstream]:
    with EndlessUpstream() as server:
        yield server


def test_a_client_that_stops_reading_is_cut_off_and_the_provider_released(
    tmp_path: Path, upstream: EndlessUpstream, gateway_factory: Callable[..., RunningGateway],
) -> None:
    ledger = tmp_path / "l.sqlite3"
    gateway = gateway_factory({
        "providers": {"slowpoke": {"base_url": upstream.base_url, "model": "m", "max_connections": 1,
                                   "timeout_s": 5, "price_per_m": {"input": 1.0, "output": 2.0}}},
        "gateway": {"write_timeout_s": 1},
        "ledger": {"path": str(ledger), "flush_interval_s": 0.01},
    })
    body = orjson.dumps({"messages": [{"role": "user", "content": "write forever"}], "stream": True})
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that takes very little, then nothing
    client.settimeout(30)
    client.connect(address(gateway))
    client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"x-request-id: never-reads\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    assert upstream.released.wait(30), "the gateway still holds the provider's stream"
    # The provider's only connection is free again: the next request gets it.
    with httpx.Client(base_url=gateway.base_url, timeout=20) as http:
        r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
    # The slow client's connection is gone: reading now ends, with a reset or an end of stream (not a timeout).
    try:
        while client.recv(65536):
            pass
    except ConnectionResetError:
        pass
    client.close()
    assert stop_gateway(gateway) == 0
    db = sqlite3.connect(ledger)
    rows = db.execute("SELECT status, error, completion_tokens, cost_usd FROM requests "
                      "WHERE request_id = 'never-reads'").fetchall()
    assert len(rows) == 1
    status, error, completion_tokens, cost_usd = rows[0]
    assert status == "cancelled" and "gateway.write_timeout_s" in error
    assert completion_tokens > 0 and cost_usd > 0  # what the provider generated before the cut is billed
    log = gateway.log()
    assert "stream cut off: the client read nothing for 1 s" in log and "Traceback" not in log


@pytest.mark.parametrize("given", ["client-chose-this-id", None])
def test_streamed_responses_carry_the_request_id(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], given: str | None,
) -> None:
    gateway = gateway_factory(seed_config)
    headers = {"x-request-id": given} if given else {}
    with httpx.Client(base_url=gateway.base_url, timeout=20) as http:
        with http.stream("POST", "/v1/chat/completions", headers=headers,
                         json={"messages": [{"role": "user", "content": "hi"}], "stream": True}) as r:
            assert r.status_code == 200
            text = r.read().decode()
        again = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                         "stream": True})
    request_id = r.headers.get("x-request-id")
    assert text.endswith("data: [DONE]\n\n")
    if given:
        assert request_id == given
    else:
        assert request_id and request_id != again.headers["x-request-id"]


def test_a_client_that_never_reads_a_whole_answer_is_cut_off(
    upstream: EndlessUpstream, gateway_factory: Callable[..., RunningGateway],
) -> None:
    """Not only streams: a big JSON answer the client never takes would hold its connection and its bytes."""
    gateway = gateway_factory({
        "providers": {"big": {"base_url": upstream.base_url, "model": "m", "timeout_s": 10,
                              "price_per_m": {"input": 1.0, "output": 2.0}}},
        "gateway": {"write_timeout_s": 1}, "ledger": {"enabled": False},
    })
    body = orjson.dumps({"messages": [{"role": "user", "content": "a big answer"}]})
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(30)
    client.connect(address(gateway))
    client.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body) + body)
    wanted = "whose client did not take its answer within gateway.write_timeout_s (1 s)"
    deadline = time.monotonic() + 30
    while wanted not in gateway.log() and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the gateway's own log line, bounded
    assert wanted in gateway.log()
    received = 0
    try:
        while chunk := client.recv(65536):
            received += len(chunk)
    except ConnectionResetError:
        pass
    client.close()
    assert received < 6_000_000  # the answer was let go, not delivered late
    with httpx.Client(base_url=gateway.base_url, timeout=20) as http:  # and the gateway serves on
        r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and "Traceback" not in gateway.log()
