"""The emulator over raw HTTP: endpoints, usage, streaming, and every fault."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from llmroute.emulator import FAULTS, EmulatorThread, parse_fault_rate
from llmroute.tokens import count_message_tokens, count_tokens

from .conftest import emulator

CHAT = {"model": "x", "messages": [{"role": "user", "content": "Qualify this lead: TechCorp, 500 employees, SaaS industry"}],
        "max_tokens": 100}


def post(emu: EmulatorThread, body: Any = CHAT, path: str = "/chat/completions", fault: str | None = None,
         timeout: float = 5.0) -> httpx.Response:
    headers = {"x-emulator-fault": fault} if fault else {}
    return httpx.post(emu.base_url + path, json=body, headers=headers, timeout=timeout)


def sse_events(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


def test_chat_completion_has_real_usage(emus: dict[str, EmulatorThread]) -> None:
    for name, emu in emus.items():
        resp = post(emu)
        assert resp.status_code == 200
        body = resp.json()
        text = body["choices"][0]["message"]["content"]
        assert body["usage"]["prompt_tokens"] == count_message_tokens(CHAT["messages"])
        assert body["usage"]["completion_tokens"] == count_tokens(text)
        assert 0 < body["usage"]["completion_tokens"] <= 100 + 3
        assert body["object"] == "chat.completion"
        assert body["system_fingerprint"] == f"emulated-{name}"


def test_cerebras_profile_sends_ratelimit_headers(emus: dict[str, EmulatorThread]) -> None:
    resp = post(emus["cerebras"])
    assert int(resp.headers["x-ratelimit-remaining-tokens-minute"]) > 0
    assert "x-ratelimit-reset-requests-day" in resp.headers
    assert "x-ratelimit-remaining-tokens-minute" not in post(emus["runpod"]).headers


def test_completions_and_models(emus: dict[str, EmulatorThread]) -> None:
    emu = emus["runpod"]
    resp = post(emu, {"model": "x", "prompt": "San Francisco is a", "max_tokens": 20}, path="/completions")
    body = resp.json()
    assert body["object"] == "text_completion"
    assert body["usage"]["completion_tokens"] == count_tokens(body["choices"][0]["text"])
    models = httpx.get(emu.base_url + "/models").json()
    assert models["data"][0]["id"] == "meta-llama/Meta-Llama-3.1-8B-Instruct"


def test_streaming_ends_with_done_and_usage_on_request(emus: dict[str, EmulatorThread]) -> None:
    emu = emus["cerebras"]
    resp = post(emu, {**CHAT, "stream": True, "stream_options": {"include_usage": True}})
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["completion_tokens"] == count_tokens(text)
    plain = sse_events(post(emu, {**CHAT, "stream": True}).text)
    assert all("usage" not in json.loads(e) for e in plain[:-1])


@pytest.mark.parametrize(("fault", "status"), [("429", 429), ("500", 500), ("502", 502), ("503", 503), ("504", 504),
                                               ("400", 400), ("401", 401), ("404", 404), ("422", 422),
                                               ("context_length", 400)])
def test_status_faults(emus: dict[str, EmulatorThread], fault: str, status: int) -> None:
    resp = post(emus["cerebras"], fault=fault)
    assert resp.status_code == status
    assert isinstance(resp.json()["error"]["code"], str)  # OpenAI style: string codes
    vllm = post(emus["runpod"], fault=fault)
    assert vllm.status_code == status
    assert vllm.json()["object"] == "error" and vllm.json()["code"] == status  # vLLM style: integer codes
    if fault in ("429", "503"):
        assert "retry-after" in resp.headers


def test_error_in_200_body_and_malformed(emus: dict[str, EmulatorThread]) -> None:
    resp = post(emus["runpod"], fault="error_in_body")
    assert resp.status_code == 200 and resp.json()["object"] == "error"
    resp = post(emus["runpod"], fault="malformed")
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(resp.text)


def test_reset_and_hang(emus: dict[str, EmulatorThread]) -> None:
    with pytest.raises(httpx.TransportError):
        post(emus["cerebras"], fault="reset")
    with pytest.raises(httpx.ReadTimeout):
        post(emus["cerebras"], fault="hang", timeout=0.3)


def test_stream_cuts(emus: dict[str, EmulatorThread]) -> None:
    body = {**CHAT, "stream": True}
    with httpx.stream("POST", emus["cerebras"].base_url + "/chat/completions", json=body,
                      headers={"x-emulator-fault": "stream_cut"}) as resp:
        received: list[str] = []
        with pytest.raises(httpx.TransportError):
            for line in resp.iter_lines():
                received.append(line)
    events = [line for line in received if line.startswith("data: ")]
    assert events and "data: [DONE]" not in events  # some chunks, then the cut
    with httpx.stream("POST", emus["cerebras"].base_url + "/chat/completions", json=body,
                      headers={"x-emulator-fault": "stream_cut_first"}) as resp:
        with pytest.raises(httpx.TransportError):
            lines = list(resp.iter_lines())
            assert not any(line.startswith("data: ") for line in lines)


def test_fault_rates_and_control_endpoint(emus: dict[str, EmulatorThread]) -> None:
    emu = emus["runpod"]
    resp = httpx.post(emu.base_url.removesuffix("/v1") + "/_emulator/faults", json={"faults": {"503": 1.0}, "times": 2})
    assert resp.status_code == 200
    assert [post(emu).status_code for _ in range(3)] == [503, 503, 200]
    emu.set_faults({"500": 0.5})
    statuses = [post(emu).status_code for _ in range(200)]
    assert 60 < statuses.count(500) < 140
    assert set(statuses) == {200, 500}
    bad = httpx.post(emu.base_url.removesuffix("/v1") + "/_emulator/faults", json={"faults": {"melt": 1}})
    assert bad.status_code == 400 and "unknown fault" in bad.json()["message"]


def test_bad_requests_get_openai_errors(emus: dict[str, EmulatorThread]) -> None:
    emu = emus["cerebras"]
    resp = httpx.post(emu.base_url + "/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "not valid JSON" in resp.json()["error"]["message"]
    resp = post(emu, {"model": "x"})
    assert resp.status_code == 400 and resp.json()["error"]["param"] == "messages"
    assert post(emu, fault="no-such-fault").status_code == 400


def test_real_context_window_is_enforced(emus: dict[str, EmulatorThread]) -> None:
    long_prompt = "word " * 9000
    resp = post(emus["cerebras"], {"model": "x", "messages": [{"role": "user", "content": long_prompt}]})
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "context_length_exceeded"


def test_api_key_required_when_set() -> None:
    with emulator("cerebras", api_key="emu-key") as emu:
        assert post(emu).status_code == 401
        ok = httpx.post(emu.base_url + "/chat/completions", json=CHAT, headers={"authorization": "Bearer emu-key"})
        assert ok.status_code == 200


def test_latency_follows_profile_and_speed() -> None:
    # 945 ms median at 100x speed is about 9.5 ms; at speed inf there is no wait at all.
    with emulator("cerebras", speed=100.0) as emu:
        elapsed = [post(emu).elapsed.total_seconds() for _ in range(5)]
    assert min(elapsed) >= 0.005


def test_fault_spec_parsing() -> None:
    assert parse_fault_rate("503:0.25") == ("503", 0.25)
    assert parse_fault_rate("hang") == ("hang", 1.0)
    for bad in ("503:2", "503:x", "explode:0.1"):
        with pytest.raises(ValueError):
            parse_fault_rate(bad)
    assert {"429", "500", "503", "hang", "reset", "error_in_body", "malformed", "stream_cut"} <= set(FAULTS)
