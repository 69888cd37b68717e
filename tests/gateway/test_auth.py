"""Gateway keys: required when configured, compared in constant time, never echoed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from llmroute.gateway.auth import KeyIdentity, KeyLimiter, KeyStore, OverLimit, is_loopback
from llmroute.state import InMemoryState

from .conftest import RunningGateway

CHAT = "/v1/chat/completions"


def test_keys_from_config_and_env(gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any]) -> None:
    seed_config["gateway"] = {"api_keys": [{"id": "team-a", "key": "${TEAM_A_KEY}"}, "plain-key-2"]}
    gw = gateway_factory(seed_config, env={"TEAM_A_KEY": "ka-secret", "LLMROUTE_API_KEYS": "env-key-1, env-key-2"})
    body = {"messages": [{"role": "user", "content": "hi"}]}
    for key in ("ka-secret", "plain-key-2", "env-key-1", "env-key-2"):
        assert httpx.post(gw.base_url + CHAT, json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "ka-secret"}, {"Authorization": "Basic ka-secret"}):
        resp = httpx.post(gw.base_url + CHAT, json=body, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"]["code"] == "invalid_api_key"
        assert "ka-secret" not in resp.text
    assert httpx.get(gw.base_url + "/metrics").status_code == 401
    assert httpx.get(gw.base_url + "/router/state").status_code == 401
    assert httpx.get(gw.base_url + "/health").status_code == 200  # probes need no key
    good = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="ka-secret", max_retries=0)
    assert good.chat.completions.create(model="balanced", messages=[{"role": "user", "content": "hi"}]).choices
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.base_url + "/v1", api_key="nope", max_retries=0).models.list()
    assert "ka-secret" not in gw.log()


def test_keystore_checks_every_key() -> None:
    store = KeyStore([("a", "alpha"), ("b", "bravo")])
    assert store.check("Bearer alpha") == "a"
    assert store.check("bearer bravo") == "b"
    assert store.check("Bearer alph") is None
    assert store.check(None) is None and store.check("Bearer ") is None
    assert not KeyStore([])


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                                ("127.0.0.2", True), ("0.0.0.0", False), ("10.1.2.3", False),
                                                ("::", False), ("example.com", False)])
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


class Clock:
    def __init__(self, now_s: float) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


async def refused(limiter: KeyLimiter, key: KeyIdentity, tokens: int = 0) -> OverLimit:
    with pytest.raises(OverLimit) as caught:
        await limiter.acquire(key, tokens)
    return caught.value


async def test_rpm_slides_over_the_minute_boundary_instead_of_doubling_there() -> None:
    clock = Clock(600.0 + 59.0)  # one second before a minute ends
    limiter = KeyLimiter(InMemoryState({}), shared=False, clock=clock)
    key = KeyIdentity("r", admin=False, rpm=4, rate_limited=True)
    for _ in range(4):
        await limiter.acquire(key, 0)
    over = await refused(limiter, key)
    assert over.unit == "requests" and "4 requests per minute (in this gateway process)" in str(over)
    assert over.retry_after_s == 1 + 15  # the minute's end, then a quarter of the next (when one of 4 has faded)
    clock.now_s = 660.0 + 2.0  # a fixed window would take 4 more now: the 4 just sent still weigh 3.87
    assert (await refused(limiter, key)).retry_after_s == 13
    clock.now_s = 660.0 + 15.0  # a quarter of them has faded: room for one, and only one
    await limiter.acquire(key, 0)
    await refused(limiter, key)
    clock.now_s = 720.0 + 30.0
    for _ in range(3):  # 1 sent last minute, weighing 0.5 at half past: 3 fit
        await limiter.acquire(key, 0)
    await refused(limiter, key)


async def test_tpm_reserves_the_estimate_settles_to_use_and_a_refusal_takes_nothing() -> None:
    clock = Clock(6000.0)
    limiter = KeyLimiter(InMemoryState({}), shared=True, clock=clock)
    key = KeyIdentity("t", admin=False, rpm=3, tpm=1000, rate_limited=True)
    hold = await limiter.acquire(key, 800)
    over = await refused(limiter, key, 300)  # 200 left
    assert over.unit == "tokens" and "1000 tokens per minute (shared by every gateway replica)" in str(over)
    limiter.settle(key, hold, 100)  # the answer was short: 700 back
    hold = await limiter.acquire(key, 900)
    limiter.settle(key, hold, 1900)  # longer than reserved: it counts, and the minute is over its limit
    over = await refused(limiter, key, 1)
    assert over.unit == "tokens"  # not "requests": the refused request's place among the 3 rpm was given back
    assert over.retry_after_s == 60 + 31  # this minute, then until its 2000 weigh no more than 999
    big = KeyIdentity("big", admin=False, tpm=500, rate_limited=True)
    hold = await limiter.acquire(big, 4000)  # larger than a minute's tokens: it takes the whole minute
    assert hold.tokens == 500
    await refused(limiter, big, 1)


async def test_limiters_sharing_a_state_share_the_limit() -> None:
    """Two gateway processes on one state (what Redis gives replicas): one limit between them, not one each."""
    state, clock = InMemoryState({}), Clock(1200.0)
    first, second = (KeyLimiter(state, shared=True, clock=clock) for _ in range(2))
    key = KeyIdentity("k", admin=False, rpm=5, rate_limited=True)
    for limiter in (first, second, first, second, first):
        await limiter.acquire(key, 0)
    await refused(first, key)
    await refused(second, key)
