"""Rate-limit awareness: read a provider's ``x-ratelimit-*`` headers and route away before it answers 429.

Cerebras sends ``x-ratelimit-remaining-tokens-minute`` and ``x-ratelimit-reset-tokens-minute``
(seconds, ``"59.5"``); OpenAI sends ``x-ratelimit-remaining-tokens`` and
``x-ratelimit-reset-tokens`` (``"1m30s"``, ``"6ms"``). Cerebras charges a request's
estimated prompt tokens plus its ``max_completion_tokens`` against the token bucket, so
that is what a request is checked against; each request sent is taken off the local
estimate at once, so concurrent requests do not all count the same headroom.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset_s(value: str) -> float | None:
    """Seconds until a bucket refills: ``"12.5"``, ``"1m30s"``, ``"6m0s"``, ``"20ms"``; None if unreadable."""
    text = value.strip().lower()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


@dataclass(slots=True)
class Bucket:
    remaining: float
    resets_at: float
    """``time.monotonic()`` when the provider said the bucket refills."""


@dataclass(slots=True)
class RateLimitWindow:
    """What one provider said about its limits, minus what was sent since."""

    tokens: list[Bucket] = field(default_factory=list)
    requests: list[Bucket] = field(default_factory=list)

    def update(self, headers: Mapping[str, str], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        tokens: list[Bucket] = []
        requests: list[Bucket] = []
        for name, value in headers.items():
            if not name.startswith("x-ratelimit-remaining-"):
                continue
            suffix = name[len("x-ratelimit-remaining-"):]  # "tokens-minute", "requests", ...
            reset = parse_reset_s(headers.get(f"x-ratelimit-reset-{suffix}", ""))
            try:
                remaining = float(value)
            except ValueError:
                continue
            bucket = Bucket(remaining, now + (reset if reset is not None else 60.0))
            (tokens if suffix.startswith("tokens") else requests).append(bucket)
        if tokens or requests:
            self.tokens, self.requests = tokens, requests

    def headroom(self, tokens_needed: int, now: float | None = None) -> bool:
        """False when a bucket that has not refilled yet cannot take this request."""
        now = time.monotonic() if now is None else now
        if any(b.remaining < tokens_needed and now < b.resets_at for b in self.tokens):
            return False
        return not any(b.remaining < 1 and now < b.resets_at for b in self.requests)

    def spend(self, tokens: int) -> None:
        for bucket in self.tokens:
            bucket.remaining -= tokens
        for bucket in self.requests:
            bucket.remaining -= 1
