"""Every attempt's pricing mark is closed, whatever the attempt raised: a leaked one would make a GPU worker's
time look shared with a request that is not there, and bill the next requests a fraction of their cost."""

from __future__ import annotations

from typing import Any

import pytest

from llmroute import LLMRouter
from llmroute.cascade import Cascade
from llmroute.errors import AllProvidersFailed
from llmroute.providers import OpenAICompatProvider

from .conftest import emulator, provider

PRICE_PER_S = 0.001


async def broken_call(provider: OpenAICompatProvider, timeout_s: float) -> Any:
    """A call that fails in a way no provider error describes: a bug on llmroute's side of the attempt."""
    raise KeyError("not a provider problem")


async def test_an_unexpected_exception_closes_its_mark_and_is_an_internal_attempt() -> None:
    with emulator("runpod", speed=1.0, latency_ms=150.0) as emu:
        gpu = provider(emu.base_url, "runpod", price_per_gpu_second=PRICE_PER_S)
        del gpu["price_per_m"]
        async with LLMRouter(config={"providers": {"runpod": gpu}}, ledger=False) as router:
            for _ in range(5):  # five bad attempts, as five bad headers once did
                cascade = Cascade(router.providers, router.state, ["runpod"], deadline_s=5, retry_rounds=0,
                                  pricers=router.pricers)
                with pytest.raises(AllProvidersFailed) as info:
                    await cascade.run(broken_call)
                [attempt] = info.value.attempts
                assert attempt.kind == "internal" and "KeyError" in (attempt.error or "")
            result = await router.generate("hi", max_tokens=10)
            stats = router.state.snapshot()["runpod"]
    # Alone on the worker, the request is billed all of its busy time, not 1/6 of it.
    billed_s = result.cost_usd / PRICE_PER_S
    assert billed_s >= 0.9 * result.attempts[-1].latency_ms / 1000
    assert stats.failures == 0  # llmroute's own failure never counts against the provider
