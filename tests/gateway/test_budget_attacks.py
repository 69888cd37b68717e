"""Attacks on budgets and keys, against a real ``llmroute serve``, emulated providers and a SQLite ledger:
each test is a way a client could try to spend past a budget, and fails on the code that let it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from .conftest import RunningGateway
from .test_budgets_gateway import MESSAGES, assert_refused, priced, state
from .test_keys_gateway import create

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
