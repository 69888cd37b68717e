"""The config schema: every key, its default and its checks (pydantic models); one provider's section is in
``providers.py``, the other sections in the modules named after them.

Cross-field checks raise ``KeyedError`` so the loader can name the key that is wrong.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from .base import StrictModel
from .budgets import Budgets, pacing_problems
from .enums import RoutingStrategy
from .evaluation import GraderRule, JudgeConfig, ShadowConfig
from .providers import (
    MAX_PRICE_PER_GPU_SECOND,
    MAX_PRICE_PER_M,
    BreakerConfig,
    ColdStartConfig,
    HealthCheckConfig,
    Price,
    ProviderConfig,
)
from .settings import BreakerSettings, ColdStartSettings
from .spend import SpendConfig
from .state import StateConfig

__all__ = [  # the provider sections are re-exported: they were defined here
    "MAX_PRICE_PER_GPU_SECOND", "MAX_PRICE_PER_M", "BreakerConfig", "ColdStartConfig", "GatewayConfig",
    "GatewayKey", "HealthCheckConfig", "HedgeConfig", "KeyedError", "LedgerConfig", "Price", "ProviderConfig",
    "QualityAwareConfig", "QualityTarget", "RouterConfig",
]


class HedgeConfig(StrictModel):
    """Send a slow request to the next provider too, and take whichever answers first."""

    strategies: list[RoutingStrategy] = Field(default_factory=list)
    """Strategies that hedge; empty: none (hedging costs a second call when it fires)."""
    after_ms: float | Literal["p95"] = 500.0
    """A fixed delay, or ``p95``: the first provider's measured p95 latency (``after_ms`` fallback: 500)."""
    min_samples: int = Field(default=20, gt=0, description="latency samples before p95 is trusted")


class QualityTarget(StrictModel):
    """What quality-aware routing aims at; set exactly one."""

    strong_share: float | None = Field(default=None, ge=0, le=1, description="fraction of requests sent to strong")
    max_price_per_m: float | None = Field(default=None, gt=0, description="blended US$ per 1M tokens to stay under")
    min_quality: float | None = Field(default=None, gt=0, le=1, description="share of strong-only quality to keep")

    @model_validator(mode="after")
    def _exactly_one(self) -> QualityTarget:
        given = [k for k in ("strong_share", "max_price_per_m", "min_quality") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"set exactly one of strong_share, max_price_per_m, min_quality (got {', '.join(given) or 'none'})")
        return self


class QualityAwareConfig(StrictModel):
    """``quality_aware``: a local model scores each prompt; only prompts above a threshold go to strong."""

    strong: str | None = None
    """The provider for hard prompts (default: the highest quality tier, then the most expensive)."""
    weak: str | None = None
    """The provider for the rest (default: the cheapest other provider)."""
    model: str | None = None
    """A model file from ``llmroute router train``; default: the one shipped in the package."""
    target: QualityTarget = Field(default_factory=lambda: QualityTarget(strong_share=0.2))
    adapt_window: int = Field(default=1000, ge=0, description="recent scores that keep the share on live traffic; 0: off")


class GatewayKey(StrictModel):
    """A key a gateway client presents; ``id`` names it in logs, metrics and the ledger."""

    id: str = Field(min_length=1)
    key: SecretStr


class GatewayConfig(StrictModel):
    api_keys: list[GatewayKey | SecretStr] = Field(default_factory=list)
    """Keys clients must present as ``Authorization: Bearer``; also ``$LLMROUTE_API_KEYS`` (comma-separated)."""
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    shutdown_grace_s: float = Field(default=10.0, ge=0, description="on SIGTERM, how long requests in flight may finish")
    header_timeout_s: float = Field(default=10.0, gt=0, description="from a request's first byte to the end of its "
                                    "headers; slower gets a 408 and the connection closed")
    body_timeout_s: float = Field(default=60.0, gt=0, description="from the end of a request's headers to the end "
                                  "of its body; slower gets a 408 and the connection closed")
    keepalive_timeout_s: float = Field(default=75.0, gt=0, description="an idle keep-alive connection is closed "
                                       "after this")
    write_timeout_s: float = Field(default=30.0, gt=0, description="a client that takes no data for this long "
                                   "(a stream's, or a whole answer's) is cut off; a stream's provider stream closed")
    max_connections: int | None = Field(default=None, gt=0, description="open client connections per worker; past "
                                        "it a new one gets a 503. Default: half the open-file limit, at most 10,000")
    max_header_bytes: int = Field(default=8190, ge=1024, description="longest request line or header line; longer "
                                  "gets a 431")
    max_headers: int = Field(default=128, gt=0, description="most header lines in a request; more gets a 431")
    # What a client may send: past these a request gets a 400 before any provider sees it.
    max_json_depth: int = Field(default=64, ge=2, le=200, description="deepest nesting of a request body's JSON")
    max_model_chars: int = Field(default=256, gt=0, description="longest `model` a request may name")
    max_user_chars: int = Field(default=256, gt=0, description="longest `user` a request may send")
    max_request_id_chars: int = Field(
        default=128, gt=0, le=1024,
        description="longest client x-request-id kept as the request's id (a longer or non-token one is replaced)",
    )
    keys_refresh_s: float = Field(default=2.0, gt=0, le=3600, description="how often a gateway worker reads the "
                                  "ledger's gateway keys (made with `llmroute keys`); a change applies within this")

    def keys(self, env: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
        """(id, key) pairs from the config and the environment."""
        pairs = []
        for i, entry in enumerate(self.api_keys, 1):
            if isinstance(entry, GatewayKey):
                pairs.append((entry.id, entry.key.get_secret_value()))
            else:
                pairs.append((f"key-{i}", entry.get_secret_value()))
        extra = (os.environ if env is None else env).get("LLMROUTE_API_KEYS", "")
        for i, key in enumerate((k.strip() for k in extra.split(",") if k.strip()), 1):
            pairs.append((f"env-{i}", key))
        return [(kid, key) for kid, key in pairs if key]


class LedgerConfig(StrictModel):
    """Where every request is recorded. ``$LLMROUTE_LEDGER`` (a path, a DSN or ``off``) overrides it."""

    enabled: bool = True
    path: str | None = None
    """SQLite file; default ``ledger.sqlite3`` in the user's data directory."""
    dsn: SecretStr | None = None
    """``postgresql://...`` selects the Postgres backend instead of SQLite."""
    queue_size: int = Field(default=10_000, gt=0)
    queue_bytes: int = Field(default=64 * 1024 * 1024, gt=0,
                             description="bound on the queue's estimated memory; past it, entries are dropped and counted")
    batch_size: int = Field(default=500, gt=0)
    flush_interval_s: float = Field(default=0.1, gt=0, le=10)
    busy_timeout_s: float = Field(default=10.0, gt=0, description="SQLite: how long a write waits for another "
                                  "process's lock before it fails (and is retried)")
    retry_s: float = Field(default=60.0, ge=0, description="how long entries that could not be written are retried, "
                           "with backoff, before they are dropped and counted")
    max_text_chars: int = Field(default=512, ge=16, description="longest text stored per column (model, user, route, "
                                "error, each tag); longer is cut")

    @field_validator("dsn")
    @classmethod
    def _postgres_dsn(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql:// (SQLite files go in ledger.path)")
        return value


class RouterConfig(StrictModel):
    providers: dict[str, ProviderConfig] = Field(min_length=1)
    strategy: RoutingStrategy = RoutingStrategy.BALANCED
    balanced_weights: dict[str, float] | None = None
    deadline_s: float = Field(default=60.0, gt=0, description="bounds the whole cascade")
    retry_rounds: int = Field(default=1, ge=0, description="extra passes after every provider failed")
    latency_alpha: float = Field(default=0.3, gt=0, le=1, description="EWMA weight of a new sample")
    expected_output_tokens: int = Field(default=256, gt=0)
    baseline_provider: str | None = None
    max_retry_wait_s: float = Field(default=1.0, ge=0, description="longest Retry-After the cascade waits out")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    hedge: HedgeConfig = Field(default_factory=HedgeConfig)
    stream_resume: bool = False
    """A stream whose provider fails after the first chunk continues on the next provider."""
    quality_aware: QualityAwareConfig = Field(default_factory=QualityAwareConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    shadow: ShadowConfig = Field(default_factory=ShadowConfig)
    graders: list[GraderRule] = Field(default_factory=list)
    """Which grader measures which requests: the first rule that matches a request's tag, route or strategy."""
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    """Where breakers, cool-downs, rate-limit buckets and spend totals live: per process, or shared in Redis."""
    budgets: Budgets = Field(default_factory=list, description="spend limits per key, tag or all traffic")
    spend: SpendConfig = Field(default_factory=SpendConfig)
    """Live spend today and this period per key, tag and provider (``/router/state``, status, metrics)."""

    _source: str | None = PrivateAttr(default=None)
    _missing_env: list[str] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _cross_checks(self) -> RouterConfig:
        for name, provider in self.providers.items():
            provider._name = name
        if self.balanced_weights is not None:
            for name, weight in self.balanced_weights.items():
                if name not in self.providers:
                    raise KeyedError(
                        f"balanced_weights.{name}",
                        f"names unknown provider '{name}' (known: {', '.join(self.providers)})",
                    )
                if weight < 0:
                    raise KeyedError(f"balanced_weights.{name}", "must be >= 0")
            if sum(self.balanced_weights.values()) <= 0:
                raise KeyedError("balanced_weights", "at least one weight must be > 0")
        if self.baseline_provider is not None and self.baseline_provider not in self.providers:
            raise KeyedError("baseline_provider", f"names unknown provider '{self.baseline_provider}'")
        for key in ("strong", "weak"):
            name = getattr(self.quality_aware, key)
            if name is not None and name not in self.providers:
                raise KeyedError(f"quality_aware.{key}", f"names unknown provider '{name}' (known: {', '.join(self.providers)})")
        pair = self.quality_pair() if len(self.providers) > 1 else None
        if pair is not None and pair[0] == pair[1]:
            raise KeyedError("quality_aware", f"strong and weak must be different providers (both '{pair[0]}')")
        for key, name in (("shadow.reference", self.shadow.reference), ("shadow.candidate", self.shadow.candidate),
                          ("judge.provider", self.judge.provider)):
            if name is not None and name not in self.providers:
                raise KeyedError(key, f"names unknown provider '{name}' (known: {', '.join(self.providers)})")
        if self.shadow.rate > 0 and len(self.providers) > 1:
            reference, candidate = self.shadow_pair()
            if reference == candidate:
                raise KeyedError("shadow", f"reference and candidate must be different providers (both '{reference}')")
        for key, problem in pacing_problems(self):
            raise KeyedError(key, problem)
        return self

    @property
    def source(self) -> str | None:
        """The file this config was read from, if any."""
        return self._source

    def weights(self) -> dict[str, float]:
        """Balanced weights, defaulting to 80 for the cheapest provider and 20 shared by the rest.

        With the seed's pair that is runpod 80 / cerebras 20. Providers left out of
        ``balanced_weights`` get weight 0: they only serve as fallbacks.
        """
        if self.balanced_weights is not None:
            return {name: float(self.balanced_weights.get(name, 0.0)) for name in self.providers}
        if len(self.providers) == 1:
            return {name: 100.0 for name in self.providers}
        cheapest = min(self.providers, key=lambda n: _blended_price(self.providers[n]))
        others = len(self.providers) - 1
        return {name: 80.0 if name == cheapest else 20.0 / others for name in self.providers}

    def breaker_settings(self) -> dict[str, BreakerSettings]:
        return {name: (p.breaker or self.breaker).settings() for name, p in self.providers.items()}

    def cold_start_settings(self) -> dict[str, ColdStartSettings]:
        return {name: p.cold_start.settings() for name, p in self.providers.items()}

    def quality_pair(self) -> tuple[str, str]:
        """(strong, weak) for quality_aware: as configured, else best tier (then price) and cheapest other."""
        qa = self.quality_aware
        names = list(self.providers)
        strong = qa.strong or max(names, key=lambda n: (self.providers[n].quality, _blended_price(self.providers[n])))
        others = [n for n in names if n != strong] or names
        weak = qa.weak or min(others, key=lambda n: _blended_price(self.providers[n]))
        return strong, weak

    def shadow_pair(self) -> tuple[str, str]:
        """(reference, candidate) for shadow evaluation: as configured, else quality_aware's (strong, weak)."""
        strong, weak = self.quality_pair()
        return self.shadow.reference or strong, self.shadow.candidate or weak

    def judge_provider(self) -> str:
        """The provider that judges: as configured, else the shadow reference."""
        return self.judge.provider or self.shadow_pair()[0]

    def baseline(self) -> str:
        """The premium provider savings are measured against (the most expensive, unless set)."""
        if self.baseline_provider is not None:
            return self.baseline_provider
        return max(self.providers, key=lambda n: _blended_price(self.providers[n]))


class KeyedError(ValueError):
    """A cross-field check that knows which key is wrong."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


def _blended_price(provider: ProviderConfig) -> float:
    price = provider.routing_price
    return (price.input + price.output) / 2
