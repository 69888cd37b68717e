"""The router over real HTTP against emulated providers: results, cost, every fault, both directions."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

import pytest

from llmroute import (
    AllProvidersFailed,
    ClientRequestError,
    ContextLengthExceeded,
    LLMRouter,
    RoutingStrategy,
    load_config,
)
from llmroute.emulator import EmulatorThread
from llmroute.pricing import cost_usd

from .conftest import emulator, free_port, provider

SEED_PROMPT = "Qualify this lead: TechCorp, 500 employees, SaaS industry"

# Faults after which the router must move on to the next provider.
RETRYABLE = ["429", "500", "502", "503", "504", "hang", "reset", "error_in_body", "malformed", "stream_cut"]
EXPECTED_KIND = {"429": "rate_limited", "500": "server_error", "502": "server_error", "503": "server_error",
                 "504": "server_error", "hang": "timeout", "reset": "disconnected", "error_in_body": "error_in_body",
                 "malformed": "malformed", "stream_cut": "disconnected"}


def primary_first(config: dict[str, Any], primary: str) -> dict[str, Any]:
    """Make ``primary`` the first choice of cost_optimized."""
    other = "cerebras" if primary == "runpod" else "runpod"
    config["providers"][primary]["price_per_m"] = {"input": 0.01, "output": 0.01}
    config["providers"][other]["price_per_m"] = {"input": 0.10, "output": 0.10}
    config["strategy"] = "cost_optimized"
    return config


async def test_generate_seed_call_and_result_fields(seed_config: dict[str, Any]) -> None:
    async with LLMRouter(strategy=RoutingStrategy.BALANCED, config=seed_config) as router:
        result = await router.generate(SEED_PROMPT, max_tokens=500)
    assert result.provider == "runpod"  # balanced 80/20 starts on the 80
    assert result.strategy == "balanced"
    assert result.model == "meta-llama/Meta-Llama-3.1-8B-Instruct"
    assert result.text and result["result"] == result.text
    assert result["provider"] == "runpod"
    assert result["latency_ms"] == result.latency_ms > 0
    assert result.get("fallback", False) is False and result.original_error is None
    usage = result.raw["usage"]
    assert (result.prompt_tokens, result.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert result.cost_usd == pytest.approx((usage["prompt_tokens"] + usage["completion_tokens"]) * 0.02 / 1e6, abs=1e-12)
    assert result["cost_per_m"] == pytest.approx(0.02)
    assert result.raw["system_fingerprint"] == "emulated-runpod"  # unknown fields preserved
    assert [a.provider for a in result.attempts] == ["runpod"] and result.attempts[0].ok
    assert result.get("nonexistent", "dflt") == "dflt"


async def test_cost_uses_separate_input_and_output_prices(seed_config: dict[str, Any]) -> None:
    seed_config["providers"]["cerebras"]["price_per_m"] = {"input": 0.15, "output": 0.60}
    async with LLMRouter(strategy="quality_optimized", config=seed_config) as router:
        result = await router.chat([{"role": "user", "content": SEED_PROMPT}], max_tokens=80)
    assert result.provider == "cerebras"
    price = router.config.providers["cerebras"].price_per_m
    expected = (result.prompt_tokens * 0.15 + result.completion_tokens * 0.60) / 1e6
    assert result.cost_usd == pytest.approx(expected, abs=1e-12)
    assert result.cost_usd == cost_usd(price, result.prompt_tokens, result.completion_tokens)
    assert result.ratelimit["x-ratelimit-remaining-tokens-minute"].isdigit()  # Cerebras headers kept


async def test_balanced_split_exact_over_http(seed_config: dict[str, Any]) -> None:
    async with LLMRouter(config=seed_config) as router:
        results = await asyncio.gather(*(router.generate("hi", max_tokens=5) for _ in range(100)))
    assert Counter(r.provider for r in results) == {"runpod": 80, "cerebras": 20}


@pytest.mark.parametrize("primary", ["runpod", "cerebras"])
@pytest.mark.parametrize("fault", RETRYABLE)
async def test_fallback_on_every_fault_both_directions(
    seed_config: dict[str, Any], emus: dict[str, EmulatorThread], fault: str, primary: str,
) -> None:
    config = primary_first(seed_config, primary)
    config["providers"][primary]["headers"] = {"x-emulator-fault": fault}
    config["providers"][primary]["timeout_s"] = 0.5
    secondary = "cerebras" if primary == "runpod" else "runpod"
    async with LLMRouter(config=config) as router:
        result = await router.generate(SEED_PROMPT, max_tokens=50)
    assert result.provider == secondary
    assert result.fallback is True
    assert [a.provider for a in result.attempts] == [primary, secondary]
    failed = result.attempts[0]
    assert failed.kind == EXPECTED_KIND[fault] and not failed.ok
    assert result.original_error and result.original_error.startswith(f"{primary}: {failed.kind}")
    if fault.isdigit():
        assert failed.status == int(fault)
    assert result.text


async def test_connection_refused_falls_back(seed_config: dict[str, Any]) -> None:
    config = primary_first(seed_config, "runpod")
    config["providers"]["runpod"]["base_url"] = f"http://127.0.0.1:{free_port()}/v1"
    async with LLMRouter(config=config) as router:
        result = await router.generate(SEED_PROMPT)
    assert result.provider == "cerebras"
    assert result.attempts[0].kind == "connect"


@pytest.mark.parametrize(("fault", "kind"), [("400", "bad_request"), ("404", "not_found"), ("422", "unprocessable")])
async def test_client_errors_return_at_once(seed_config: dict[str, Any], fault: str, kind: str) -> None:
    config = primary_first(seed_config, "runpod")
    config["providers"]["runpod"]["headers"] = {"x-emulator-fault": fault}
    async with LLMRouter(config=config) as router:
        with pytest.raises(ClientRequestError) as info:
            await router.generate(SEED_PROMPT)
    error = info.value
    assert error.status == int(fault) and error.kind == kind
    assert error.code == int(fault)  # vLLM sends an integer code; it is kept as sent
    assert [a.provider for a in error.attempts] == ["runpod"]  # cerebras never called


async def test_auth_failure_is_reported_as_misconfiguration(
    seed_config: dict[str, Any], caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "sk-wrong-key-1234567890"
    with emulator("runpod", api_key="right-key") as locked:
        config = primary_first(seed_config, "runpod")
        config["providers"]["runpod"].update(base_url=locked.base_url, api_key=secret)
        caplog.set_level(logging.DEBUG, logger="llmroute")
        async with LLMRouter(config=config) as router:
            result = await router.generate(SEED_PROMPT)
    assert result.provider == "cerebras"
    failed = result.attempts[0]
    assert failed.kind == "auth" and failed.status == 401
    assert "check its api_key" in failed.error
    assert "misconfigured" in caplog.text
    assert secret not in caplog.text and secret not in str(result.to_dict())


async def test_context_length_moves_to_larger_window(emus: dict[str, EmulatorThread]) -> None:
    config = {
        "providers": {
            "small": provider(emus["runpod"].base_url, "runpod", context_window=8192,
                              headers={"x-emulator-fault": "context_length"}),
            "same": provider(emus["runpod"].base_url, "runpod", context_window=8192,
                             price_per_m={"input": 0.05, "output": 0.05}),
            "large": provider(emus["cerebras"].base_url, "cerebras", context_window=131072),
        },
        "strategy": "cost_optimized",
    }
    async with LLMRouter(config=config) as router:
        result = await router.generate(SEED_PROMPT)
        assert result.provider == "large"  # "same" has no larger window, so it is skipped
        assert [a.kind for a in result.attempts] == ["context_length", "ok"]
        del config["providers"]["large"]
    async with LLMRouter(config=config) as router:
        with pytest.raises(ContextLengthExceeded):
            await router.generate(SEED_PROMPT)


async def test_all_fail_lists_every_attempt(seed_config: dict[str, Any]) -> None:
    for name in ("runpod", "cerebras"):
        seed_config["providers"][name]["headers"] = {"x-emulator-fault": "503"}
    seed_config["retry_rounds"] = 0
    async with LLMRouter(config=seed_config) as router:
        with pytest.raises(AllProvidersFailed) as info:
            await router.generate(SEED_PROMPT)
    error = info.value
    assert [(a.provider, a.status) for a in error.attempts] == [("runpod", 503), ("cerebras", 503)]
    assert all(a.latency_ms >= 0 and a.error for a in error.attempts)
    text = str(error)
    assert "runpod: server_error 503" in text and "cerebras: server_error 503" in text and " ms" in text
    assert error.retry_after_s == 0  # the emulator at full speed asks for no wait


async def test_deadline_bounds_the_cascade(seed_config: dict[str, Any]) -> None:
    for name in ("runpod", "cerebras"):
        seed_config["providers"][name]["headers"] = {"x-emulator-fault": "hang"}
        seed_config["providers"][name]["timeout_s"] = 30
    seed_config["deadline_s"] = 0.6
    async with LLMRouter(config=seed_config) as router:
        started = time.monotonic()
        with pytest.raises(AllProvidersFailed) as info:
            await router.generate(SEED_PROMPT)
        waited = time.monotonic() - started
    assert info.value.deadline_exceeded
    assert info.value.attempts[0].kind == "timeout"
    assert waited < 5  # bounded by the 0.6 s deadline, not two 30 s timeouts


async def test_retry_after_is_honoured_on_the_same_provider() -> None:
    # One provider, 429 with Retry-After 0.3 s once; the second round waits it out.
    with emulator("runpod", speed=1.0, latency_ms=0.0, retry_after_s=0.3) as emu:
        emu.set_faults({"429": 1.0}, times=1)
        config = {"providers": {"runpod": provider(emu.base_url, "runpod")}, "retry_rounds": 1}
        async with LLMRouter(config=config) as router:
            result = await router.generate(SEED_PROMPT)
    assert [a.kind for a in result.attempts] == ["rate_limited", "ok"]
    assert result.attempts[0].retry_after_s == pytest.approx(0.3)
    assert result.latency_ms >= 300


async def test_retry_after_longer_than_deadline_skips_provider(seed_config: dict[str, Any]) -> None:
    with emulator("runpod", speed=1.0, latency_ms=0.0, retry_after_s=120) as emu:
        emu.set_faults({"429": 1.0})
        seed_config["providers"]["runpod"]["base_url"] = emu.base_url
        config = primary_first(seed_config, "runpod")
        async with LLMRouter(config=config) as router:
            first = await router.generate(SEED_PROMPT)
            second = await router.generate(SEED_PROMPT)
    assert [a.kind for a in first.attempts] == ["rate_limited", "ok"]
    # The cool-down moves runpod behind cerebras for the next request: no wasted call, but a visible reroute.
    assert [(a.provider, a.kind) for a in second.attempts] == [("runpod", "cooling_down"), ("cerebras", "ok")]
    assert second.fallback and "Retry-After" in (second.original_error or "")
    assert emu.emulator.stats["requests"] == 1


async def test_latency_optimized_follows_measurements() -> None:
    with emulator("cerebras", speed=1.0, latency_ms=60.0) as slow, emulator("runpod", speed=1.0, latency_ms=0.0) as fast:
        config = {"providers": {
            "cerebras": provider(slow.base_url, "cerebras", latency_ms=10),  # prior says fast; it is not
            "runpod": provider(fast.base_url, "runpod", latency_ms=40),
        }, "strategy": "latency_optimized"}
        async with LLMRouter(config=config) as router:
            picks = [(await router.generate("hi", max_tokens=5)).provider for _ in range(4)]
            estimate = router.state.latency_estimate_ms("cerebras")
    assert picks == ["cerebras", "runpod", "runpod", "runpod"]
    assert estimate > 40


async def test_per_call_strategy_override_and_completions(seed_config: dict[str, Any]) -> None:
    async with LLMRouter(config=seed_config) as router:
        assert (await router.generate("hi", strategy="quality_optimized")).provider == "cerebras"
        assert (await router.generate("hi", strategy=RoutingStrategy.COST_OPTIMIZED)).provider == "runpod"
        completion = await router.complete("San Francisco is a", max_tokens=10)
        assert completion.text and completion.completion_tokens > 0
        with pytest.raises(ValueError):
            await router.generate("hi", strategy="fastest")


async def test_router_loads_yaml_path(tmp_path: Any, seed_config: dict[str, Any]) -> None:
    import yaml

    path = tmp_path / "llmroute.yaml"
    path.write_text(yaml.safe_dump(seed_config))
    async with LLMRouter(strategy="cost_optimized", config=str(path)) as router:
        assert router.config.source == str(path)
        assert (await router.generate("hi")).provider == "runpod"
    assert load_config(path).providers["runpod"].timeout_s == 5


async def test_connections_are_pooled_and_kept_alive() -> None:
    with emulator("runpod") as emu:
        config = {"providers": {"runpod": provider(emu.base_url, "runpod")}}
        async with LLMRouter(config=config) as router:
            for _ in range(20):
                await router.generate("hi", max_tokens=5)
            await asyncio.gather(*(router.generate("hi", max_tokens=5) for _ in range(8)))
        stats = emu.emulator.stats
    assert stats["requests"] == 28
    assert stats["connections"] <= 8  # 20 sequential requests reused one connection
