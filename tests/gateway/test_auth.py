"""Gateway keys: required when configured, compared in constant time, never echoed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from llmroute.gateway.auth import KeyStore, is_loopback

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
