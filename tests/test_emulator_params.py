"""The emulator refuses parameters of the wrong type with a 400, in its provider's error shape, as a real
provider does: never a 500, which would count against the provider's breaker."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from llmroute.emulator import EmulatorThread

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("extra", "param"), [
    ({"max_tokens": "abc"}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"n": "2"}, "n"),
    ({"temperature": "hot"}, "temperature"),
    ({"temperature": 7}, "temperature"),
    ({"top_p": [1]}, "top_p"),
    ({"stream": "yes"}, "stream"),
    ({"stream": True, "stream_options": "usage"}, "stream_options"),
    ({"messages": [{"role": 1, "content": "hi"}]}, "messages[0]"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]}, "messages[0].content[0]"),
])
def test_wrong_types_get_a_400_in_the_providers_shape(emus: dict[str, EmulatorThread], extra: dict[str, Any],
                                                       param: str) -> None:
    for name, emu in emus.items():
        resp = httpx.post(emu.base_url + "/chat/completions", json={"model": "m", "messages": MESSAGES, **extra})
        assert resp.status_code == 400, resp.text
        body = resp.json()
        if name == "runpod":  # vLLM's flat error with an integer code
            assert body["object"] == "error" and body["code"] == 400 and body["param"] == param
        else:
            assert body["error"]["param"] == param and body["error"]["type"] == "invalid_request_error"


def test_null_parameters_are_defaults(emus: dict[str, EmulatorThread]) -> None:
    body = {"model": "m", "messages": MESSAGES, "max_tokens": None, "temperature": None, "n": None, "stream": None}
    assert httpx.post(emus["runpod"].base_url + "/chat/completions", json=body).status_code == 200
