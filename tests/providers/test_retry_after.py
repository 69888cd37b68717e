"""A provider's Retry-After is a hint within bounds: never a 500, never a cool-down for ever."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from llmroute import AllProvidersFailed, LLMRouter
from llmroute.providers.errors import DEFAULT_MAX_RETRY_AFTER_S, parse_retry_after

from ..gateway.conftest import RunningGateway, gateway_factory  # noqa: F401
from .upstreams import QuietHandler, threaded_upstream

HUGE = ["inf", "Infinity", "1e400", "99999999999", "Fri, 31 Dec 9999 23:59:59 GMT"]


class RateLimitedUpstream(QuietHandler):
    """429 with the Retry-After named by the first path segment (URL-quoted)."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        value = httpx.URL(self.path).path.split("/")[1]
        body = b'{"error": {"message": "slow down", "type": "rate_limit_error"}}'
        self.answer(429, body, retry_after=value)


@pytest.fixture
def rate_limited() -> Iterator[str]:
    with threaded_upstream(RateLimitedUpstream) as host:
        yield f"http://{host}"


def only_rate_limited(seed_config: dict[str, Any], base: str, value: str, **extra: Any) -> dict[str, Any]:
    for provider in seed_config["providers"].values():
        provider.update(base_url=f"{base}/{value}/v1", headers={}, **extra)
    seed_config["retry_rounds"] = 0
    return seed_config


@pytest.mark.parametrize("value", HUGE)
def test_a_huge_retry_after_is_capped(value: str) -> None:
    assert parse_retry_after({"retry-after": value}) == DEFAULT_MAX_RETRY_AFTER_S
    assert parse_retry_after({"retry-after": value}, max_s=7.5) == 7.5
    if not value.startswith("Fri"):  # a number: retry-after-ms takes it too
        assert parse_retry_after({"retry-after-ms": value}, max_s=7.5) == 7.5


@pytest.mark.parametrize("value", ["nan", "-inf", "-5", "soon", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_a_meaningless_retry_after_is_never_negative_or_nan(value: str) -> None:
    for header in ("retry-after", "retry-after-ms"):
        seconds = parse_retry_after({header: value})
        assert seconds is None or seconds == 0.0, (header, value, seconds)


def test_a_retry_after_in_range_is_kept() -> None:
    assert parse_retry_after({"retry-after": "12"}) == 12.0
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "nan", "retry-after": "3"}) == 3.0  # the next header is used


@pytest.mark.parametrize("value", ["inf", "99999999999"])
async def test_the_cool_down_is_bounded_by_max_retry_after_s(
    seed_config: dict[str, Any], rate_limited: str, value: str,
) -> None:
    config = only_rate_limited(seed_config, rate_limited, value, max_retry_after_s=7)
    async with LLMRouter(config=config, ledger=False) as router:
        with pytest.raises(AllProvidersFailed) as caught:
            await router.generate("hi", max_tokens=5)
    assert caught.value.retry_after_s == 7
    assert {a.kind for a in caught.value.attempts} == {"rate_limited"}


@pytest.mark.parametrize("value", ["inf", "1e400", "99999999999"])
def test_the_gateway_answers_503_with_a_finite_retry_after(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],  # noqa: F811
    rate_limited: str, value: str,
) -> None:
    gw = gateway_factory(only_rate_limited(seed_config, rate_limited, value))
    resp = httpx.post(gw.base_url + "/v1/chat/completions", timeout=10,
                      json={"model": "balanced", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "all_providers_failed"
    assert 1 <= int(resp.headers["retry-after"]) <= DEFAULT_MAX_RETRY_AFTER_S
    assert "Traceback" not in gw.log()
