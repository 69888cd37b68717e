"""SIGKILL of one of three real replicas under load: the others carry on, and the Postgres ledger they share keeps
what the durability window promises (an entry is committed at most ``ledger.flush_interval_s`` after its answer,
plus one batch write)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from llmroute.emulator import EmulatorThread

from ..ledger.test_postgres import postgres_dsn  # noqa: F401 (fixture: a real server on loopback)
from ..redis_fixture import RedisServer, redis_server  # noqa: F401
from .conftest import RunningGateway, stop_gateway

CHAT = "/v1/chat/completions"
BODY = {"messages": [{"role": "user", "content": "Qualify this lead"}], "max_tokens": 8}
REPLICAS = 3
VICTIM = 1
CLIENT_THREADS = 6
FLUSH_INTERVAL_S = 0.1  # the default
BATCH_WRITE_S = 0.25
"""Allowance for "one batch write" of the promise: a few hundred rows into Postgres on loopback, on a loaded
machine (measured well below it; the figures are printed)."""
WINDOW_S = FLUSH_INTERVAL_S + BATCH_WRITE_S


@dataclass(frozen=True)
class Outcome:
    replica: int
    answered_at: float
    """Monotonic time the client had the whole answer (or the error)."""
    status: int | None
    request_id: str | None
    error: str | None = None


@pytest.fixture
def ledger_dsn(postgres_dsn: str) -> Iterator[str]:  # noqa: F811
    """A database of its own on the shared server, so the ledger holds only this test's requests."""
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS replica_kill")
        conn.execute("CREATE DATABASE replica_kill")
    yield postgres_dsn.rsplit("/", 1)[0] + "/replica_kill"


class Load:
    """Client threads sending round-robin over the replicas still in rotation, as a load balancer would."""

    def __init__(self, gateways: list[RunningGateway], threads: int) -> None:
        self.gateways = gateways
        self.rotation = list(range(len(gateways)))
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._sent = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def answered(self, replica: int) -> list[Outcome]:
        return [o for o in list(self.outcomes) if o.replica == replica and o.status == 200]

    def take_out(self, replica: int) -> None:
        with self._lock:
            self.rotation.remove(replica)

    def _client(self) -> None:
        clients = [httpx.Client(base_url=g.base_url, timeout=30) for g in self.gateways]
        try:
            while not self._stop.is_set():
                with self._lock:
                    replica = self.rotation[self._sent % len(self.rotation)]
                    self._sent += 1
                self.outcomes.append(send(clients[replica], replica))
        finally:
            for client in clients:
                client.close()


def send(client: httpx.Client, replica: int) -> Outcome:
    headers = {"x-llmroute-tags": f"replica=r{replica}"}  # which replica served it, in the ledger too
    try:
        resp = client.post(CHAT, json=BODY, headers=headers)
    except httpx.HTTPError as exc:
        return Outcome(replica, time.monotonic(), None, None, f"{type(exc).__name__}: {exc}")
    return Outcome(replica, time.monotonic(), resp.status_code, resp.headers.get("x-request-id"),
                   None if resp.status_code == 200 else resp.text[:200])


def test_sigkill_of_a_replica_mid_load(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
    redis_server: RedisServer, ledger_dsn: str,  # noqa: F811
) -> None:
    import psycopg

    seed_config.update(retry_rounds=0, breaker={"failures": 3, "open_s": 60})
    config = {**seed_config, "ledger": {"dsn": ledger_dsn, "flush_interval_s": FLUSH_INTERVAL_S},
              "state": {"backend": "redis", "redis_url": redis_server.url, "sync_interval_s": 0.2,
                        "reconnect_s": 0.1}}
    gateways = [gateway_factory(config) for _ in range(REPLICAS)]
    survivors = [i for i in range(REPLICAS) if i != VICTIM]
    victim = gateways[VICTIM].process

    with Load(gateways, CLIENT_THREADS) as load:
        wait(lambda: len(load.answered(VICTIM)) >= 150, "the victim to answer 150 requests")
        killed_at = time.monotonic()  # the moment the signal goes: the promise is about answers older than this
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        load.take_out(VICTIM)  # the load balancer notices
        before = {i: len(load.answered(i)) for i in survivors}
        wait(lambda: all(len(load.answered(i)) >= before[i] + 150 for i in survivors),
             "each survivor to answer 150 more requests after the kill")
    outcomes = list(load.outcomes)

    # (d) The survivors still share state: a breaker that opens on one opens on the other, which sees no traffic.
    first, second = survivors
    assert breaker(gateways[second]) == "closed"
    emus["runpod"].set_faults({"500": 1.0})
    with httpx.Client(base_url=gateways[first].base_url, timeout=30) as client:
        def opened_on_first() -> bool:
            outcomes.append(send(client, first))  # answered by cerebras meanwhile
            return breaker(gateways[first]) == "open"

        wait(opened_on_first, "the breaker to open on the first survivor")
    wait(lambda: breaker(gateways[second]) == "open", "the breaker to open on the second survivor too")

    for i in survivors:  # gracefully, as a rolling restart would: they commit everything they answered
        assert stop_gateway(gateways[i]) == 0
        assert "Traceback" not in gateways[i].log()

    with psycopg.connect(ledger_dsn) as conn:
        rows = conn.execute("SELECT request_id, tags FROM requests").fetchall()
    stored = Counter(request_id for request_id, _ in rows)

    # (a) Requests sent to the survivors all succeeded, before, during and after the kill.
    to_survivors = [o for o in outcomes if o.replica != VICTIM]
    failures = [o for o in to_survivors if o.status != 200]
    assert failures == [], failures[:5]
    # (b) Every answer a survivor gave is in the ledger, exactly once.
    assert [o.request_id for o in to_survivors if stored[o.request_id] != 1] == []
    # (c) Every answer the victim gave earlier than the durability window before the kill is in it, once.
    answered = [o for o in outcomes if o.replica == VICTIM and o.status == 200]
    old = [o for o in answered if o.answered_at < killed_at - WINDOW_S]
    missing = [(o.request_id, round(killed_at - o.answered_at, 3)) for o in old if stored[o.request_id] != 1]
    assert missing == [], missing
    assert all(stored[o.request_id] <= 1 for o in answered)
    # Nothing in the ledger nobody asked for: the victim's rows beyond its answers are requests it recorded but
    # whose answer the kill cut off; no other row exists.
    served_by = {o.request_id: o.replica for o in outcomes if o.request_id}
    assert all(f"replica=r{served_by[rid]}" in tags for rid, tags in rows if rid in served_by)
    unanswered = [(rid, tags) for rid, tags in rows if rid not in served_by]
    assert all(f"replica=r{VICTIM}" in tags for _, tags in unanswered), unanswered[:5]

    lost = [o for o in answered if stored[o.request_id] == 0]
    failed = [o for o in outcomes if o.replica == VICTIM and o.status is None]
    cut = [o for o in failed if "ConnectError" not in (o.error or "")]  # the rest went out after its death
    # Negative: an answer the victim wrote before the signal went, read by the client just after.
    newest_lost_age = min((killed_at - o.answered_at for o in lost), default=None)
    oldest_lost_age = max((killed_at - o.answered_at for o in lost), default=None)
    print(f"\nvictim answered {len(answered)} requests, the ledger kept {len(answered) - len(lost)}, lost {len(lost)}"
          f" (read by the client {fmt(newest_lost_age)}..{fmt(oldest_lost_age)} before the kill; window"
          f" {WINDOW_S:.2f} s); {len(failed)} of its requests failed at the client ({len(cut)} cut off in flight),"
          f" {len(unanswered)} of those recorded anyway; survivors answered {len(to_survivors)}, 0 errors")


def fmt(age_s: float | None) -> str:
    return "-" if age_s is None else f"{age_s * 1000:.0f} ms"


def breaker(gateway: RunningGateway) -> str:
    state = httpx.get(gateway.base_url + "/router/state", timeout=10).json()
    return state["providers"]["runpod"]["breaker"]["state"]


def wait(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll a condition other processes make true, up to a deadline."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
