"""Gateway keys: who is asking (constant-time checks, no I/O per request), and what the key lets them do.

Keys come from the config, ``$LLMROUTE_API_KEYS`` and the ledger's ``gateway_keys`` table (``llmroute keys``).
The table is read off the event loop every ``gateway.keys_refresh_s`` (``LedgerKeySource``); a request only
reads the in-memory map the last read left. Per-key rpm and tpm are counted in the routing state
(``KeyLimiter``): with ``state: redis`` every replica and worker counts against the same limit.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..keys import GatewayKeys, StoredKey, key_digest, tag_names
from ..ledger import Store, open_store
from ..state import RouterState

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


WINDOW_S = 60.0
"""A key's ``rpm`` and ``tpm`` count in one-minute windows of wall-clock time, the same for every replica."""


class OverLimit(Exception):
    """A request its key's rpm or tpm has no room for now: nothing was taken."""

    def __init__(self, key_id: str, unit: str, limit: int, retry_after_s: int, scope: str) -> None:
        super().__init__(f"the key '{key_id}' is over its limit of {limit} {unit} per minute ({scope}); "
                         f"retry in {retry_after_s} s")
        self.unit, self.retry_after_s = unit, retry_after_s


@dataclass(frozen=True, slots=True)
class KeyHold:
    """What one request took from its key's limits: its window's tokens key and the tokens reserved there,
    settled once to what the request used."""

    tokens_key: str | None = None
    tokens: int = 0


NO_HOLD = KeyHold()
"""What a request without a tpm holds: nothing to settle."""


class KeyLimiter:
    """Each ledger key's ``rpm`` and ``tpm``, counted in the state every gateway process shares.

    Counts live in ``RouterState`` totals, one per key, unit and minute (``keyrpm:<key>:<minute>``), taken
    with ``areserve`` (one atomic check-and-add: a lock in memory, a Lua call in Redis), so concurrent requests
    on any replica cannot pass a limit together. A fixed window would let a key send its whole limit just
    before a minute ends and again just after; so the window is sliding, approximated as in most shared rate
    limiters: the previous minute's count, weighted by how much of it still lies within the last 60 s,
    is carried into the current one. A request reserves one request and its estimated tokens (prompt plus
    ``max_tokens``, or the expected output), and settles to the tokens it used when the answer says.
    """

    def __init__(self, state: RouterState, *, shared: bool, clock: Callable[[], float] = time.time) -> None:
        self.state, self.clock = state, clock
        self.scope = "shared by every gateway replica" if shared else "in this gateway process"
        for prefix in ("keyrpm:", "keytpm:"):  # a window is read for two minutes and settled a little later
            state.short_lived(prefix, 3 * WINDOW_S)

    async def acquire(self, identity: KeyIdentity, tokens: int) -> KeyHold:
        """Take one request and ``tokens`` from the key's current window, or raise ``OverLimit`` (nothing
        taken). A request larger than a whole minute's tokens reserves the whole minute: it passes when the
        key has sent nothing for a minute."""
        minute, elapsed_s = divmod(self.clock(), WINDOW_S)
        window, elapsed = int(minute), elapsed_s / WINDOW_S
        if identity.rpm is not None:
            requests_key = f"keyrpm:{identity.key_id}:"
            wait_s = await self._take(requests_key, window, elapsed, identity.rpm, 1)
            if wait_s is not None:
                raise self._over(identity, "requests", identity.rpm, wait_s)
        if identity.tpm is not None:
            tokens = min(tokens, identity.tpm)
            tokens_key = f"keytpm:{identity.key_id}:"
            wait_s = await self._take(tokens_key, window, elapsed, identity.tpm, tokens)
            if wait_s is not None:
                if identity.rpm is not None:  # refused: the request it took goes back
                    self.state.settle(f"{requests_key}{window}", 1, 0)
                raise self._over(identity, "tokens", identity.tpm, wait_s)
            return KeyHold(f"{tokens_key}{window}", tokens)
        return NO_HOLD

    async def _take(self, prefix: str, window: int, elapsed: float, limit: int, amount: int) -> float | None:
        """Reserve ``amount`` in the window's total within what the previous window leaves (``elapsed``: the
        fraction of this window gone): None when taken, else the seconds until it would fit if nothing else
        were sent."""
        key = f"{prefix}{window}"
        previous = self.state.spent(f"{prefix}{window - 1}")
        if await self.state.areserve(key, amount, limit - previous * (1.0 - elapsed)):
            return None
        return _wait_s(limit, previous, self.state.spent(key), amount, elapsed)

    def _over(self, identity: KeyIdentity, unit: str, limit: int, wait_s: float) -> OverLimit:
        return OverLimit(identity.key_id, unit, limit, max(1, math.ceil(wait_s - 1e-6)), self.scope)

    def settle(self, identity: KeyIdentity | None, hold: KeyHold, used: int) -> None:
        """Replace the tokens a request reserved by what it used (more than reserved counts too: later
        requests wait for it)."""
        if hold.tokens_key is not None:
            self.state.settle(hold.tokens_key, hold.tokens, used)


def _wait_s(limit: float, previous: float, current: float, amount: float, elapsed: float) -> float:
    """Seconds until ``amount`` fits (``elapsed``: the fraction of the current minute gone). Within this minute
    room appears as the previous minute's weight fades; past it, this minute becomes the previous one."""
    if current + amount <= limit and previous > 0:
        return max(0.0, 1.0 - (limit - current - amount) / previous - elapsed) * WINDOW_S
    next_elapsed = max(0.0, 1.0 - (limit - amount) / current) if current > 0 else 0.0
    return (1.0 - elapsed + next_elapsed) * WINDOW_S
