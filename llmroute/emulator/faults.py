"""Which fault, if any, an emulated request suffers.

A fault is chosen per request: the ``x-emulator-fault`` header wins; else a
fault switched on through ``POST /_emulator/faults`` (all requests, or a rate);
else the rates given on the command line (``--fault 503:0.1``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

FAULTS: dict[str, str] = {
    "429": "HTTP 429 with Retry-After",
    "500": "HTTP 500",
    "502": "HTTP 502",
    "503": "HTTP 503 with Retry-After",
    "504": "HTTP 504",
    "hang": "accept the request and never answer (client timeout)",
    "reset": "reset the connection (TCP RST) before answering",
    "error_in_body": "HTTP 200 whose body is an error object (RunPod worker style)",
    "malformed": "HTTP 200 with a truncated JSON body",
    "bad_choices": "HTTP 200 whose choices are not objects (choices: [5]); streams: such a first chunk",
    "bad_message": "HTTP 200 whose message is a string; streams: a delta that is a string",
    "bad_usage": "usage.prompt_tokens is a string; streams: on every chunk (vLLM's continuous usage), the first too",
    "negative_usage": "usage.completion_tokens is negative; streams: in the final usage chunk",
    "overflow_usage": "usage.completion_tokens is 1e308; streams: in the final usage chunk",
    "huge_body": "HTTP 200 whose JSON body never ends (up to 2 GiB); streams: one SSE line that never ends",
    "huge_sse": "an endless SSE answer (up to 2 GiB) to a request that did not ask for a stream; streams: as huge_body",
    "204": "HTTP 204 with no body",
    "302": "HTTP 302 redirect elsewhere",
    "stream_cut": "streams stop half-way, without data: [DONE] (non-streams: reset)",
    "stream_cut_first": "streams stop before their first chunk",
    "context_length": "HTTP 400: prompt longer than the context window",
    "400": "HTTP 400 invalid request",
    "401": "HTTP 401 invalid API key",
    "404": "HTTP 404 model not found",
    "422": "HTTP 422 unprocessable request",
}

HEADER = "x-emulator-fault"

BAD_USAGE: dict[str, tuple[str, object]] = {
    "bad_usage": ("prompt_tokens", "x"),
    "negative_usage": ("completion_tokens", -5),
    "overflow_usage": ("completion_tokens", 1e308),
}
"""Usage faults: the field they spoil and the value they put there."""


def check_fault(kind: str) -> str:
    if kind not in FAULTS:
        raise ValueError(f"unknown fault '{kind}' (known: {', '.join(FAULTS)})")
    return kind


def parse_fault_rate(spec: str) -> tuple[str, float]:
    """'503:0.1' -> ('503', 0.1); '503' alone means every request."""
    kind, _, rate_text = spec.partition(":")
    try:
        rate = float(rate_text) if rate_text else 1.0
    except ValueError:
        raise ValueError(f"fault rate in '{spec}' is not a number") from None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fault rate in '{spec}' must be between 0 and 1")
    return check_fault(kind), rate


@dataclass
class FaultPlan:
    rates: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    def __post_init__(self) -> None:
        for kind in self.rates:
            check_fault(kind)
        self._rng = random.Random(self.seed)
        self._left: int | None = None

    def set(self, rates: dict[str, float], times: int | None = None) -> None:
        """Switch to ``rates``; with ``times``, only for the next that many requests."""
        for kind in rates:
            check_fault(kind)
        self.rates = dict(rates)
        self._left = times

    def choose(self, header: str | None) -> str | None:
        if header:
            return check_fault(header)
        if self._left is not None:
            if self._left <= 0:
                self.rates, self._left = {}, None
                return None
            self._left -= 1
        for kind, rate in self.rates.items():
            if rate >= 1.0 or (rate > 0 and self._rng.random() < rate):
                return kind
        return None
