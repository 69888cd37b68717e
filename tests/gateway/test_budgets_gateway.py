"""Budgets against a real ``llmroute serve``, emulated providers and a real SQLite ledger: a key's budget holds
under 50 concurrent requests (the ledger's sum says so), exhausted budgets refuse with Retry-After or move to
the cheapest provider, and tag and all-traffic budgets apply and show in /router/state and /metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from llmroute.budget_period import retry_after_s

from .conftest import RunningGateway, stop_gateway
from .test_keys_gateway import create, rows

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Qualify this lead: Initech, 40 employees"}]
DEAR = {"input": 10.0, "output": 10.0}   # cerebras, priced up so a few requests reach a cent
CHEAP = {"input": 0.02, "output": 0.02}  # runpod


def priced(seed_config: dict[str, Any], ledger: Path, **extra: Any) -> dict[str, Any]:
    seed_config["providers"]["cerebras"]["price_per_m"] = DEAR
    seed_config["providers"]["runpod"]["price_per_m"] = CHEAP
    seed_config["ledger"] = {"path": str(ledger), "flush_interval_s": 0.01}
    seed_config["gateway"] = {"keys_refresh_s": 0.2}
    seed_config.update(extra)
    return seed_config


async def send_burst(base_url: str, count: int, headers: dict[str, str], **body: Any) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=httpx.Limits(max_connections=count)) as client:
        return await asyncio.gather(*(client.post(CHAT, headers=headers, json={
            "model": "balanced", "messages": MESSAGES, "max_tokens": 100, **body}) for _ in range(count)))


def burst(gw: RunningGateway, count: int, key: str, tags: str | None = None, **body: Any) -> list[httpx.Response]:
    headers = {"Authorization": f"Bearer {key}", **({"x-llmroute-tags": tags} if tags else {})}
    return asyncio.run(send_burst(gw.base_url, count, headers, **body))


def assert_refused(response: httpx.Response, budget: str, period: str, secret: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["code"] == "budget_exceeded" and f"'{budget}'" in error["message"]
    assert secret not in response.text
    assert abs(int(response.headers["Retry-After"]) - retry_after_s(period, time.time())) <= 2  # period's end


def state(gw: RunningGateway, key: str) -> dict[str, Any]:
    return httpx.get(gw.base_url + "/router/state", headers={"Authorization": f"Bearer {key}"}).json()["budgets"]


def test_a_key_budget_holds_under_50_concurrent_requests(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.db"
    key = create(ledger, "tiny", "--budget-usd", "0.01", "--period", "day")
    gw = gateway_factory(priced(seed_config, ledger), env={"LLMROUTE_API_KEYS": "admin-key-for-budget-tests"})
    answers = burst(gw, 50, key)
    served = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    assert served and refused, [r.status_code for r in answers]
    for response in refused:
        assert_refused(response, "key:tiny", "day", key)
    budget = state(gw, "admin-key-for-budget-tests")["key:tiny"]
    assert budget["reserved_usd"] == 0 and budget["usd"] == 0.01
    assert stop_gateway(gw) == 0
    (spent,), = rows(ledger, "SELECT sum(cost_usd) FROM requests WHERE key_id = ?", "tiny")
    (count,), = rows(ledger, "SELECT count(*) FROM requests WHERE key_id = ?", "tiny")
    assert count == len(served)
    # The documented bound: answers are never billed above their reservation here (the emulator keeps
    # max_tokens), so the ledger's sum stays within the budget itself.
    assert spent <= 0.01 + 1e-12, spent
    assert budget["spent_usd"] == round(spent, 9)


def test_cheapest_serves_on_the_cheapest_provider_then_refuses(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
) -> None:
    # Even one worst case at cerebras (the dear one) is over the budget: every request goes to runpod alone,
    # though quality_optimized would choose cerebras, until runpod's worst case no longer fits either.
    ledger = tmp_path / "ledger.db"
    config = priced(seed_config, ledger, strategy="quality_optimized",
                    budgets=[{"name": "everything", "usd": 0.00003, "on_exhausted": "cheapest", "period": "week"}])
    gw = gateway_factory(config, env={"LLMROUTE_API_KEYS": "admin-key-for-budget-tests"})
    answers = burst(gw, 12, "admin-key-for-budget-tests", model="quality_optimized")
    served = [r for r in answers if r.status_code == 200]
    assert served and all(r.headers["x-llmroute-provider"] == "runpod" for r in served)
    assert all(r.headers["x-llmroute-strategy"] == "cost_optimized" for r in served)
    refused = [r for r in answers if r.status_code != 200]
    assert refused, "a budget that even the cheapest provider spends must refuse"
    for response in refused:
        assert_refused(response, "everything", "week", "admin-key-for-budget-tests")
    assert stop_gateway(gw) == 0
    assert rows(ledger, "SELECT provider, strategy, count(*) FROM requests GROUP BY 1, 2") == [
        ("runpod", "cost_optimized", len(served))]  # recorded like any other request


def test_tag_and_all_traffic_budgets_count_streams_and_show_their_spend(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.db"
    config = priced(seed_config, ledger, budgets=[{"tag": "team=sales", "usd": 0.003, "period": "day"},
                                                  {"usd": 0.02, "period": "month"}])
    admin = "admin-key-for-budget-tests"
    gw = gateway_factory(config, env={"LLMROUTE_API_KEYS": admin})
    sales = burst(gw, 10, admin, tags="team=sales")
    assert any(r.status_code == 200 for r in sales)
    for response in (r for r in sales if r.status_code != 200):
        assert_refused(response, "tag:team=sales", "day", admin)
    others = burst(gw, 3, admin, tags="team=ops")
    assert all(r.status_code == 200 for r in others)  # the tag's budget is not theirs
    with httpx.stream("POST", gw.base_url + CHAT, headers={"Authorization": f"Bearer {admin}"},
                      json={"model": "balanced", "messages": MESSAGES, "max_tokens": 100, "stream": True}) as stream:
        assert stream.status_code == 200 and b"[DONE]" in stream.read()
    budgets = state(gw, admin)
    assert budgets["all"]["reserved_usd"] == 0 and budgets["tag:team=sales"]["reserved_usd"] == 0
    metrics = httpx.get(gw.base_url + "/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    assert 'llmroute_budget_limit_usd{budget="all"} 0.02' in metrics
    assert 'llmroute_budget_spent_usd{budget="tag:team=sales"}' in metrics
    assert stop_gateway(gw) == 0
    (everything,), = rows(ledger, "SELECT sum(cost_usd) FROM requests")
    (tagged,), = rows(ledger, "SELECT sum(cost_usd) FROM requests WHERE tags LIKE '%team=sales%'")
    assert budgets["all"]["spent_usd"] == round(everything, 9)  # the stream included, settled when it ended
    assert budgets["tag:team=sales"]["spent_usd"] == round(tagged, 9) and tagged <= 0.003
    assert budgets["all"]["left_usd"] == round(0.02 - everything, 9)


def test_a_restarted_gateway_keeps_the_periods_spend(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
) -> None:
    """Memory state: the totals die with the process, so a new one reads each budget's spend this period from
    the ledger (the key's, the tag's, all traffic's) before serving; an exhausted key stays refused."""
    ledger = tmp_path / "ledger.db"
    key = create(ledger, "tiny", "--budget-usd", "0.01", "--period", "day", "--tags", "team=sales")
    config = priced(seed_config, ledger, budgets=[{"tag": "team=sales", "usd": 0.5, "period": "week"},
                                                  {"usd": 1.0, "period": "month"}])
    admin = "admin-key-for-budget-tests"
    first = gateway_factory(config, env={"LLMROUTE_API_KEYS": admin})
    for _ in range(40):  # until the key's budget refuses a whole burst
        if all(r.status_code != 200 for r in burst(first, 50, key)):
            break
    else:
        raise AssertionError("the key's budget never ran out")
    assert stop_gateway(first) == 0
    (spent,), = rows(ledger, "SELECT sum(cost_usd) FROM requests WHERE key_id = ?", "tiny")
    assert spent > 0.005

    again = gateway_factory(config, env={"LLMROUTE_API_KEYS": admin})
    budgets = state(again, admin)  # seeded before serving: the first request already finds the spend
    assert budgets["key:tiny"]["spent_usd"] == round(spent, 9)
    assert budgets["tag:team=sales"]["spent_usd"] == round(spent, 9)  # the key's tag is on all its requests
    assert budgets["all"]["spent_usd"] == round(spent, 9)
    assert_refused(burst(again, 1, key)[0], "key:tiny", "day", key)
    assert burst(again, 1, admin)[0].status_code == 200  # other traffic still fits the all-traffic budget


def test_serve_on_all_interfaces_with_ledger_keys_only(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
) -> None:
    """Keys made with ``llmroute keys`` guard the gateway as config keys do: no --insecure needed."""
    ledger = tmp_path / "ledger.db"
    key = create(ledger, "bot")
    gw = gateway_factory(priced(seed_config, ledger), "--host", "0.0.0.0")
    url = gw.base_url.replace("0.0.0.0", "127.0.0.1") + CHAT
    body = {"model": "balanced", "messages": MESSAGES, "max_tokens": 5}
    assert httpx.post(url, json=body).status_code == 401
    assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
