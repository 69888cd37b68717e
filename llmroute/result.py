"""What a routed request returns: the answer, what it cost, and what happened on the way."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

def new_request_id() -> str:
    """128 random bits as hex; ids need to be unique, not secret, so no system call per request."""
    return random.randbytes(16).hex()


def request_headers(extra_headers: Mapping[str, str] | None) -> tuple[str, dict[str, str]]:
    """The request's id and the headers sent upstream: a caller's ``x-request-id`` (any case) is kept, so the
    caller, the providers and the ledger all see one id; otherwise a new one."""
    if not extra_headers:  # the usual case: nothing to look through
        request_id = new_request_id()
        return request_id, {"x-request-id": request_id}
    headers = dict(extra_headers)
    given = next((k for k in headers if k.lower() == "x-request-id"), None)
    request_id = headers.pop(given) if given is not None else ""
    request_id = request_id or new_request_id()
    headers["x-request-id"] = request_id
    return request_id, headers


# The seed returned a dict; these keys keep its callers working.
_SEED_KEYS = {"result": "text"}


@dataclass(slots=True)
class Attempt:
    """One call to one provider inside a request's cascade."""

    provider: str
    model: str
    ok: bool
    latency_ms: float
    status: int | None = None
    kind: str = "ok"
    error: str | None = None
    retry_after_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    """What this attempt was billed: tokens it produced, or worker time on a GPU-second provider."""
    cost_basis: str = "tokens"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class RouteResult:
    """A successful routed request.

    ``latency_ms`` is measured around the whole cascade, as the caller saw it.
    ``cost_usd`` is computed from the provider's reported ``usage`` and its
    configured prices; ``cost_per_m`` is that cost per one million tokens (the
    provider's price when input and output cost the same).
    """

    text: str
    provider: str
    model: str
    strategy: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_ms: float
    cost_per_m: float
    fallback: bool = False
    original_error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    ttft_ms: float | None = None
    finish_reason: str | None = None
    cached_prompt_tokens: int = 0
    request_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    """The provider's response body as received, unknown fields included."""
    ratelimit: dict[str, str] = field(default_factory=dict)
    """The provider's ``x-ratelimit-*`` headers, for rate-limit-aware routing."""
    raw_json: bytes | None = None
    """The provider's body byte for byte (non-streaming), for relaying it unchanged."""
    quality_score: float | None = None
    """quality_aware: the probability the prompt needed the strong provider."""
    route_decision: str | None = None
    """quality_aware: ``strong`` or ``weak``, the tier the score chose (``provider`` says who answered)."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    # Seed compatibility: result["result"], result["provider"], result.get("fallback", False).
    def __getitem__(self, key: str) -> Any:
        name = _SEED_KEYS.get(key, key)
        if name not in self.__dataclass_fields__ and name != "total_tokens":
            raise KeyError(key)
        return getattr(self, name)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and (_SEED_KEYS.get(key, key) in self.__dataclass_fields__)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no raw body)."""
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name not in ("raw", "raw_json")}
        data["attempts"] = [a.to_dict() for a in self.attempts]
        data["result"] = self.text
        return data
