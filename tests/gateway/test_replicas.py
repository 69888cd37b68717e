"""Three real ``llmroute serve`` replicas sharing state through a real redis-server, requests sprayed over them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from itertools import cycle
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmroute.emulator import EmulatorThread

from ..conftest import emulator, provider
from ..redis_fixture import RedisServer, redis_server  # noqa: F401
from .conftest import RunningGateway

CHAT = "/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
REPLICAS = 3


def shared(config: dict[str, Any], redis: RedisServer) -> dict[str, Any]:
    return {**config, "state": {"backend": "redis", "redis_url": redis.url, "sync_interval_s": 0.2,
                                "reconnect_s": 0.1}}


@pytest.fixture
def clients() -> Iterator[Callable[[list[RunningGateway]], list[httpx.Client]]]:
    opened: list[httpx.Client] = []

    def make(gateways: list[RunningGateway]) -> list[httpx.Client]:
        made = [httpx.Client(base_url=g.base_url, timeout=30) for g in gateways]
        opened.extend(made)
        return made

    yield make
    for client in opened:
        client.close()


def metric(client: httpx.Client, name: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise KeyError(name)


def test_balanced_split_is_exact_over_any_100_consecutive_requests(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], redis_server: RedisServer,  # noqa: F811
    clients: Any,
) -> None:
    gateways = [gateway_factory(shared(seed_config, redis_server)) for _ in range(REPLICAS)]
    picks = []
    for client, _ in zip(cycle(clients(gateways)), range(375), strict=False):  # round-robin, as a load balancer
        resp = client.post(CHAT, json=BODY)
        assert resp.status_code == 200
        picks.append(resp.headers["x-llmroute-provider"])
    runpod = [sum(p == "runpod" for p in picks[i:i + 100]) for i in range(len(picks) - 99)]
    print(f"runpod's share of any 100 consecutive requests over {REPLICAS} replicas: {min(runpod)}..{max(runpod)}")
    assert all(abs(n - 80) <= REPLICAS for n in runpod), (min(runpod), max(runpod))  # one request per replica
    assert picks.count("runpod") == 300  # 125 requests per replica: 25 whole cycles of 4 runpod + 1 cerebras


def spray(gateways: list[RunningGateway], requests: int, concurrency: int, clients: Any) -> list[int]:
    """``requests`` requests, round-robin over the replicas from ``concurrency`` threads; their statuses."""
    targets = clients(gateways)
    statuses: list[int] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            statuses.append(targets[i % len(targets)].post(CHAT, json=BODY).status_code)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_an_outage_costs_about_one_replicas_breaker_threshold(
    backend: str, gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
    emus: dict[str, EmulatorThread], redis_server: RedisServer, clients: Any,  # noqa: F811
) -> None:
    seed_config.update(retry_rounds=0, breaker={"failures": 5, "open_s": 60})
    config = shared(seed_config, redis_server) if backend == "redis" else seed_config
    gateways = [gateway_factory(config) for _ in range(REPLICAS)]
    runpod = emus["runpod"]
    before = runpod.emulator.stats["requests"]
    runpod.set_faults({"500": 1.0})  # runpod dies
    statuses = spray(gateways, 90, concurrency=3, clients=clients)
    assert statuses.count(200) == 90  # cerebras answers what runpod cannot
    failed = runpod.emulator.stats["requests"] - before
    print(f"{backend}: runpod received {failed} failed attempts across {REPLICAS} replicas (threshold 5 each)")
    if backend == "redis":
        assert failed <= 5 + 3  # the threshold, plus at most one in flight per client when it opened
        states = [c.get("/router/state").json()["providers"]["runpod"]["breaker"] for c in clients(gateways)]
        assert all(s["state"] == "open" for s in states)
        # One probe cluster-wide: one replica probes after open_s (60 s); the others wait for its verdict
        # until the probe's timeout (30 s more) has passed.
        assert sorted(s["retry_in_s"] > 75 for s in states) == [False, True, True], states
    else:
        assert failed >= 5 * REPLICAS  # each replica learns the outage on its own


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_shared_rate_limit_buckets_avoid_429s(
    backend: str, gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
    redis_server: RedisServer, clients: Any,  # noqa: F811
) -> None:
    with emulator("cerebras", tokens_per_minute=3000) as limited:
        seed_config["providers"]["cerebras"] = provider(limited.base_url, "cerebras")
        seed_config["balanced_weights"] = {"cerebras": 1, "runpod": 0}  # everything to the rate-limited provider first
        config = shared(seed_config, redis_server) if backend == "redis" else seed_config
        gateways = [gateway_factory(config) for _ in range(REPLICAS)]
        body = {**BODY, "max_tokens": 200}  # charged prompt + max_tokens: about 14 fit in the minute
        statuses = []
        for client, _ in zip(cycle(clients(gateways)), range(45), strict=False):
            resp = client.post(CHAT, json=body)
            statuses.append(resp.status_code)
        limited_429s = limited.emulator.stats.get("429", 0)
        served = limited.emulator.stats["ok"]
    print(f"{backend}: {limited_429s} answers 429 from the rate-limited provider, {served} served by it")
    assert statuses == [200] * 45  # the other provider takes the rest either way
    assert served >= 10
    if backend == "redis":
        assert limited_429s == 0
    else:
        assert limited_429s >= REPLICAS - 1  # a replica learns the bucket is empty from a 429


def test_redis_killed_and_restarted_mid_load(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
    redis_server: RedisServer, clients: Any,  # noqa: F811
) -> None:
    seed_config.update(retry_rounds=0, breaker={"failures": 3, "open_s": 60})
    gateways = [gateway_factory(shared(seed_config, redis_server)) for _ in range(REPLICAS)]
    watchers = clients(gateways)
    assert all(metric(c, "llmroute_state_backend_up") == 1 for c in watchers)
    statuses: list[int] = []
    stop = threading.Event()
    targets = clients(gateways)

    def load() -> None:
        for client in cycle(targets):
            if stop.is_set():
                return
            statuses.append(client.post(CHAT, json=BODY).status_code)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        _wait(lambda: len(statuses) >= 50)
        redis_server.kill()
        _wait(lambda: all(metric(c, "llmroute_state_backend_up") == 0 for c in watchers))
        served_while_down = len(statuses)
        _wait(lambda: len(statuses) >= served_while_down + 50)
        redis_server.start()  # empty: it lost every key
        _wait(lambda: all(metric(c, "llmroute_state_backend_up") == 1 for c in watchers))
        resumed = len(statuses)
        _wait(lambda: len(statuses) >= resumed + 50)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert all(metric(c, "llmroute_state_backend_lost_total") == 1 for c in watchers)
    for gateway in gateways:
        log = gateway.log()
        assert log.count("state backend redis unreachable") == 1 and log.count("state backend redis is back") == 1
        assert "redis://" not in log
    # Resynced: a breaker opened on one replica now opens on all of them again.
    emus["runpod"].set_faults({"500": 1.0})
    _wait(lambda: watchers[0].post(CHAT, json=BODY).status_code == 200
          and watchers[0].get("/router/state").json()["providers"]["runpod"]["breaker"]["state"] == "open")
    _wait(lambda: all(c.get("/router/state").json()["providers"]["runpod"]["breaker"]["state"] == "open"
                      for c in watchers))


def _wait(condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    """Poll a condition another process makes true."""
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
