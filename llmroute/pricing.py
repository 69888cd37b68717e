"""Cost arithmetic: per request from ``usage``, and money and token formatting."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from .config import Price, ProviderConfig

_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMbBtT]?)\s*$")
_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "b": 1_000_000_000, "t": 1_000_000_000_000}


def cost_usd(price: Price, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0) -> float:
    """US dollars for one request.

    Cached prompt tokens are priced at ``cached_input`` when the provider reports
    them and a price is set; otherwise they cost the same as other input tokens.
    """
    cached = min(cached_prompt_tokens, prompt_tokens) if price.cached_input is not None else 0
    return (
        (prompt_tokens - cached) * price.input
        + cached * (price.cached_input or 0.0)
        + completion_tokens * price.output
    ) / 1_000_000


class BusyClock:
    """Shares a self-hosted worker's busy time among the requests in flight on it.

    While k requests are in flight, each accrues 1/k of the elapsed time, so the
    shares add up to the time the worker was busy (the union of the requests'
    intervals), which is what a per-second bill charges. ``begin`` returns a
    mark; ``end(mark)`` returns that request's share in seconds. O(1) each.
    """

    def __init__(self) -> None:
        self._in_flight = 0
        self._last = time.monotonic()
        self._shared_s = 0.0
        self.busy_s = 0.0

    def _advance(self) -> None:
        t = time.monotonic()
        if self._in_flight:
            elapsed = t - self._last
            self._shared_s += elapsed / self._in_flight
            self.busy_s += elapsed
        self._last = t

    def begin(self) -> float:
        self._advance()
        self._in_flight += 1
        return self._shared_s

    def end(self, mark: float) -> float:
        self._advance()
        self._in_flight = max(0, self._in_flight - 1)
        return self._shared_s - mark


class Pricer:
    """Prices one provider's attempts: from tokens (``price_per_m``) or worker seconds (``price_per_gpu_second``)."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.basis = "gpu_seconds" if config.gpu_priced else "tokens"
        self._clock = BusyClock() if config.gpu_priced else None
        self._usd_per_busy_s = (config.price_per_gpu_second or 0.0) / (1 - config.idle_share)

    def begin(self) -> float:
        return self._clock.begin() if self._clock is not None else 0.0

    def end(self, mark: float, prompt_tokens: int = 0, completion_tokens: int = 0, cached_prompt_tokens: int = 0) -> float:
        """The attempt's cost in US$. Call exactly once per ``begin``, whether the attempt succeeded or not."""
        if self._clock is not None:
            return self._clock.end(mark) * self._usd_per_busy_s
        assert self.config.price_per_m is not None
        return cost_usd(self.config.price_per_m, prompt_tokens, completion_tokens, cached_prompt_tokens)


MAX_USAGE_TOKENS = 1_000_000_000
"""No request reports more tokens than this; a larger count is a broken upstream, not a bill."""


class InvalidUsage(ValueError):
    """A ``usage`` object whose counts are not non-negative integers within ``MAX_USAGE_TOKENS``."""


def usage_tokens(usage: Any) -> tuple[int, int, int]:
    """(prompt, completion, cached prompt) tokens from an OpenAI ``usage`` object (None: zeros).

    Raises ``InvalidUsage`` for anything else, so a string, a bool, a negative count or 1e308 never
    reaches a price, a metric or a ledger row.
    """
    if usage is None:
        return 0, 0, 0
    if not isinstance(usage, Mapping):
        raise InvalidUsage(f"usage is a {type(usage).__name__}, not an object")
    details = usage.get("prompt_tokens_details")
    if details is not None and not isinstance(details, Mapping):
        raise InvalidUsage(f"usage.prompt_tokens_details is a {type(details).__name__}, not an object")
    return (
        _token_count(usage, "prompt_tokens"),
        _token_count(usage, "completion_tokens"),
        _token_count(details, "cached_tokens") if details else 0,
    )


def _token_count(usage: Mapping[str, Any], key: str) -> int:
    value = usage.get(key)
    if value is None:
        return 0
    if type(value) is float and value.is_integer():  # 12.0: an integer in a float's clothing
        value = int(value)
    if type(value) is not int or not 0 <= value <= MAX_USAGE_TOKENS:
        raise InvalidUsage(f"usage.{key} is {str(value)[:40]!r}, not a token count")
    return value


def per_million(cost: float, tokens: int) -> float:
    """Blended US dollars per one million tokens."""
    return cost * 1_000_000 / tokens if tokens else 0.0


def savings_pct(baseline_usd: float, cost_usd: float) -> float:
    """How much cheaper than the baseline, in percent (0 when the baseline cost nothing)."""
    return 100 * (baseline_usd - cost_usd) / baseline_usd if baseline_usd else 0.0


def parse_token_amount(text: str) -> int:
    """'10M' -> 10_000_000; accepts k, M, B, T (any case), decimals and plain numbers."""
    match = _AMOUNT.match(str(text).replace(",", "").replace("_", ""))
    if not match:
        raise ValueError(f"'{text}' is not a token amount; use a number with an optional k, M, B or T suffix, e.g. 10M")
    value = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    if value <= 0:
        raise ValueError(f"'{text}' must be greater than zero")
    return round(value)


def format_usd(amount: float) -> str:
    """$1,000 for whole dollars, $0.36 for cents, more digits below a cent; -$0.02 below zero."""
    if amount < 0 and round(amount, 6) != 0:
        return "-" + format_usd(-amount)
    if abs(amount) < 5e-7:
        return "$0"
    rounded = round(amount, 2)
    if abs(amount) >= 1 or (rounded != 0 and abs(amount - rounded) < 1e-9):
        text = f"{rounded:,.2f}"
        return "$" + (text[:-3] if text.endswith(".00") else text)
    if amount == 0:
        return "$0"
    return f"${amount:.6f}".rstrip("0")


def format_price_per_m(price: float) -> str:
    """$0.036, $0.1, $2.5: a per-1M price with no trailing zeros."""
    text = f"{price:.6f}".rstrip("0").rstrip(".")
    return f"${text}"
