"""Gateway keys kept in the ledger's database: made, listed, changed and revoked by ``llmroute keys``, read
by a running gateway.

    keys = GatewayKeys(open_store(location))
    token = keys.create("sales-bot", KeySettings(rpm=600, tags=("team=sales",)))   # shown once, never stored
    keys.update("sales-bot", rpm=None)       # None clears a limit
    keys.revoke("sales-bot")
    active, any_keys = keys.load()           # {sha256 digest: StoredKey} of keys not revoked

Only a key's SHA-256 digest is stored. A key is 256 random bits, so a digest cannot be reversed by guessing,
and a plain (unsalted, unkeyed) digest lets the gateway find a key with one dictionary lookup and no secret
of its own to distribute to every replica. A salt or a slow hash protects passwords people chose; it adds
nothing against a random 256-bit key.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import orjson

from .errors import LLMRouteError
from .ledger.schema import GATEWAY_KEYS_VERSION, LedgerError
from .ledger.store import Store
from .strategies import RoutingStrategy

KEY_PREFIX = "llmr-"
"""Every key starts with this, so a leaked one is recognisable (secret scanners, logs) as an llmroute key."""
PERIODS = ("day", "week", "month")
MAX_KEY_TAGS = 32
MAX_TAG_CHARS = 200
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_STRATEGIES = tuple(s.value for s in RoutingStrategy)
_COLUMNS = ("name", "created_ts", "updated_ts", "revoked_ts", "budget_usd", "budget_period", "rpm", "tpm",
            "strategies", "tags", "admin")


class KeyRequestError(LLMRouteError):
    """A key command that cannot be done as asked (bad option, unknown or taken name): one line saying why."""


def new_key() -> str:
    """A new key: the prefix and 32 random bytes, URL-safe base64 (43 characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> bytes:
    """SHA-256 of a key as sent (a header's invalid UTF-8, kept by aiohttp as surrogates, hashed as the bytes)."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class KeySettings:
    """What a key may do, and what its requests carry. None is "no limit"."""

    budget_usd: float | None = None
    """Stored for budget enforcement, which reads it with ``budget_period``; not enforced by the key itself."""
    budget_period: str | None = None
    rpm: int | None = None
    """Requests per minute, per gateway worker."""
    tpm: int | None = None
    """Tokens (prompt + completion) per minute, per gateway worker."""
    strategies: tuple[str, ...] | None = None
    """The strategies it may use; None for all."""
    tags: tuple[str, ...] = ()
    """``k=v`` (or bare) tags added to every request it makes."""
    admin: bool = False

    def checked(self) -> KeySettings:
        """These settings if they make sense; else ``KeyRequestError`` naming the option."""
        if self.budget_usd is not None:
            if not (isinstance(self.budget_usd, (int, float)) and math.isfinite(self.budget_usd) and self.budget_usd > 0):
                raise KeyRequestError(f"--budget-usd must be a positive number of dollars, not {self.budget_usd!r}")
            if self.budget_period is None:
                raise KeyRequestError(f"--budget-usd needs --period ({' | '.join(PERIODS)})")
        if self.budget_period is not None:
            if self.budget_period not in PERIODS:
                raise KeyRequestError(f"--period must be one of {', '.join(PERIODS)}, not {self.budget_period!r}")
            if self.budget_usd is None:
                raise KeyRequestError("--period needs --budget-usd (a period without a budget means nothing)")
        for option, value in (("--rpm", self.rpm), ("--tpm", self.tpm)):
            if value is not None and (not isinstance(value, int) or not 0 < value <= 10**12):
                raise KeyRequestError(f"{option} must be a whole number from 1 to 10^12, not {value!r}")
        if self.strategies is not None:
            if not self.strategies:
                raise KeyRequestError("--strategies needs at least one strategy (or --all-strategies)")
            unknown = [s for s in self.strategies if s not in _STRATEGIES]
            if unknown:
                raise KeyRequestError(f"unknown strategy {unknown[0]!r} in --strategies (valid: {', '.join(_STRATEGIES)})")
        if len(self.tags) > MAX_KEY_TAGS:
            raise KeyRequestError(f"--tags: at most {MAX_KEY_TAGS} tags, not {len(self.tags)}")
        for tag in self.tags:
            if not tag or len(tag) > MAX_TAG_CHARS or "," in tag or not tag.isprintable() or tag != tag.strip():
                raise KeyRequestError(f"--tags: {tag[:40]!r} is not a tag: want k=v, printable, no commas, "
                                      f"at most {MAX_TAG_CHARS} characters")
        return self


def split_list(text: str | None) -> tuple[str, ...] | None:
    """``"a, b,c"`` as ``("a", "b", "c")`` in order, repeats dropped; None stays None."""
    if text is None:
        return None
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def tag_names(tags: Iterable[str]) -> frozenset[str]:
    """The names of ``k=v`` tags (a bare tag is its own name)."""
    return frozenset(t.partition("=")[0] for t in tags)


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key as the ledger keeps it, without the key or its digest."""

    name: str
    created_ts: float
    updated_ts: float
    revoked_ts: float | None = None
    settings: KeySettings = field(default_factory=KeySettings)

    @property
    def revoked(self) -> bool:
        return self.revoked_ts is not None

    def public(self) -> dict[str, Any]:
        """What ``keys list`` shows."""
        s = self.settings
        return {"name": self.name, "created": _iso(self.created_ts), "revoked": _iso(self.revoked_ts),
                "budget_usd": s.budget_usd, "period": s.budget_period, "rpm": s.rpm, "tpm": s.tpm,
                "strategies": list(s.strategies) if s.strategies is not None else None, "tags": list(s.tags),
                "admin": s.admin}


def _iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _json_list(values: Sequence[str] | None) -> str | None:
    return None if values is None else orjson.dumps(list(values)).decode()


def _from_row(row: Sequence[Any]) -> StoredKey:
    name, created, updated, revoked, budget, period, rpm, tpm, strategies, tags, admin = row
    settings = KeySettings(
        budget_usd=budget, budget_period=period, rpm=rpm, tpm=tpm,
        strategies=tuple(orjson.loads(strategies)) if strategies is not None else None,
        tags=tuple(orjson.loads(tags)) if tags else (), admin=bool(admin),
    )
    return StoredKey(name, created, updated, revoked, settings)


class GatewayKeys:
    """Create, list, change and revoke keys over a ledger ``Store`` (which must be at schema v4)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._has_table = store.schema_version >= GATEWAY_KEYS_VERSION
        """False for a ledger opened read-only before it reached v4: no keys in it, and none can be written."""

    def create(self, name: str, settings: KeySettings) -> str:
        """Store a new key under ``name`` and return it: the only time the key itself exists outside a client."""
        _check_name(name)
        settings.checked()
        if not self._has_table:
            raise LedgerError(f"{self.store.where}: opened read-only at schema version {self.store.schema_version}; "
                              "keys need version 4")
        key = new_key()
        now = time.time()
        changed = self.store.execute(
            f"INSERT INTO gateway_keys (key_sha256, {', '.join(_COLUMNS)}) VALUES ({', '.join('?' * 12)}) "
            "ON CONFLICT (name) DO NOTHING",
            (key_digest(key).hex(), name, now, now, None, *self._values(settings)),
        )
        if changed != 1:
            existing = self.get(name)
            hint = ("revoked: a name is never handed out again, so ledger rows stay attributable; pick another name"
                    if existing.revoked else f"pick another name, or change it with `llmroute keys update {name}`")
            raise KeyRequestError(f"a key named {name!r} already exists ({hint})")
        return key

    @staticmethod
    def _values(s: KeySettings) -> tuple[Any, ...]:
        return (s.budget_usd, s.budget_period, s.rpm, s.tpm, _json_list(s.strategies), _json_list(s.tags) if s.tags else None,
                s.admin)

    def list(self, *, include_revoked: bool = True) -> list[StoredKey]:
        if not self._has_table:
            return []
        where = "" if include_revoked else " WHERE revoked_ts IS NULL"
        return [_from_row(r) for r in self.store.fetch(f"SELECT {', '.join(_COLUMNS)} FROM gateway_keys{where} ORDER BY name")]

    def get(self, name: str) -> StoredKey:
        rows = self._has_table and self.store.fetch(f"SELECT {', '.join(_COLUMNS)} FROM gateway_keys WHERE name = ?",
                                                    (name,))
        if not rows:
            raise KeyRequestError(f"no key named {name[:64]!r} (see `llmroute keys list`)")
        return _from_row(rows[0])

    def update(self, name: str, **changes: Any) -> StoredKey:
        """Change some settings (a ``KeySettings`` field each; None clears a limit) of a key not revoked."""
        current = self.get(name)
        if current.revoked:
            raise KeyRequestError(f"the key {name!r} is revoked; revoked keys cannot be changed")
        unknown = set(changes) - {f.name for f in fields(KeySettings)}
        if unknown:
            raise KeyRequestError(f"unknown key setting {sorted(unknown)[0]!r}")
        settings = replace(current.settings, **changes).checked()
        now = max(time.time(), current.updated_ts + 1e-3)  # always moves: gateways see the change by it
        self.store.execute(
            "UPDATE gateway_keys SET budget_usd = ?, budget_period = ?, rpm = ?, tpm = ?, strategies = ?, tags = ?, "
            "admin = ?, updated_ts = ? WHERE name = ? AND revoked_ts IS NULL",
            (*self._values(settings), now, name),
        )
        return self.get(name)

    def revoke(self, name: str) -> StoredKey:
        """Revoke a key for good: a gateway refuses it from its next refresh. Revoking twice is no error."""
        current = self.get(name)
        if current.revoked:
            return current
        now = max(time.time(), current.updated_ts + 1e-3)
        self.store.execute("UPDATE gateway_keys SET revoked_ts = ?, updated_ts = ? WHERE name = ? AND revoked_ts IS NULL",
                           (now, now, name))
        return self.get(name)

    def version(self) -> tuple[Any, ...]:
        """Changes whenever a key is made, changed or revoked: one cheap aggregate, so a gateway re-reads the
        keys only when something changed."""
        if not self._has_table:
            return ()
        return tuple(self.store.fetch("SELECT count(*), max(updated_ts), sum(updated_ts) FROM gateway_keys")[0])

    def load(self) -> tuple[dict[bytes, StoredKey], bool]:
        """The keys not revoked, by digest; and whether the table has any row at all (revoked ones count: once
        a key was made, revoking the last one must not leave the gateway open)."""
        if not self._has_table:
            return {}, False
        rows = self.store.fetch(f"SELECT key_sha256, {', '.join(_COLUMNS)} FROM gateway_keys")
        active = {bytes.fromhex(r[0]): _from_row(r[1:]) for r in rows if r[4] is None}
        return active, bool(rows)


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise KeyRequestError(f"key name {name[:64]!r} must be 1 to 64 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit")
