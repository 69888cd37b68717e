"""Shared routing state: measured latency, outcomes, schedules and cool-downs.

Strategies and the router read and write state only through ``RouterState``, so
a store shared between gateway workers (Redis) can replace ``InMemoryState``
without touching them. Methods are synchronous because they sit on the request
path; a networked store keeps a local copy and syncs it in the background.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from .breaker import CircuitBreaker
from .config.settings import BreakerSettings, ColdStartSettings  # ColdStartSettings: also imported from here
from .ratelimit import RateLimitWindow

log = logging.getLogger("llmroute")


@dataclass(slots=True)
class ProviderStats:
    """What the router has seen of one provider since start."""

    latency_ms: float
    """EWMA of measured latency; the config's prior until the first sample."""
    samples: int = 0
    successes: int = 0
    failures: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    recent_latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=256))
    p95_ms: float | None = None
    """p95 of ``recent_latency_ms``: kept, not sorted for on every request (hedging and cold starts read it)."""
    recent_failures: deque[tuple[float, str, int | None]] = field(default_factory=lambda: deque(maxlen=20))
    """(wall time, kind, HTTP status) of the latest failures."""
    cooldown_until: float = 0.0
    """Wall-clock time (``time.time()``) before which the provider asked not to be called."""
    last_success: float = 0.0
    """``time.monotonic()`` of the last answer; 0 before any."""
    warming_until: float = 0.0
    """``time.monotonic()`` until which a detected cold start is assumed to last."""
    cold_starts: int = 0

    @property
    def error_rate(self) -> float:
        total = self.successes + self.failures
        return self.failures / total if total else 0.0


class RouterState(ABC):
    """The small interface strategies and the router share."""

    on_backend_change: Callable[[bool], None] | None = None
    """A shared store calls this with False when it loses its backend (local state serves meanwhile) and with
    True when it is back and resynced."""

    async def start(self) -> None:
        """Connect a shared store (a no-op in memory); requests are served whether or not it succeeds."""

    async def aclose(self) -> None:
        """Stop syncing and release connections."""

    def shared_samples(self, key: str, receive: Callable[[float], None]) -> Callable[[float], None]:
        """The function to call with each local sample of ``key`` (a score, say): it reaches ``receive`` here,
        and in a shared store every other replica's ``receive`` too."""
        return receive

    def lease_keys(self, prefix: str) -> None:
        """Let totals whose key starts with ``prefix`` be reserved from slices a shared store hands each replica
        (no round trip per reservation; a refusal may come early while other replicas hold unused slices, as
        documented). Other totals are reserved exactly, one round trip each. In process: nothing to do."""

    def short_lived(self, prefix: str, ttl_s: float) -> None:
        """Totals whose key starts with ``prefix`` are dropped ``ttl_s`` after their last change (a per-minute
        window, say), instead of outliving their period as a budget's must. In process the bounded, least
        recently used map drops them: nothing to do."""

    async def areserve(self, key: str, amount: float, limit: float) -> bool:
        """``reserve`` for async callers: a shared store awaits its round trip instead of blocking the loop."""
        return self.reserve(key, amount, limit)

    @abstractmethod
    def latency_estimate_ms(self, provider: str) -> float:
        """Current latency estimate: measured if any sample exists, else the prior."""

    @abstractmethod
    def record_success(self, provider: str, latency_ms: float, started_at: float | None = None) -> None:
        """``started_at`` (``time.monotonic()`` when the attempt began) lets the breaker ignore
        outcomes of attempts sent before its last change of state."""

    @abstractmethod
    def record_failure(self, provider: str, kind: str, latency_ms: float, status: int | None = None,
                       started_at: float | None = None) -> None: ...

    @abstractmethod
    def next_count(self, key: str) -> int:
        """An atomic counter (0, 1, 2, ...) per key, for deterministic schedules."""

    @abstractmethod
    def cooldown_until(self, provider: str) -> float: ...

    @abstractmethod
    def set_cooldown(self, provider: str, until: float) -> None: ...

    @abstractmethod
    def snapshot(self) -> dict[str, ProviderStats]: ...

    @abstractmethod
    def latency_p95_ms(self, provider: str, min_samples: int = 1) -> float | None:
        """p95 of recent latencies, or None with fewer than ``min_samples`` samples."""

    @abstractmethod
    def warming(self, provider: str) -> bool:
        """Is the provider cold (a latency spike, or idle past its ``cold_start.idle_s``)? Latency-sensitive
        strategies send traffic elsewhere meanwhile."""

    @abstractmethod
    def ratelimit(self, provider: str) -> RateLimitWindow:
        """What the provider's ``x-ratelimit-*`` headers said, less what was sent since."""

    @abstractmethod
    def breaker(self, provider: str) -> CircuitBreaker:
        """The provider's circuit breaker; ``record_success``/``record_failure`` feed it."""

    @abstractmethod
    def reserve(self, key: str, amount: float, limit: float) -> bool:
        """Add ``amount`` to the running total of ``key`` if the total stays within ``limit``; atomically,
        so concurrent spenders can never pass the limit together. False (nothing added) otherwise."""

    @abstractmethod
    def settle(self, key: str, reserved: float, actual: float) -> None:
        """Replace a reservation by what was actually spent (``reserved`` 0: just add ``actual``)."""

    @abstractmethod
    def spent(self, key: str) -> float:
        """The running total of ``key``: what was settled plus what is still reserved."""

    @abstractmethod
    def add_names(self, key: str, names: Iterable[str], ttl_s: float) -> None:
        """Add to the set of names under ``key`` (the keys and tags that spent this period, say), kept at least
        ``ttl_s`` after its last change: with a shared store, every replica's ``names(key)`` learns them."""

    @abstractmethod
    def names(self, key: str) -> frozenset[str]:
        """The names under ``key``: this process's, and with a shared store every replica's as of the last sync."""


class InMemoryState(RouterState):
    """Per-process state. Timeouts count toward latency: a provider that hangs must look slow."""

    def __init__(
        self, latency_priors_ms: Mapping[str, float], alpha: float = 0.3, *,
        breakers: Mapping[str, BreakerSettings] | None = None,
        on_breaker_change: Callable[[str, str, str], None] | None = None,
        cold_starts: Mapping[str, ColdStartSettings] | None = None,
    ) -> None:
        self._alpha = alpha
        self._stats = {name: ProviderStats(latency_ms=prior) for name, prior in latency_priors_ms.items()}
        self._counters: dict[str, int] = {}
        self._breaker_settings = dict(breakers or {})
        self._breakers: dict[str, CircuitBreaker] = {}
        self._ratelimits: dict[str, RateLimitWindow] = {}
        self._cold = dict(cold_starts or {})
        self._totals: dict[str, float] = {}
        self._totals_lock = threading.Lock()  # a SyncRouter's loop thread and its callers may both spend
        self._names: dict[str, set[str]] = {}
        self._names_lock = threading.Lock()
        self.on_breaker_change = on_breaker_change
        """Called with (provider, new state, reason) on every transition: metrics and logs hang here."""

    def _get(self, provider: str) -> ProviderStats:
        stats = self._stats.get(provider)
        if stats is None:
            stats = self._stats[provider] = ProviderStats(latency_ms=1000.0)
        return stats

    def latency_estimate_ms(self, provider: str) -> float:
        return self._get(provider).latency_ms

    def _observe(self, stats: ProviderStats, latency_ms: float) -> None:
        if stats.samples == 0:
            stats.latency_ms = latency_ms
        else:
            stats.latency_ms += self._alpha * (latency_ms - stats.latency_ms)
        stats.samples += 1
        stats.recent_latency_ms.append(latency_ms)
        if stats.samples <= 32 or stats.samples % 16 == 0:  # exact while few, then refreshed every 16 samples
            stats.p95_ms = _p95(stats.recent_latency_ms)

    def record_success(self, provider: str, latency_ms: float, started_at: float | None = None) -> None:
        stats = self._get(provider)
        stats.successes += 1
        cold = self._cold.get(provider)
        if (cold is not None and stats.p95_ms is not None and len(stats.recent_latency_ms) >= 20
                and latency_ms > cold.factor * stats.p95_ms):
            # A cold start: note it, and keep the outlier out of the latency estimate.
            stats.cold_starts += 1
            wall = time.monotonic()
            if wall >= stats.warming_until:  # once per warming window, not once per slow answer
                log.warning("%s looks cold: %.0f ms, over %.1fx its recent p95", provider, latency_ms, cold.factor)
            stats.warming_until = wall + cold.warm_s
        else:
            self._observe(stats, latency_ms)
        stats.last_success = time.monotonic()
        self.breaker(provider).on_success(started_at)

    def latency_p95_ms(self, provider: str, min_samples: int = 1) -> float | None:
        stats = self._get(provider)
        return stats.p95_ms if len(stats.recent_latency_ms) >= min_samples else None

    def warming(self, provider: str) -> bool:
        stats = self._get(provider)
        wall = time.monotonic()
        if wall < stats.warming_until:
            return True
        cold = self._cold.get(provider)
        return bool(cold and cold.idle_s and stats.last_success and wall - stats.last_success > cold.idle_s)

    def record_failure(self, provider: str, kind: str, latency_ms: float, status: int | None = None,
                       started_at: float | None = None) -> None:
        stats = self._get(provider)
        stats.failures += 1
        stats.recent_failures.append((now(), kind, status))
        stats.failures_by_kind[kind] = stats.failures_by_kind.get(kind, 0) + 1
        if kind == "timeout":
            self._observe(stats, latency_ms)
        self.breaker(provider).on_failure(kind, started_at)

    def next_count(self, key: str) -> int:
        value = self._counters.get(key, 0)
        self._counters[key] = value + 1
        return value

    def cooldown_until(self, provider: str) -> float:
        return self._get(provider).cooldown_until

    def set_cooldown(self, provider: str, until: float) -> None:
        stats = self._get(provider)
        stats.cooldown_until = max(stats.cooldown_until, until)

    def snapshot(self) -> dict[str, ProviderStats]:
        return dict(self._stats)

    def ratelimit(self, provider: str) -> RateLimitWindow:
        window = self._ratelimits.get(provider)
        if window is None:
            window = self._ratelimits[provider] = RateLimitWindow()
        return window

    def breaker(self, provider: str) -> CircuitBreaker:
        breaker = self._breakers.get(provider)
        if breaker is None:
            def changed(state: str, reason: str, provider: str = provider) -> None:
                self._breaker_moved(provider, state, reason)

            breaker = self._breakers[provider] = CircuitBreaker(self._breaker_settings.get(provider), changed)
        return breaker

    def _breaker_moved(self, provider: str, state: str, reason: str) -> None:
        if self.on_breaker_change is not None:
            self.on_breaker_change(provider, state, reason)

    def reserve(self, key: str, amount: float, limit: float) -> bool:
        with self._totals_lock:
            total = self._totals.get(key, 0.0)
            self._admit_total(key)  # touched even when refused: a budget in use is never the one forgotten
            if total + amount > limit:
                return False
            self._totals[key] = total + amount
            return True

    def _admit_total(self, key: str) -> None:
        """Make room for ``key`` among the totals (call with the lock held). The total used least recently goes:
        a budget's key is touched by every request it reserves for, so what goes is a past period's, and a live
        budget is never forgotten while fewer than ``MAX_TOTALS`` budgets and periods are in use."""
        if key in self._totals:
            self._totals[key] = self._totals.pop(key)  # most recently used last
        elif len(self._totals) >= MAX_TOTALS:
            del self._totals[next(iter(self._totals))]

    def settle(self, key: str, reserved: float, actual: float) -> None:
        with self._totals_lock:
            self._totals[key] = max(0.0, self._totals.pop(key, 0.0) + actual - reserved)

    def spent(self, key: str) -> float:
        return self._totals.get(key, 0.0)

    def add_names(self, key: str, names: Iterable[str], ttl_s: float) -> None:
        with self._names_lock:  # callers bound the names; a set per period (``MAX_TOTALS`` at most) stays small
            if key not in self._names and len(self._names) >= MAX_TOTALS:
                del self._names[next(iter(self._names))]
            self._names.setdefault(key, set()).update(names)

    def names(self, key: str) -> frozenset[str]:
        with self._names_lock:
            return frozenset(self._names.get(key, ()))


MAX_TOTALS = 100_000
"""Keys ``reserve`` keeps at once (one per budget and period; a few MB); the least recently used goes first."""


def _p95(values: deque[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.95 * (len(ordered) - 1))]


def now() -> float:
    """Wall-clock seconds; cool-downs use wall time so a shared store can compare them."""
    return time.time()
