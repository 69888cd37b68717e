"""Attacks on budgets and keys, against a real ``llmroute serve``, emulated providers and a SQLite ledger:
each test is a way a client could try to spend past a budget, and fails on the code that let it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .conftest import RunningGateway, stop_gateway
from .test_budgets_gateway import MESSAGES, assert_refused, priced, state
from .test_keys_gateway import create, rows

ADMIN = "admin-key-for-budget-attacks"


def test_conflicting_output_caps_reserve_the_larger(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
) -> None:
    """``max_completion_tokens: 1`` with ``max_tokens: 100000``: a provider that obeys ``max_tokens`` bills
    up to 100000 tokens ($1 at $10 per million), so the reservation must be that, not one token's."""
    ledger = tmp_path / "ledger.db"
    key = create(ledger, "caps", "--budget-usd", "0.01", "--period", "day")
    gw = gateway_factory(priced(seed_config, ledger), env={"LLMROUTE_API_KEYS": ADMIN})
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=gw.base_url, timeout=30, headers=headers) as client:
        for caps in ({"max_completion_tokens": 1, "max_tokens": 100_000},
                     {"max_tokens": 1, "max_completion_tokens": 100_000}):
            response = client.post("/v1/chat/completions", json={
                "model": "quality_optimized", "messages": MESSAGES, **caps})
            assert_refused(response, "key:caps", "day", key)
        fits = client.post("/v1/chat/completions", json={
            "model": "quality_optimized", "messages": MESSAGES, "max_completion_tokens": 5, "max_tokens": 5})
        assert fits.status_code == 200, fits.text
    assert state(gw, ADMIN)["key:caps"]["reserved_usd"] == 0


def test_an_attempt_billed_before_a_fallback_is_reserved_too(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A GPU-second provider that hangs is billed its worker time up to its timeout, and then the fallback
    bills the answer: the reservation must hold both, or a key passes its budget by the failed attempt."""
    ledger = tmp_path / "ledger.db"
    key = create(ledger, "gpu", "--budget-usd", "0.0015", "--period", "day")
    config = priced(seed_config, ledger, retry_rounds=0, balanced_weights={"runpod": 100, "cerebras": 1})
    runpod = config["providers"]["runpod"]
    runpod.pop("price_per_m")
    runpod.update(price_per_gpu_second=0.0008, timeout_s=1)
    emus["runpod"].set_faults({"hang": 1.0})
    try:
        gw = gateway_factory(config, env={"LLMROUTE_API_KEYS": ADMIN})
        with httpx.Client(base_url=gw.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
            answers = [client.post("/v1/chat/completions", json={
                "model": "balanced", "messages": MESSAGES, "max_tokens": 100}) for _ in range(2)]
    finally:
        emus["runpod"].set_faults({})
    assert stop_gateway(gw) == 0
    (spent,), = rows(ledger, "SELECT sum(cost_usd) FROM requests WHERE key_id = ?", "gpu")
    assert all(a.status_code in (200, 429) for a in answers), [a.text for a in answers]
    assert (spent or 0.0) <= 0.0015 + 1e-12, (spent, [a.headers.get("x-llmroute-attempts") for a in answers])
