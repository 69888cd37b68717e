"""Bad requests and failed providers get OpenAI-shaped errors with the right status; nothing hangs."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from llmroute.emulator import EmulatorThread

from .conftest import RunningGateway

CHAT = "/v1/chat/completions"


def assert_openai_error(resp: httpx.Response, status: int, fragment: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert fragment in error["message"]
    return error


@pytest.mark.parametrize(("body", "fragment", "param"), [
    (b"{not json", "not valid JSON", None),
    (b"", "body is empty", None),
    (b"[1, 2]", "must be a JSON object", None),
    (b'{"model": "balanced"}', "'messages' is required", "messages"),
    (b'{"messages": []}', "'messages' is required", "messages"),
    (b'{"messages": ["hi"]}', "messages[0] must be an object", "messages[0]"),
])
def test_malformed_requests_get_400(gateway: RunningGateway, body: bytes, fragment: str, param: str | None) -> None:
    resp = httpx.post(gateway.base_url + CHAT, content=body, headers={"content-type": "application/json"})
    error = assert_openai_error(resp, 400, fragment)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_completions_need_a_prompt(gateway: RunningGateway) -> None:
    resp = httpx.post(gateway.base_url + "/v1/completions", json={"model": "balanced"})
    assert_openai_error(resp, 400, "'prompt' is required")


def test_body_over_limit_gets_413(gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any]) -> None:
    seed_config["gateway"] = {"max_body_bytes": 2048}
    gw = gateway_factory(seed_config)
    big = {"messages": [{"role": "user", "content": "x" * 4096}]}
    assert_openai_error(httpx.post(gw.base_url + CHAT, json=big), 413, "limit")
    # Chunked upload without Content-Length: the limit still holds.
    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"messages": [{"role": "user", "content": "'
        yield b"y" * 4096
        yield b'"}]}'
    assert_openai_error(httpx.post(gw.base_url + CHAT, content=chunks()), 413, "limit")
    assert httpx.post(gw.base_url + CHAT, json={"messages": [{"role": "user", "content": "ok"}]}).status_code == 200


def test_unknown_route_and_wrong_method(gateway: RunningGateway) -> None:
    assert_openai_error(httpx.get(gateway.base_url + "/v2/nothing"), 404, "no route")
    resp = httpx.get(gateway.base_url + CHAT)
    assert_openai_error(resp, 405, "use POST")
    assert resp.headers["allow"] == "POST"


def test_provider_client_error_is_passed_back(gateway: RunningGateway, emus: dict[str, EmulatorThread]) -> None:
    emus["runpod"].set_faults({"422": 1.0})
    resp = httpx.post(gateway.base_url + CHAT, json={"model": "cost_optimized", "messages": [{"role": "user", "content": "hi"}]})
    error = assert_openai_error(resp, 422, "unprocessable")
    assert error["code"] == 422  # the emulated vLLM's integer code, kept as it sent it
    assert resp.headers["x-llmroute-attempts"] == "runpod:422"  # cerebras was not tried


def test_all_providers_failed_gets_503_with_retry_after(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
) -> None:
    secret = "sk-never-show-this-0042"
    for p in seed_config["providers"].values():
        p["api_key"] = secret
    seed_config["retry_rounds"] = 0
    gw = gateway_factory(seed_config)
    for emu in emus.values():
        emu.set_faults({"503": 1.0})
    resp = httpx.post(gw.base_url + CHAT, json={"messages": [{"role": "user", "content": "hi"}]})
    error = assert_openai_error(resp, 503, "all providers failed")
    assert "runpod: server_error 503" in error["message"] and "cerebras: server_error 503" in error["message"]
    assert int(resp.headers["retry-after"]) >= 1
    assert error["code"] == "all_providers_failed"
    for emu in emus.values():
        emu.set_faults({"500": 1.0})
    resp = httpx.post(gw.base_url + CHAT, json={"messages": [{"role": "user", "content": "hi"}]})
    assert_openai_error(resp, 502, "all providers failed")
    assert secret not in resp.text and secret not in gw.log()


def test_nothing_hangs_past_the_deadline(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
) -> None:
    seed_config["deadline_s"] = 1.0
    gw = gateway_factory(seed_config)
    for emu in emus.values():
        emu.set_faults({"hang": 1.0})
    started = time.monotonic()
    resp = httpx.post(gw.base_url + CHAT, json={"messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert time.monotonic() - started < 10
    error = assert_openai_error(resp, 503, "deadline")
    assert error["code"] == "deadline_exceeded"
    started = time.monotonic()
    resp = httpx.post(gw.base_url + CHAT, json={"messages": [{"role": "user", "content": "hi"}], "stream": True}, timeout=30)
    assert time.monotonic() - started < 10
    assert_openai_error(resp, 503, "deadline")


def test_stream_failing_after_first_chunk_ends_with_an_error_event(
    gateway: RunningGateway, emus: dict[str, EmulatorThread],
) -> None:
    emus["runpod"].set_faults({"stream_cut": 1.0})
    with httpx.stream("POST", gateway.base_url + CHAT, json={"model": "cost_optimized", "stream": True,
                                                             "messages": [{"role": "user", "content": "hi"}]}) as resp:
        assert resp.status_code == 200
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert len(lines) > 2
    assert '"stream_interrupted"' in lines[-2] and '"error"' in lines[-2]
    assert lines[-1] == "data: [DONE]"  # closed cleanly after the error event, never a silent end


def test_clients_leaving_mid_stream_leave_no_traceback(gateway: RunningGateway) -> None:
    """A client that hangs up while its answer streams is not an internal error: no traceback per request."""
    import socket

    body = b'{"model": "cost_optimized", "stream": true, "messages": [{"role": "user", "content": "hi"}]}'
    host, port = gateway.base_url.removeprefix("http://").rsplit(":", 1)
    for _ in range(20):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
    resp = httpx.post(gateway.base_url + CHAT,
                      json={"model": "cost_optimized", "messages": [{"role": "user", "content": "hi"}]})
    assert resp.status_code == 200 and resp.headers["x-llmroute-attempts"] == "runpod:200"
    assert "Traceback" not in gateway.log() and "unexpected error" not in gateway.log()
