"""Config for one provider (``providers.NAME``): endpoint, prices, timeouts, limits, TLS and proxy, and the
breaker, health-check and cold-start sections a provider may override.

Kept apart from ``schema.py`` because it is one concept, and so that ``budgets.py`` can price a provider's
tokens without importing the schema that imports it.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from .base import StrictModel
from .settings import BreakerSettings, ColdStartSettings

MAX_PRICE_PER_M = 1_000_000.0
"""Highest price per 1M tokens accepted (US$): anything above is a typo, not a price."""
MAX_PRICE_PER_GPU_SECOND = 1_000.0
"""Highest price per worker second accepted (US$)."""


class Price(StrictModel):
    """US dollars per one million tokens."""

    input: float = Field(ge=0, le=MAX_PRICE_PER_M)
    output: float = Field(ge=0, le=MAX_PRICE_PER_M)
    cached_input: float | None = Field(default=None, ge=0, le=MAX_PRICE_PER_M)


class BreakerConfig(StrictModel):
    """When a provider is taken out of rotation, and how it is let back in."""

    failures: int = Field(default=5, gt=0, description="failures within window_s that open the breaker")
    window_s: float = Field(default=10.0, gt=0)
    error_rate: float = Field(default=0.5, gt=0, le=1, description="error rate that opens it, over min_requests")
    min_requests: int = Field(default=20, gt=0)
    consecutive_timeouts: int = Field(default=2, gt=0)
    open_s: float = Field(default=5.0, gt=0, description="time open before a probe; doubles while probes fail")
    max_open_s: float = Field(default=60.0, gt=0)
    half_open_probes: int = Field(default=1, gt=0)

    def settings(self) -> BreakerSettings:
        return BreakerSettings(**self.model_dump())


class HealthCheckConfig(StrictModel):
    """Probe a provider in the background, so breakers open and close without spending user requests."""

    path: str = "/models"
    """Relative to ``base_url``: ``/models`` is ``{base_url}/models``."""
    interval_s: float = Field(default=10.0, gt=0)
    timeout_s: float = Field(default=2.0, gt=0)
    failures: int = Field(default=2, gt=0, description="failed checks in a row that open the breaker")


class ColdStartConfig(StrictModel):
    """A serverless endpoint that scales to zero answers its first request after idling very slowly."""

    idle_s: float | None = Field(default=None, gt=0, description="idle this long: expect a cold start")
    factor: float = Field(default=3.0, gt=1, description="latency this many times the recent p95 means cold")
    warm_s: float = Field(default=30.0, gt=0, description="how long latency-sensitive strategies avoid it")
    keep_warm_s: float | None = Field(default=None, gt=0, description="ping it when idle this long (costs money)")

    def settings(self) -> ColdStartSettings:
        return ColdStartSettings(self.idle_s, self.factor, self.warm_s)


class ProviderConfig(StrictModel):
    base_url: str
    api_key: SecretStr | None = None
    model: str = Field(min_length=1)
    price_per_m: Price | None = None
    """US$ per 1M tokens; with ``price_per_gpu_second`` too, only the routing estimate."""
    price_per_gpu_second: float | None = Field(default=None, ge=0, le=MAX_PRICE_PER_GPU_SECOND)
    """Self-hosted billing (RunPod serverless): US$ per second of worker time."""
    idle_share: float = Field(default=0.0, ge=0, lt=1)
    """Share of billed worker time spent idle or cold-starting, not serving requests."""
    latency_ms: float = Field(default=1000.0, gt=0, description="prior until measured")
    quality: int = 1
    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    context_window: int | None = Field(default=None, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    max_connections: int = Field(default=4096, gt=0, description="connections to this provider at once (one per "
                                 "request or open stream); past it a request waits up to pool_timeout_s for one")
    breaker: BreakerConfig | None = None
    """Overrides the top-level ``breaker`` settings for this provider."""
    health_check: HealthCheckConfig | None = None
    cold_start: ColdStartConfig = Field(default_factory=ColdStartConfig)
    ca_bundle: str | None = None
    """PEM file of CA certificates to trust besides the system's (a self-hosted endpoint's private CA)."""
    tls_verify: bool = Field(default=True, description="false: accept any certificate (a lab endpoint; logged loudly)")
    proxy: SecretStr | None = None
    """``http://[user:password@]host:port``; unset: ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``; null or "": none."""
    max_response_bytes: int = Field(default=8 * 1024 * 1024, gt=0,
                                    description="largest answer read (after decoding gzip); past it: too_large")
    max_sse_line_bytes: int = Field(default=1024 * 1024, gt=0, description="longest SSE line or event in a stream")
    pool_timeout_s: float = Field(default=5.0, gt=0)
    """Longest wait for a free connection when all ``max_connections`` are busy; then the next provider is tried
    (never this one again within the request). Not a provider failure: it never counts toward the breaker."""
    max_retry_after_s: float = Field(default=300.0, ge=0,
                                     description="longest cool-down a provider's Retry-After can ask for")

    _name: str = PrivateAttr(default="")
    _api_key_env: str | None = PrivateAttr(default=None)
    _url_secrets: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _single_line_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if any(c in name + text for c in "\r\n") or not name.strip():
                raise ValueError(f"header {name!r} must be a non-empty name and a value without line breaks")
            if any(ord(c) > 0xFF for c in name + text):
                raise ValueError(f"header {name!r} must be latin-1 text (HTTP/1.1 cannot send other characters)")
        return value

    @field_validator("ca_bundle")
    @classmethod
    def _readable_bundle(cls, value: str | None) -> str | None:
        """Load it now, as a connection would: a bad file must fail at start-up, not as a ``tls`` error per request."""
        if value is None:
            return value
        if not os.path.isfile(value):
            raise ValueError(f"file {value!r} does not exist")
        try:
            ssl.create_default_context().load_verify_locations(cafile=value)
        except ssl.SSLError as exc:
            detail = "no PEM certificate found" if exc.reason == "NO_CERTIFICATE_OR_CRL_FOUND" else exc.reason or str(exc)
            raise ValueError(f"file {value!r} is not a PEM bundle of CA certificates: {detail}") from None
        except OSError as exc:
            raise ValueError(f"file {value!r} cannot be read: {exc.strerror or exc}") from None
        return value

    @field_validator("proxy")
    @classmethod
    def _http_proxy(cls, value: SecretStr | None) -> SecretStr | None:
        url = value.get_secret_value() if value is not None else ""
        if url:
            parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
            if parts.scheme != "http":
                raise ValueError(f"proxy scheme {parts.scheme!r} is not supported: use an http:// proxy URL")
            try:
                parts.port  # noqa: B018 (raises on a port that is not a number)
            except ValueError:
                raise ValueError("proxy URL has an invalid port") from None
            if not parts.hostname:
                raise ValueError("proxy URL has no host")
        return value

    @model_validator(mode="after")
    def _connect_within_timeout(self) -> ProviderConfig:
        if self.connect_timeout_s > self.timeout_s:
            self.connect_timeout_s = self.timeout_s
        if self.price_per_m is None and self.price_per_gpu_second is None:
            raise ValueError("needs price_per_m, or price_per_gpu_second for a self-hosted endpoint")
        return self

    @property
    def proxy_url(self) -> str | None:
        """The configured proxy, or None (none configured, or explicitly none)."""
        return (self.proxy.get_secret_value() or None) if self.proxy is not None else None

    @property
    def proxy_from_env(self) -> bool:
        """Whether the environment's proxy variables apply: only when ``proxy`` was not set at all."""
        return "proxy" not in self.model_fields_set

    @property
    def gpu_priced(self) -> bool:
        return self.price_per_gpu_second is not None

    @property
    def routing_price(self) -> Price:
        """Per-1M prices strategies and plans compare.

        A GPU-second provider without ``price_per_m`` is estimated from its
        latency prior: one request of about 1,000 tokens occupying the worker
        for ``latency_ms``. Reports show the effective price measured instead.
        """
        if self.price_per_m is not None:
            return self.price_per_m
        per_m = (self.price_per_gpu_second or 0.0) / (1 - self.idle_share) * (self.latency_ms / 1000) * 1000
        return Price(input=per_m, output=per_m)

    @property
    def name(self) -> str:
        return self._name

    @property
    def url_secrets(self) -> tuple[str, ...]:
        """Values ``base_url`` took from ``${VAR}``: shown as ``***`` wherever the URL is printed."""
        return self._url_secrets

    @property
    def api_key_env(self) -> str | None:
        """The environment variable the key came from, to show instead of the key."""
        return self._api_key_env
