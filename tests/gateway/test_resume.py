"""Through the gateway, a stream cut after tokens ends cleanly: an error event and [DONE], or resumed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson

from llmroute.emulator import EmulatorThread

from ..test_resume import cost_first
from .conftest import RunningGateway


def sse_events(text: str) -> list[str]:
    return [line[6:] for line in text.splitlines() if line.startswith("data: ")]


def test_gateway_streams_end_cleanly_either_way(gateway_factory: Callable[..., RunningGateway],
                                                 seed_config: dict[str, Any], emus: dict[str, EmulatorThread]) -> None:
    gw = gateway_factory(cost_first(seed_config))
    emus["runpod"].set_faults({"stream_cut": 1.0})
    body = {"stream": True, "max_tokens": 120, "messages": [{"role": "user", "content": "Summarise this contract."}]}
    plain = httpx.post(gw.base_url + "/v1/chat/completions", json=body, timeout=30)
    events = sse_events(plain.text)
    assert plain.status_code == 200 and events[-1] == "[DONE]"  # never a silent end
    error = orjson.loads(events[-2])["error"]
    assert error["code"] == "stream_interrupted" and error["type"] == "upstream_error"
    resumed = httpx.post(gw.base_url + "/v1/chat/completions", json=body, headers={"x-llmroute-resume": "true"},
                         timeout=30)
    events = sse_events(resumed.text)
    assert events[-1] == "[DONE]" and not any('"error"' in e for e in events)
    text = "".join((c.get("delta") or {}).get("content") or ""
                   for e in events[:-1] for c in orjson.loads(e).get("choices") or ())
    assert len(text) > 20
