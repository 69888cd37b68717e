"""A key's budget across three real ``llmroute serve`` replicas: with Redis state they reserve against one
total, so waves of 3 x 50 concurrent requests cannot pass it; with memory state each replica enforces it alone.

The documented bound: the ledger's sum for the key never exceeds the budget plus, per request in flight, what
its answer was billed above its reservation (an answer longer than ``max_tokens`` allows, or longer than the
budget's ``default_max_tokens`` when the request set no cap). The emulated providers keep ``max_tokens`` and
every request here sets it, so that excess is 0 and the bound is the budget itself. Leases do not move it: a
replica reserves locally only within a slice Redis already counts in the total. (Redis lost mid-run would add
nothing either: each replica may then reserve only its unused slice and its share of what was left.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from ..redis_fixture import RedisServer, redis_server  # noqa: F401
from .conftest import RunningGateway, stop_gateway
from .test_budgets_gateway import assert_refused, priced, send_burst
from .test_keys_gateway import create, rows

REPLICAS = 3
PER_REPLICA = 50
MAX_WAVES = 40
BUDGET_USD = 0.01
ADMIN = "admin-key-for-budget-tests"


def spend_on_replicas(gateway_factory: Callable[..., RunningGateway], config: dict[str, Any], ledger: Path,
                      key: str) -> tuple[float, list[httpx.Response], list[dict[str, Any]]]:
    """Start the replicas, send 50 concurrent requests to each at once, again (a reservation is the worst case,
    the bill less, so each wave settles room for more) until a whole wave is refused; stop them: the ledger's
    sum for the key, every answer, and each replica's /router/state before the first wave."""
    gateways = [gateway_factory(config, env={"LLMROUTE_API_KEYS": ADMIN}) for _ in range(REPLICAS)]
    headers = {"Authorization": f"Bearer {key}"}
    states = [httpx.get(g.base_url + "/router/state", headers={"Authorization": f"Bearer {ADMIN}"}).json()
              for g in gateways]

    async def all_at_once() -> list[list[httpx.Response]]:
        return await asyncio.gather(*(send_burst(g.base_url, PER_REPLICA, headers) for g in gateways))

    answers: list[httpx.Response] = []
    for _ in range(MAX_WAVES):
        wave = [r for per in asyncio.run(all_at_once()) for r in per]
        for response in wave:  # checked as they come: Retry-After counts down to the period's end
            if response.status_code != 200:
                assert_refused(response, "key:tiny", "day", key)
        answers += wave
        if all(r.status_code != 200 for r in wave):
            break
    else:
        raise AssertionError(f"the budget still served after {MAX_WAVES} waves")
    for gateway in gateways:
        assert stop_gateway(gateway) == 0
    (spent,), = rows(ledger, "SELECT coalesce(sum(cost_usd), 0) FROM requests WHERE key_id = ?", "tiny")
    (count,), = rows(ledger, "SELECT count(*) FROM requests WHERE key_id = ?", "tiny")
    assert count == sum(r.status_code == 200 for r in answers)  # every answer served is in the ledger
    return spent, answers, states


def test_three_replicas_sharing_redis_never_pass_a_key_budget(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    ledger = tmp_path / "ledger.db"
    key = create(ledger, "tiny", "--budget-usd", str(BUDGET_USD), "--period", "day")
    config = priced(seed_config, ledger, state={"backend": "redis", "redis_url": redis_server.url,
                                                "sync_interval_s": 0.2})
    spent, answers, states = spend_on_replicas(gateway_factory, config, ledger, key)
    print(f"redis state: {REPLICAS} replicas x {PER_REPLICA} concurrent, {len(answers)} requests, ledger sum for the key ${spent:.6f} "
          f"(budget ${BUDGET_USD}), {sum(r.status_code == 200 for r in answers)} served")
    for state in states:
        assert state["state_backend"]["backend"] == "redis" and state["state_backend"]["reachable"] is True
    served = [r for r in answers if r.status_code == 200]
    assert served and len(served) < len(answers)
    assert spent <= BUDGET_USD + 1e-12, spent  # the bound in the docstring: the budget itself here


def test_three_replicas_with_memory_state_each_enforce_the_budget_alone(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
) -> None:
    """What sharing prevents: without it each replica holds the key to the whole budget on its own."""
    ledger = tmp_path / "ledger.db"
    key = create(ledger, "tiny", "--budget-usd", str(BUDGET_USD), "--period", "day")
    spent, answers, states = spend_on_replicas(gateway_factory, priced(seed_config, ledger), ledger, key)
    print(f"memory state: {REPLICAS} replicas x {PER_REPLICA} concurrent, {len(answers)} requests, ledger sum for the key ${spent:.6f} "
          f"(budget ${BUDGET_USD}), {sum(r.status_code == 200 for r in answers)} served")
    assert all(state["state_backend"] == {"backend": "memory"} for state in states)
    assert BUDGET_USD < spent <= REPLICAS * BUDGET_USD + 1e-12, spent
