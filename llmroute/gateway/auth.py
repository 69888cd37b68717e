"""Gateway keys: who is asking (constant-time checks, no I/O per request), and what the key lets them do.

Keys come from the config, ``$LLMROUTE_API_KEYS`` and the ledger's ``gateway_keys`` table (``llmroute keys``).
The table is read off the event loop every ``gateway.keys_refresh_s`` (``LedgerKeySource``); a request only
reads the in-memory map the last read left. Per-key rpm and tpm are token buckets in this worker
(``KeyLimiter``): with N workers or replicas a key gets up to N times its limit until state is shared.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..keys import GatewayKeys, StoredKey, key_digest, tag_names
from ..ledger import Store, open_store

log = logging.getLogger("llmroute.gateway")

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_UNREADABLE_LOG_EVERY_S = 60.0


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class KeyIdentity:
    """Who a request's key says it is, and what it may do. Config and environment keys are unrestricted admins."""

    key_id: str
    admin: bool = True
    tags: tuple[str, ...] = ()
    tag_names: frozenset[str] = frozenset()
    strategies: frozenset[str] | None = None
    """The strategies it may use; None for all."""
    first_strategy: str | None = None
    """Its first allowed strategy: what a request naming none runs when the default is not allowed."""
    rpm: int | None = None
    tpm: int | None = None
    stored: StoredKey | None = None
    """A ledger key's whole record (its budget included); None for config and environment keys."""
    rate_limited: bool = False
    """Whether it has an rpm or a tpm: the hot path asks once."""

    @classmethod
    def from_stored(cls, key: StoredKey) -> KeyIdentity:
        s = key.settings
        return cls(key_id=key.name, admin=s.admin, tags=s.tags, tag_names=tag_names(s.tags),
                   strategies=frozenset(s.strategies) if s.strategies is not None else None,
                   first_strategy=s.strategies[0] if s.strategies else None, rpm=s.rpm, tpm=s.tpm, stored=key,
                   rate_limited=s.rpm is not None or s.tpm is not None)


class KeyStore:
    """Holds SHA-256 digests only.

    Config keys are few: every one is compared on every call with ``hmac.compare_digest``, never stopping
    early, so the time taken says nothing about which key, or how much of one, matched. Ledger keys can be
    thousands, so they are found by digest in a dict and the match confirmed with ``compare_digest``: the
    lookup's timing depends only on the SHA-256 of what the client sent, which tells nothing about any
    stored key's value.
    """

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        self._digests = [(KeyIdentity(key_id), key_digest(key)) for key_id, key in keys]
        self._ledger: Mapping[bytes, KeyIdentity] = {}
        self._ledger_has_keys = False

    def __bool__(self) -> bool:
        """Whether a key is required: any config key, or any key ever made in the ledger (a revoked one too, so
        revoking the last key never opens the gateway)."""
        return bool(self._digests) or self._ledger_has_keys

    def __len__(self) -> int:
        return len(self._digests) + len(self._ledger)

    @property
    def ledger_keys(self) -> int:
        """How many of the ledger's keys (not revoked) are held."""
        return len(self._ledger)

    def set_ledger_keys(self, keys: Mapping[bytes, StoredKey], any_made: bool) -> None:
        """Swap in the ledger's keys (not revoked) by digest: one assignment, so a request sees the old set or the new."""
        self._ledger = {digest: KeyIdentity.from_stored(key) for digest, key in keys.items()}
        self._ledger_has_keys = self._ledger_has_keys or any_made

    def identify(self, authorization: str | None) -> KeyIdentity | None:
        """The key behind an ``Authorization: Bearer`` header value, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        digest = key_digest(token.strip())
        found = None
        for identity, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = identity
        stored = self._ledger.get(digest)
        if stored is not None and found is None:
            found = stored
        return found

    def check(self, authorization: str | None) -> str | None:
        """The key id for an ``Authorization: Bearer`` header value, or None."""
        identity = self.identify(authorization)
        return identity.key_id if identity is not None else None


class LedgerKeySource:
    """Reads the ledger's keys into a ``KeyStore``: once at start-up (a failure there is an error), then every
    ``refresh_s`` in a thread. A ledger that cannot be read leaves the last keys read in place, and says so
    at most once a minute."""

    def __init__(self, keys: KeyStore, location: str, *, refresh_s: float, busy_timeout_s: float = 10.0,
                 on_change: Callable[[], None] | None = None) -> None:
        self.keys, self.location, self.refresh_s, self.busy_timeout_s = keys, location, refresh_s, busy_timeout_s
        self.on_change = on_change
        self._store: Store | None = None
        self._version: tuple[object, ...] | None = None
        self._failing_since: float | None = None
        self._logged_at = -_UNREADABLE_LOG_EVERY_S
        self._task: asyncio.Task[None] | None = None

    def refresh(self) -> bool:
        """Read the keys if they changed since the last read; True if they did. Blocking: call off the loop."""
        if self._store is None:
            self._store = open_store(self.location, readonly=True, busy_timeout_s=self.busy_timeout_s)
        try:
            table = GatewayKeys(self._store)
            version = table.version()
            if version == self._version:
                return False
            active, any_made = table.load()
        except BaseException:
            self.close()  # a new connection next time: the server may have restarted
            raise
        self.keys.set_ledger_keys(active, any_made)
        self._version = version
        if self.on_change is not None:
            self.on_change()
        return True

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="llmroute-key-refresh")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception as exc:  # LedgerError, or a driver's own: never the end of refreshing
                self._unreadable(exc)
            else:
                if self._failing_since is not None:
                    log.warning("gateway keys: the ledger is readable again after %.0f s; keys are current",
                                time.monotonic() - self._failing_since)
                    self._failing_since = None

    def _unreadable(self, exc: BaseException) -> None:
        wall = time.monotonic()
        if self._failing_since is None:
            self._failing_since = wall
        if wall - self._logged_at >= _UNREADABLE_LOG_EVERY_S:
            self._logged_at = wall
            log.warning("gateway keys: cannot read the ledger (%s); keeping the %d keys last read until it can be",
                        str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__, self.keys.ledger_keys)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.close()

    def close(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            store.close()


@dataclass(slots=True)
class _Bucket:
    """A token bucket: ``per_minute`` units refilled evenly over a minute, holding at most a minute's worth."""

    per_minute: int
    level: float
    stamp: float

    def refill(self, now: float) -> float:
        self.level = min(float(self.per_minute), self.level + (now - self.stamp) * self.per_minute / 60.0)
        self.stamp = now
        return self.level

    def wait_s(self, units: float) -> float:
        """Seconds until ``units`` (at most a full bucket) are there; 0 when they are now."""
        need = min(units, float(self.per_minute))
        return 0.0 if self.level >= need else (need - self.level) * 60.0 / self.per_minute


@dataclass(slots=True)
class _KeyBuckets:
    requests: _Bucket | None = None
    tokens: _Bucket | None = None
    limits: tuple[int | None, int | None] = (None, None)


@dataclass
class KeyLimiter:
    """Each ledger key's ``rpm`` and ``tpm``, enforced in this worker.

    A request reserves one request and its estimated tokens (prompt plus ``max_tokens``, or the expected
    output) before any provider is called, and settles to the tokens it used when the answer says.
    Buckets are kept per key name, so at most one per key in the ledger.
    """

    clock: Callable[[], float] = time.monotonic
    _keys: dict[str, _KeyBuckets] = field(default_factory=dict)

    def _buckets(self, identity: KeyIdentity, now: float) -> _KeyBuckets:
        buckets = self._keys.get(identity.key_id)
        limits = (identity.rpm, identity.tpm)
        if buckets is None or buckets.limits != limits:  # new, or its limits changed: full buckets at the new limits
            buckets = self._keys[identity.key_id] = _KeyBuckets(
                _Bucket(identity.rpm, float(identity.rpm), now) if identity.rpm else None,
                _Bucket(identity.tpm, float(identity.tpm), now) if identity.tpm else None, limits)
        return buckets

    def acquire(self, identity: KeyIdentity, tokens: int) -> tuple[float, str | None]:
        """Take one request and ``tokens`` from the key's buckets: ``(0.0, None)`` when taken, else the seconds
        to wait and which bucket (``requests`` or ``tokens``) is short, nothing taken. A request larger than
        a whole minute's tokens passes when the bucket is full."""
        now = self.clock()
        buckets = self._buckets(identity, now)
        wait_s, short = 0.0, None
        for bucket, units, unit in ((buckets.requests, 1, "requests"), (buckets.tokens, tokens, "tokens")):
            if bucket is not None:
                bucket.refill(now)
                bucket_wait_s = bucket.wait_s(units)
                if bucket_wait_s > wait_s:
                    wait_s, short = bucket_wait_s, unit
        if wait_s > 0:
            return wait_s, short
        if buckets.requests is not None:
            buckets.requests.level -= 1
        if buckets.tokens is not None:
            buckets.tokens.level -= tokens
        return 0.0, None

    def settle(self, identity: KeyIdentity, reserved: int, used: int) -> None:
        """Give back what a request reserved and did not use, or take what it used beyond (the level may go
        below zero: later requests wait for it)."""
        buckets = self._keys.get(identity.key_id)
        if buckets is not None and buckets.tokens is not None and buckets.limits[1] == identity.tpm:
            buckets.tokens.level = min(float(buckets.tokens.per_minute), buckets.tokens.level + reserved - used)
