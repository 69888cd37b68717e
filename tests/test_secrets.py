"""Every configured secret stays out of logs, error bodies and the ledger, whatever an upstream echoes.

A throwaway upstream stands in for a provider that puts the credentials it received (and the key from its
URL) into its error messages: as a JSON error, as plain text longer than a message is kept, and inside an
HTTP 200 body.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmroute.config import ProviderConfig
from llmroute.config.loading import redact_url
from llmroute.providers.errors import MAX_MESSAGE_CHARS, Classifier
from llmroute.providers.openai_compat import configured_secrets

from .gateway.conftest import RunningGateway, gateway_factory  # noqa: F401
from .providers.upstreams import QuietHandler, threaded_upstream

API_KEY = "sk-api-key-0123456789abcdef"
HEADER_KEY = "hk-header-key-fedcba9876543210"
URL_KEY = "uk-url-query-key-5555aaaa7777"
SECRETS = (API_KEY, HEADER_KEY, URL_KEY)


class EchoingUpstream(QuietHandler):
    """Answers per the first path segment, always quoting the credentials it was sent."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        echoed = f"auth={self.headers.get('authorization')} x-api-key={self.headers.get('x-api-key')} url-key={URL_KEY}"
        mode = self.path.split("/")[1]
        if mode == "plain":  # the key straddles where a message used to be cut (200 characters)
            status, ctype, body = 500, "text/plain", ("x" * 190 + echoed).encode()
        elif mode == "body200":
            status, ctype, body = 200, "application/json", json.dumps({"error": {"message": echoed}}).encode()
        else:
            status = 400 if mode == "json400" else 500
            error = {"message": f"bad credentials {echoed}", "type": "invalid_request_error",
                     "param": f"key {HEADER_KEY}", "code": "bad_key"}
            ctype, body = "application/json", json.dumps({"error": error}).encode()
        self.answer(status, body, ctype)


@pytest.fixture
def echoing_upstream() -> Iterator[str]:
    with threaded_upstream(EchoingUpstream) as host:
        yield host


def echo_provider(host: str, mode: str, price: float) -> dict[str, Any]:
    return {"base_url": f"http://user:{URL_KEY}@{host}/{mode}/v1?key={URL_KEY}", "model": "m", "api_key": API_KEY,
            "headers": {"x-api-key": HEADER_KEY}, "price_per_m": {"input": price, "output": price}, "timeout_s": 5}


def test_no_secret_reaches_a_log_an_error_or_the_ledger(
    gateway_factory: Callable[..., RunningGateway], echoing_upstream: str, tmp_path: Path,  # noqa: F811
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    config = {
        # cost_optimized walks them cheapest first: three echoing failures, then a 400 that goes back to the client
        "providers": {mode: echo_provider(echoing_upstream, mode, price)
                      for mode, price in [("json500", 0.1), ("plain", 0.2), ("body200", 0.3), ("json400", 0.4)]},
        "strategy": "cost_optimized", "retry_rounds": 0, "ledger": {"path": str(ledger)},
    }
    gw = gateway_factory(config, "--log-level", "debug")
    resp = httpx.post(gw.base_url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 400
    assert resp.headers["x-llmroute-attempts"] == "json500:500,plain:500,body200:error_in_body,json400:400"
    error = resp.json()["error"]
    assert "[redacted]" in error["message"] and "[redacted]" in error["param"]
    gw.process.terminate()
    gw.process.wait(timeout=20)
    db = sqlite3.connect(ledger)
    stored = "\n".join(repr(row) for row in db.execute("SELECT * FROM requests"))
    db.close()
    log = gw.log()
    assert "[redacted]" in stored and "[redacted]" in log  # the echoed text did come through, scrubbed
    for secret in SECRETS:
        for where, text in (("response", resp.text), ("ledger", stored), ("log", log)):
            for piece in (secret, secret[:12], secret[-12:]):  # no part of it, either side of a cut
                assert piece not in text, f"{piece!r} leaked into the {where}"


def test_a_secret_across_the_cut_is_scrubbed_whole() -> None:
    classify = Classifier("p", [API_KEY])
    for offset in range(MAX_MESSAGE_CHARS - len(API_KEY), MAX_MESSAGE_CHARS + 2):
        message = classify.scrub("x" * offset + API_KEY + "y" * 50)
        assert API_KEY[:4] not in message and len(message) <= MAX_MESSAGE_CHARS + 1
    plain = classify.from_status(500, ("z" * 190 + API_KEY).encode(), {})
    assert "[redacted]" in plain.message and API_KEY[:8] not in plain.message


def test_configured_secrets_cover_headers_and_the_url() -> None:
    config = ProviderConfig.model_validate(echo_provider("example.com", "v1", 1.0)
                                           | {"headers": {"x-api-key": HEADER_KEY, "authorization": "Bearer bt-1234567",
                                                          "content-type": "application/json"}})
    secrets = set(configured_secrets(config))
    assert {API_KEY, HEADER_KEY, URL_KEY, "bt-1234567"} <= secrets and "application/json" not in secrets
    shown = redact_url(config.base_url, every_query_value=True)  # as the provider's repr shows it
    assert URL_KEY not in shown and "example.com" in shown


def test_a_secret_across_the_scrubbing_window_leaves_no_part() -> None:
    # Replacements shorten the text: a secret cut at the window's edge must not slide into what is kept.
    short, long = "sk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "zz-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
    classify = Classifier("p", [short, long])
    for start in range(MAX_MESSAGE_CHARS - 20, MAX_MESSAGE_CHARS + len(long)):
        text = (short + " ") * 6 + "x" * (start - 6 * (len(short) + 1)) + long + "y" * 100
        message = classify.scrub(text)
        assert "zz-bbb" not in message and "sk-aaa" not in message, start


RAW_QUERY_KEY = "QK+SECRET/VAL=9"
"""A key as it goes into the URL: decoding the query would turn its "+" into a space."""


class TargetEchoingUpstream(QuietHandler):
    """A 500 quoting the request target exactly as received, query included."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.answer(500, json.dumps({"error": {"message": f"no route for {self.path}"}}).encode())


def test_configured_secrets_include_query_values_as_sent() -> None:
    config = ProviderConfig.model_validate({"base_url": f"https://example.com/v1?a=1&key={RAW_QUERY_KEY}&flag",
                                            "model": "m", "price_per_m": {"input": 1, "output": 1}})
    assert RAW_QUERY_KEY in set(configured_secrets(config))
    scrubbed = Classifier("p", configured_secrets(config)).scrub(f"bad key {RAW_QUERY_KEY} in /v1?key={RAW_QUERY_KEY}")
    assert "SECRET" not in scrubbed and scrubbed.count("[redacted]") == 2


def test_a_query_key_from_the_environment_is_scrubbed_as_sent(
    gateway_factory: Callable[..., RunningGateway], tmp_path: Path,  # noqa: F811
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    with threaded_upstream(TargetEchoingUpstream) as host:
        config = {"providers": {"echo": {"base_url": f"http://{host}/v1?api-version=2024&key=${{QUERY_KEY}}",
                                         "model": "m", "price_per_m": {"input": 1, "output": 1}}},
                  "retry_rounds": 0, "ledger": {"path": str(ledger)}}
        gw = gateway_factory(config, "--log-level", "debug", env={"QUERY_KEY": RAW_QUERY_KEY})
        resp = httpx.post(gw.base_url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        gw.process.terminate()
        gw.process.wait(timeout=20)
    db = sqlite3.connect(ledger)
    stored = "\n".join(repr(row) for row in db.execute("SELECT * FROM requests"))
    db.close()
    assert resp.status_code == 502 and "[redacted]" in stored  # the upstream's echo came through, scrubbed
    for where, text in (("response", resp.text), ("ledger", stored), ("log", gw.log())):
        assert "SECRET" not in text, f"the query key leaked into the {where}"
