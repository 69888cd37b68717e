"""A stream's latency sample is its time to first chunk: a long answer is not a slow (or cold) provider."""

from __future__ import annotations

import logging
import time

import pytest

from llmroute import LLMRouter

from .providers.test_http import raw_server
from .providers.test_stream_watchdog import Scripted, config


async def test_a_long_stream_is_not_a_cold_start_nor_a_slow_sample(caplog: pytest.LogCaptureFixture) -> None:
    upstream = Scripted(count=10)
    server, url = await raw_server(upstream.handle)
    async with server, LLMRouter(config=config(url, 30), ledger=False) as router:
        for _ in range(25):  # quick streams: the provider's recent p95 is a few ms
            assert len([c async for c in router.stream(prompt="hi", max_tokens=8)]) == 10
        upstream.gap_s = 0.1  # then one long answer: 10 chunks over about a second
        started = time.perf_counter()
        with caplog.at_level(logging.WARNING, logger="llmroute"):
            stream = router.stream(prompt="hi", max_tokens=8)
            assert len([c async for c in stream]) == 10
        duration_ms = (time.perf_counter() - started) * 1000
        stats = router.state.snapshot()["only"]
    assert "looks cold" not in caplog.text
    assert stats.cold_starts == 0
    assert stats.recent_latency_ms[-1] < duration_ms / 4  # its first chunk's latency, not the whole answer's
    assert stream.result is not None and stream.result.ttft_ms is not None
