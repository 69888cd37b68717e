"""Circuit breakers: the state machine on a fake clock, then real outages through the router."""

from __future__ import annotations

import time
from typing import Any


from llmroute import LLMRouter
from llmroute.breaker import BreakerSettings, CircuitBreaker

from .conftest import emulator, provider


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def breaker(**settings: Any) -> tuple[CircuitBreaker, Clock, list[tuple[str, str]]]:
    clock = Clock()
    changes: list[tuple[str, str]] = []
    b = CircuitBreaker(BreakerSettings(**settings), lambda state, reason: changes.append((state, reason)), clock)
    return b, clock, changes


def test_opens_after_failures_in_the_window_only() -> None:
    b, clock, changes = breaker(failures=3, window_s=10, min_requests=100)
    b.on_failure("server_error")
    b.on_failure("server_error")
    clock.t += 11  # the first two fall out of the window
    b.on_failure("server_error")
    b.on_failure("connect")
    assert b.state == "closed" and b.allow()
    b.on_failure("error_in_body")
    assert b.state == "open" and not b.allow()
    assert changes == [("open", "3 failures in 10 s (last: error_in_body)")]


def test_opens_on_error_rate_and_on_consecutive_timeouts() -> None:
    b, _, _ = breaker(failures=100, error_rate=0.5, min_requests=10)
    for i in range(10):
        (b.on_failure("server_error") if i % 2 else b.on_success())
    assert b.state == "open" and "error rate 50% over 10 requests" in b.last_reason
    b, _, _ = breaker(consecutive_timeouts=2)
    b.on_failure("timeout")
    b.on_success()  # a success resets the run
    b.on_failure("timeout")
    assert b.state == "closed"
    b.on_failure("timeout")
    assert b.state == "open" and b.last_reason == "2 timeouts in a row"


def test_client_errors_and_cancellations_say_nothing_about_health() -> None:
    b, _, _ = breaker(failures=1)
    for kind in ("bad_request", "context_length", "not_found", "unprocessable", "cancelled"):
        b.on_failure(kind)
    assert b.state == "closed"


def test_half_open_probes_then_closes_or_reopens_for_longer() -> None:
    b, clock, changes = breaker(failures=1, open_s=5, max_open_s=12, half_open_probes=1)
    b.on_failure("server_error")
    assert b.retry_in_s() == 5 and not b.allow()
    clock.t += 5
    assert b.allow()  # the probe
    assert not b.allow()  # one probe at a time
    b.on_failure("server_error")  # the probe failed: open again, for twice as long
    assert b.state == "open" and b.retry_in_s() == 10
    clock.t += 10
    assert b.allow()
    b.on_failure("timeout")
    assert b.retry_in_s() == 12  # capped at max_open_s
    clock.t += 12
    assert b.allow()
    b.on_success()
    assert b.state == "closed" and b.allow() and b.allow()
    assert [s for s, _ in changes] == ["open", "half_open", "open", "half_open", "open", "half_open", "closed"]
    b.on_failure("server_error")
    assert b.retry_in_s() == 5  # a success resets the open period


def test_outcomes_of_requests_sent_before_a_change_are_ignored() -> None:
    b, clock, _ = breaker(failures=1, open_s=1)
    sent_before = clock.t
    clock.t += 0.1
    b.on_failure("server_error")
    assert b.state == "open"
    clock.t += 1
    assert b.allow()  # half-open: probe sent now
    b.on_failure("server_error", started_at=sent_before)  # a straggler from before the outage was noticed
    b.on_success(started_at=sent_before)
    assert b.state == "half_open"
    b.on_success(started_at=clock.t)
    assert b.state == "closed"


def test_health_check_verdict_forces_a_state() -> None:
    b, _, changes = breaker()
    b.force(False, "health check failed: connect")
    assert b.state == "open"
    b.force(True, "health check passed")
    assert b.state == "closed" and changes[-1] == ("closed", "health check passed")


async def test_a_hanging_provider_is_skipped_once_its_breaker_opens(seed_config: dict[str, Any]) -> None:
    with emulator("runpod", speed=1.0, latency_ms=0.0) as dead:
        dead.set_faults({"hang": 1.0})
        seed_config["providers"]["runpod"] = provider(dead.base_url, "runpod", timeout_s=0.3)
        seed_config["strategy"] = "cost_optimized"
        seed_config["breaker"] = {"consecutive_timeouts": 2, "open_s": 60}
        async with LLMRouter(config=seed_config, ledger=False) as router:
            first = [await router.generate("hi", max_tokens=5) for _ in range(2)]
            assert [a.kind for a in first[0].attempts] == ["timeout", "ok"]
            assert router.state.breaker("runpod").state == "open"
            started = time.perf_counter()
            after = [await router.generate("hi", max_tokens=5) for _ in range(20)]
            elapsed_s = time.perf_counter() - started
    assert all(r.provider == "cerebras" and r.attempts[0].kind == "circuit_open" for r in after)
    assert all(r.attempts[0].latency_ms == 0.0 and r.fallback for r in after)
    assert dead.emulator.stats["requests"] == 2  # nothing more was sent to the dead provider
    assert elapsed_s < 20 * 0.3  # not one of them waited for a timeout


async def test_traffic_returns_when_the_probe_succeeds(seed_config: dict[str, Any]) -> None:
    with emulator("runpod") as flaky:
        seed_config["providers"]["runpod"] = provider(flaky.base_url, "runpod")
        seed_config["strategy"] = "cost_optimized"
        seed_config["breaker"] = {"failures": 3, "open_s": 0.05}
        async with LLMRouter(config=seed_config, ledger=False) as router:
            flaky.set_faults({"500": 1.0})
            for _ in range(3):
                await router.generate("hi", max_tokens=5)
            breaker = router.state.breaker("runpod")
            assert breaker.state == "open"
            flaky.set_faults({})
            while breaker.retry_in_s() > 0:  # the open period is the breaker's own clock
                await router.generate("hi", max_tokens=5)
            result = await router.generate("hi", max_tokens=5)
    assert result.provider == "runpod" and breaker.state == "closed"


def test_keeps_its_latest_changes_of_state_for_the_dashboard() -> None:
    from llmroute.breaker import HISTORY_LEN

    b, clock, changes = breaker(failures=1, open_s=5, max_open_s=5)
    for _ in range(HISTORY_LEN):  # open, then half-open and closed again by a probe: three changes per cycle
        b.on_failure("server_error")
        clock.t += 6
        assert b.allow()
        b.on_success()
    described = b.describe()
    assert len(described["transitions"]) == HISTORY_LEN < len(changes)  # bounded, the oldest dropped
    assert [(t["state"], t["reason"]) for t in described["transitions"]] == changes[-HISTORY_LEN:]
    stamps = [t["ts"] for t in described["transitions"]]
    assert stamps == sorted(stamps) and abs(stamps[-1] - time.time()) < 60  # wall time, oldest first
    assert described["state"] == "closed" and described["opened"] == HISTORY_LEN
