"""Bad client input gets a 400 naming the field, before any provider sees it; odd headers never break a request."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llmroute.emulator import EmulatorThread
from llmroute.quality.features import prompt_text
from llmroute.tokens import count_message_tokens, message_text

from .conftest import RunningGateway, stop_gateway
from .test_errors import assert_openai_error

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HI = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"messages": HI, **fields}


def text_part(text: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "text", "text": text}]}]}


def nested(depth: int) -> dict[str, Any]:
    value: Any = "deep"
    for _ in range(depth - 1):  # the body itself is the first level
        value = [value]
    return chat(metadata=value)


CHAT_CASES = [
    (text_part(1), "messages[0].content[1].text"),
    (text_part(None), "messages[0].content[1].text"),
    (text_part(["a"]), "messages[0].content[1].text"),
    (text_part({"a": 1}), "messages[0].content[1].text"),
    ({"messages": [{"role": "user", "content": [5]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"text": "no type"}]}]}, "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": 1, "content": "hi"}]}, "messages[0]"),
    ({"messages": [HI[0], {"role": "user", "content": {"text": "x"}}]}, "messages[1].content"),
    (chat(stream=True, stream_options="yes"), "stream_options"),
    (chat(stream=True, stream_options=[1]), "stream_options"),
    (chat(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
    (chat(stream="yes"), "stream"),
    (chat(max_tokens="abc"), "max_tokens"),
    (chat(max_tokens=True), "max_tokens"),
    (chat(max_tokens=0), "max_tokens"),
    (chat(max_tokens=1.5), "max_tokens"),
    (chat(max_completion_tokens=-3), "max_completion_tokens"),
    (chat(n=0), "n"),
    (chat(n="2"), "n"),
    (chat(temperature=2.5), "temperature"),
    (chat(temperature="hot"), "temperature"),
    (chat(temperature=False), "temperature"),
    (chat(top_p=1.5), "top_p"),
    (chat(model=["balanced"]), "model"),
    (chat(model="m" * 257), "model"),
    (chat(user="u" * 257), "user"),
    (chat(user=7), "user"),
]


@pytest.mark.parametrize(("body", "param"), CHAT_CASES)
def test_malformed_chat_fields_get_400_naming_the_field(gateway: RunningGateway, body: dict[str, Any],
                                                        param: str) -> None:
    error = assert_openai_error(httpx.post(gateway.base_url + CHAT, json=body), 400, "")
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(("body", "param"), [
    ({"prompt": "hi", "stream": True, "stream_options": "yes"}, "stream_options"),
    ({"prompt": "hi", "max_tokens": "abc"}, "max_tokens"),
    ({"prompt": "hi", "temperature": -1}, "temperature"),
    ({"prompt": ["a", "b"]}, "prompt"),
])
def test_malformed_completions_fields_get_400(gateway: RunningGateway, body: dict[str, Any], param: str) -> None:
    error = assert_openai_error(httpx.post(gateway.base_url + COMPLETIONS, json=body), 400, "")
    assert error["param"] == param


def test_valid_optional_fields_pass(gateway: RunningGateway) -> None:
    """What the checks allow: nulls mean the default, image parts carry no text, limits are inclusive."""
    body = {
        "messages": [{"role": "system", "content": None},
                     {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}},
                                                  {"type": "text", "text": "hi"}]}],
        "max_tokens": None, "n": 1, "temperature": 2, "top_p": 0, "stream": False, "stream_options": None,
        "model": "m" * 256, "user": "u" * 256,
    }
    resp = httpx.post(gateway.base_url + CHAT, json=body)
    assert resp.status_code == 200, resp.text


def test_json_nested_past_the_limit_gets_400(gateway_factory: Callable[..., RunningGateway],
                                             seed_config: dict[str, Any]) -> None:
    gw = gateway_factory(seed_config)  # default limit: 64 levels
    for depth in (65, 254, 300):
        resp = httpx.post(gw.base_url + CHAT, json=nested(depth))
        assert assert_openai_error(resp, 400, "nested more than 64 levels")["code"] == "too_deeply_nested"
    assert httpx.post(gw.base_url + CHAT, json=nested(64)).status_code == 200
    seed_config["gateway"] = {"max_json_depth": 10}
    small = gateway_factory(seed_config)
    assert_openai_error(httpx.post(small.base_url + CHAT, json=nested(11)), 400, "more than 10 levels")
    assert httpx.post(small.base_url + CHAT, json=nested(10)).status_code == 200


def test_malformed_requests_never_reach_a_provider_nor_trip_its_breaker(
    gateway: RunningGateway, emus: dict[str, EmulatorThread],
) -> None:
    """Before, three ``"max_tokens": "abc"`` requests got the emulators' 500s and opened both breakers."""
    for _ in range(3):
        for body, _param in CHAT_CASES:
            resp = httpx.post(gateway.base_url + CHAT, json={"model": "cost_optimized", **body})
            assert resp.status_code == 400, resp.text
    resp = httpx.post(gateway.base_url + CHAT, json={"model": "cost_optimized", "messages": HI})
    assert resp.status_code == 200
    assert resp.headers["x-llmroute-attempts"] == "runpod:200"  # the first provider, not a fallback
    providers = httpx.get(gateway.base_url + "/router/state").json()["providers"]
    assert providers["runpod"]["breaker"]["state"] == "closed"
    assert providers["runpod"]["failures"] == providers["cerebras"]["failures"] == 0
    assert providers["runpod"]["successes"] == 1
    rejected = [line for line in httpx.get(gateway.base_url + "/metrics").text.splitlines()
                if line.startswith("llmroute_rejected_requests_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in rejected) == 3 * len(CHAT_CASES)
    assert any('code="invalid_value",status="400"' in line for line in rejected)


@pytest.mark.parametrize("value", [
    "€uro".encode(), b"bad-\xff\xfe", b"has space", b"a" * 129, b"semi;colon",
])
def test_bad_request_id_is_replaced_not_forwarded(gateway: RunningGateway, emus: dict[str, EmulatorThread],
                                                  value: bytes) -> None:
    """A request id outside latin-1, invalid UTF-8, with separators or too long: the gateway makes its own."""
    resp = httpx.post(gateway.base_url + CHAT, json={"messages": HI}, headers={"x-request-id": value})
    assert resp.status_code == 200, resp.text
    request_id = resp.headers["x-request-id"]
    assert request_id and request_id.encode() != value
    assert len(request_id) == 32 and int(request_id, 16) >= 0  # the gateway's own


def test_client_request_id_is_the_answers_and_the_ledgers(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], tmp_path: Path,
) -> None:
    seed_config["ledger"] = {"path": str(tmp_path / "ids.sqlite3")}
    gw = gateway_factory(seed_config)
    given = "req-2026.11_26~" + "a" * 100  # 115 characters of token
    resp = httpx.post(gw.base_url + CHAT, json={"messages": HI}, headers={"x-request-id": given})
    assert resp.status_code == 200 and resp.headers["x-request-id"] == given
    resp = httpx.post(gw.base_url + CHAT, json={"messages": HI}, headers={"x-request-id": "x" * 129})
    own = resp.headers["x-request-id"]
    assert stop_gateway(gw) == 0  # commits the ledger
    with sqlite3.connect(tmp_path / "ids.sqlite3") as db:
        ids = [row[0] for row in db.execute("SELECT request_id FROM requests ORDER BY id")]
    assert ids == [given, own]


def test_request_id_bound_is_a_config_key(gateway_factory: Callable[..., RunningGateway],
                                          seed_config: dict[str, Any]) -> None:
    seed_config["gateway"] = {"max_request_id_chars": 8}
    gw = gateway_factory(seed_config)
    assert httpx.post(gw.base_url + CHAT, json={"messages": HI}, headers={"x-request-id": "abcdefgh"}
                      ).headers["x-request-id"] == "abcdefgh"
    assert httpx.post(gw.base_url + CHAT, json={"messages": HI}, headers={"x-request-id": "abcdefghi"}
                      ).headers["x-request-id"] != "abcdefghi"


@pytest.mark.parametrize("value", [b"bal\xffanced", "coût".encode(), "€".encode(), b"x" * 4000])
def test_unknown_strategy_header_is_quoted_safely(gateway: RunningGateway, value: bytes) -> None:
    resp = httpx.post(gateway.base_url + CHAT, json={"messages": HI}, headers={"x-llmroute-strategy": value})
    error = assert_openai_error(resp, 400, "unknown x-llmroute-strategy")
    assert error["code"] == "unknown_strategy" and error["param"] == "x-llmroute-strategy"
    assert error["message"].isascii() and len(error["message"]) < 300


def test_invalid_utf8_in_auth_and_tags_headers(gateway_factory: Callable[..., RunningGateway],
                                               seed_config: dict[str, Any], tmp_path: Path) -> None:
    seed_config["gateway"] = {"api_keys": ["sk-good-key"]}
    seed_config["ledger"] = {"path": str(tmp_path / "tags.sqlite3")}
    gw = gateway_factory(seed_config)
    resp = httpx.post(gw.base_url + CHAT, json={"messages": HI}, headers={"Authorization": b"Bearer sk-\xff\xfe"})
    assert_openai_error(resp, 401, "invalid API key")
    resp = httpx.post(gw.base_url + CHAT, json={"messages": HI},
                      headers={"Authorization": "Bearer sk-good-key", "x-llmroute-tags": b"team=caf\xe9,ok"})
    assert resp.status_code == 200, resp.text
    assert stop_gateway(gw) == 0
    with sqlite3.connect(tmp_path / "tags.sqlite3") as db:
        (tags,) = db.execute("SELECT tags FROM requests").fetchone()
    assert "team=caf\ufffd" in tags and "ok" in tags


def test_misspelt_strategy_runs_the_default_with_a_warning(gateway: RunningGateway) -> None:
    resp = httpx.post(gateway.base_url + CHAT, json={"model": "cost_optimised", "messages": HI})
    assert resp.status_code == 200
    assert resp.headers["x-llmroute-strategy"] == "balanced"
    assert resp.headers["x-llmroute-warning"] == (
        "model 'cost_optimised' is not a strategy; did you mean 'cost_optimized'? ran 'balanced'")
    for model in ("llama3.1-8b", "gpt-4o", "cost_optimized"):  # a model name, and a strategy: no warning
        resp = httpx.post(gateway.base_url + CHAT, json={"model": model, "messages": HI})
        assert resp.status_code == 200 and "x-llmroute-warning" not in resp.headers
    assert httpx.post(gateway.base_url + CHAT, json={"model": "cost_optimized", "messages": HI}
                      ).headers["x-llmroute-strategy"] == "cost_optimized"
    # A name with characters a header cannot carry is escaped, not refused.
    resp = httpx.post(gateway.base_url + CHAT, json={"model": "balancéd\n", "messages": HI})
    assert resp.status_code == 200
    assert resp.headers["x-llmroute-warning"].startswith("model 'balanc\\xe9d\\n' is not a strategy")
    # A streamed answer says the same.
    with httpx.stream("POST", gateway.base_url + CHAT, json={"model": "cost_optimised", "messages": HI, "stream": True}
                      ) as streamed:
        assert streamed.status_code == 200 and streamed.headers["x-llmroute-strategy"] == "balanced"
        assert streamed.headers["x-llmroute-warning"].startswith("model 'cost_optimised' is not a strategy")


def test_models_retrieve_with_the_openai_client(gateway: RunningGateway) -> None:
    client = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key="unused", max_retries=0)
    model = client.models.retrieve("balanced")
    assert model.id == "balanced" and model.object == "model" and model.owned_by == "llmroute"
    assert {m.id for m in client.models.list()} >= {"balanced", "cost_optimized", "quality_aware"}
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("gpt-4o")
    assert info.value.body["code"] == "model_not_found"
    resp = httpx.get(gateway.base_url + "/v1/models/org/some-model")
    assert_openai_error(resp, 404, "'org/some-model' does not exist")
    assert_openai_error(httpx.post(gateway.base_url + "/v1/models/balanced"), 405, "use GET")
    # Any path, a line break or invalid UTF-8 in it included, gets a JSON error, quoted safely.
    error = assert_openai_error(httpx.get(gateway.base_url + "/v1/models/a%0Ab%FF"), 404, "does not exist")
    assert "'a\\nb%FF'" in error["message"]
    assert_openai_error(httpx.get(gateway.base_url + "/no%0Awhere"), 404, "no route GET '/no\\nwhere'")


def test_text_of_malformed_parts_for_library_callers() -> None:
    """The router and the quality model read content before any provider judged it."""
    content = [{"type": "text", "text": "one"}, {"type": "text", "text": 1}, {"type": "text", "text": None},
               {"type": "text", "text": ["x"]}, {"type": "image_url", "image_url": {}}, "loose", 7]
    assert message_text(content) == "one"
    assert count_message_tokens([{"role": "user", "content": content}]) == count_message_tokens(
        [{"role": "user", "content": "one"}])
    assert prompt_text([{"role": "system", "content": [{"type": "text", "text": {"a": 1}}]},
                        {"role": "user", "content": content}]) == "one"
