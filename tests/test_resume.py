"""Streams that fail after tokens were sent: a clean error by default, one unbroken answer with resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llmroute import LLMRouter, StreamInterrupted
from llmroute.emulator import EmulatorThread
from llmroute.ledger import Ledger, open_store
from llmroute.stream import RESUME_PROMPT



def cost_first(seed_config: dict[str, Any]) -> dict[str, Any]:
    seed_config["strategy"] = "cost_optimized"  # runpod first, cerebras next
    return seed_config


async def test_resume_continues_on_the_next_provider(seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
                                                     tmp_path: Path) -> None:
    ledger = Ledger(open_store(str(tmp_path / "r.sqlite3")), flush_interval_s=0.01)
    emus["runpod"].set_faults({"stream_cut": 1.0})
    async with LLMRouter(config=cost_first(seed_config), ledger=ledger) as router:
        stream = router.stream(prompt="Summarise this contract in three points.", max_tokens=120, resume=True)
        texts, ids = [], set()
        async for chunk in stream:
            ids.add(chunk["id"])
            texts.extend((c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or ())
    result = stream.result
    assert result is not None and stream.resumed == 1
    assert result.provider == "cerebras" and len(ids) == 1  # one stream id from start to end
    assert [(a.provider, a.kind) for a in result.attempts] == [("runpod", "stream_interrupted"), ("cerebras", "ok")]
    sent_by_runpod = result.text[: len(result.text) - len("".join(texts)) or None]
    assert "".join(texts) == result.text and sent_by_runpod
    continuation = emus["cerebras"].emulator.last_body
    assert continuation["messages"][-2]["role"] == "assistant" and continuation["messages"][-1]["content"] == RESUME_PROMPT
    assert result.text.startswith(continuation["messages"][-2]["content"])
    assert result.cost_usd == pytest.approx(sum(a.cost_usd for a in result.attempts)) and result.attempts[0].cost_usd > 0
    assert ledger.flush()
    [(status, cost)] = ledger.store.fetch("SELECT status, cost_usd FROM requests")
    assert status == "ok" and cost == pytest.approx(result.cost_usd, abs=1e-12)
    ledger.close()


async def test_without_resume_the_stream_raises_and_nothing_is_retried(
        seed_config: dict[str, Any], emus: dict[str, EmulatorThread]) -> None:
    emus["runpod"].set_faults({"stream_cut": 1.0})
    before = emus["cerebras"].emulator.stats["requests"]
    async with LLMRouter(config=cost_first(seed_config), ledger=False) as router:
        with pytest.raises(StreamInterrupted):
            async for _ in router.stream(prompt="Summarise this contract.", max_tokens=120):
                pass
    assert emus["cerebras"].emulator.stats["requests"] == before  # nothing can be taken back, nothing is resent
