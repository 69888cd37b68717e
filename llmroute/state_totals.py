"""Spend totals shared through Redis: ``RedisState``'s ``reserve``/``settle``/``spent``, with leases.

A reservation is taken from this replica's slice of the limit (``state_leases``) without a round trip; a new
slice is one atomic script call (``GRANT_LUA``), awaited, bounded by ``reserve_timeout_s``. Without Redis the
local rule decides (``SharedTotals.reserve_locally``). What changes locally (excess spend, slices given back,
plain counters, the unused room the others subtract) is queued on the background flush; every sync re-reads
the totals in use. Only totals under a prefix given to ``lease_keys`` (budgets) are reserved from slices;
any other (a key's per-minute window, the shadow cap) gets exactly what it reserves, one round trip each, and
a release goes straight back to Redis, so its count stays exact. Plain counters (``settle(key, 0, x)``) too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from redis.exceptions import RedisError

from .config.state import StateConfig
from .state import MAX_TOTALS
from .state_leases import GRANT_LUA, Leases
from .state_wire import SETTLE_LUA, TOTALS_TTL_S, Event


MAX_NAME_SETS = 1024
"""Sets of names followed at once (one per live spend dimension and period); the oldest goes first."""


class SharedTotals:
    """Totals in Redis under ``<prefix>total:<key>``, this replica's unused slice of each under
    ``<prefix>room:<key>`` (a hash, one field per replica) so the others' ``spent`` can leave it out."""

    def __init__(self, config: StateConfig, replica_id: str, *, is_up: Callable[[], bool],
                 replicas: Callable[[], int], lost: Callable[[BaseException], None],
                 publish: Callable[[Event], None], kick: Callable[[], None]) -> None:
        self.config = config
        self.replica_id = replica_id
        self.leases = Leases(config.lease_share, config.lease_idle_s, MAX_TOTALS)
        self._is_up, self._replicas, self._lost, self._publish, self._kick = is_up, replicas, lost, publish, kick
        self._granting: dict[str, asyncio.Future[None]] = {}
        self._sliced: tuple[str, ...] = ()
        self._ttls: dict[str, int] = {}
        """Per key prefix, the seconds Redis keeps such a total after its last change (``short_lived``)."""
        """Key prefixes reserved from slices (``lease_keys``); other totals get exactly what is reserved."""
        self._grant_sync: Any = None
        self._grant_async: Any = None
        self._settle_async: Any = None
        self.rooms_due = False
        """Set by the sync: the next flush shows the others this replica's unused rooms."""
        self._names: dict[str, set[str]] = {}
        """Per set key, the names known here: added here, or read at a sync (``add_names``/``names``)."""
        self._new_names: dict[str, set[str]] = {}
        self._names_ttl_s: dict[str, int] = {}
        self._names_lock = threading.Lock()

    def lease_keys(self, prefix: str) -> None:
        if prefix not in self._sliced:
            self._sliced += (prefix,)

    def short_lived(self, prefix: str, ttl_s: float) -> None:
        self._ttls = {**self._ttls, prefix: max(1, int(ttl_s))}

    def _ttl_s(self, key: str) -> int:
        """How long Redis keeps the total after its last change: its prefix's (``short_lived``), else a period's."""
        for prefix, ttl_s in self._ttls.items():
            if key.startswith(prefix):
                return ttl_s
        return TOTALS_TTL_S

    def connect(self, sync_client: Any, client: Any) -> None:
        """Register the scripts on (re)connecting; the local rule's share is taken afresh at the next outage."""
        if self._grant_sync is None:
            self._grant_sync = sync_client.register_script(GRANT_LUA)
        self._grant_async = client.register_script(GRANT_LUA)
        self._settle_async = client.register_script(SETTLE_LUA)
        self.leases.back_up()

    # -- the request path ---------------------------------------------------------------------------

    def reserve(self, key: str, amount: float, limit: float) -> bool:
        """From this replica's slice, else a new slice (a blocking round trip), else the local rule."""
        for _ in range(2):  # twice: another thread may take the new slice first
            if self.leases.take(key, amount):
                return True
            if not self._is_up() or self._grant_sync is None:
                break
            try:
                answer = self._grant_sync(keys=[self._total_key(key)], args=self._grant_args(key, amount, limit))
            except (RedisError, OSError) as exc:
                self._lost(exc)
                break
            if self._granted(key, amount, answer):
                return True
            if not int(answer[0]):
                return False
        else:
            return False  # the slices went to concurrent requests each time: refused, never the local rule
        return self.reserve_locally(key, amount, limit)

    async def areserve(self, key: str, amount: float, limit: float) -> bool:
        """``reserve`` awaiting its round trip. Concurrent requests that find the room empty wait for one
        grant rather than each asking Redis (twice at most; then each asks for itself)."""
        for attempt in range(4):
            if self.leases.take(key, amount):
                return True
            if not self._is_up() or self._grant_async is None:
                break
            pending = self._granting.get(key)
            if pending is not None and attempt < 2:
                await asyncio.shield(pending)
                continue
            lead = pending is None  # the others wait for this grant
            if lead:
                pending = self._granting[key] = asyncio.get_running_loop().create_future()
            try:
                answer = await asyncio.wait_for(
                    self._grant_async(keys=[self._total_key(key)], args=self._grant_args(key, amount, limit)),
                    self.config.reserve_timeout_s)
            except (RedisError, OSError, TimeoutError) as exc:
                self._lost(exc)  # a grant that did reach Redis stays counted: early refusals, never overspend
                break
            finally:
                if lead:
                    del self._granting[key]
                    pending.set_result(None)
            if self._granted(key, amount, answer):
                return True
            if not int(answer[0]):
                return False
        else:
            return False  # the slices went to concurrent requests each time: refused, never the local rule
        return self.reserve_locally(key, amount, limit)

    def _grant_args(self, key: str, amount: float, limit: float) -> list[Any]:
        leases = self.leases
        share = leases.slice_share(self._replicas()) if key.startswith(self._sliced) else 0.0
        return [repr(leases.need(key, amount)), repr(limit), repr(share), self._ttl_s(key)]

    def _granted(self, key: str, amount: float, answer: list[Any]) -> bool:
        ok, total, slice_ = answer
        keep = key.startswith(self._sliced)
        if self.leases.granted(key, amount, bool(int(ok)), float(total), float(slice_), keep):
            return True
        if not int(ok):  # refused: the slices other replicas hold unused come back, and this one's
            self.leases.give_back(key)
            self._publish(["need", key])
        return False

    def reserve_locally(self, key: str, amount: float, limit: float) -> bool:
        """Without Redis, the local rule: this replica's unused slice first (Redis counts it already), then its
        share of what was left of the limit when Redis was lost, ``(limit - total then) / replicas``, the total
        as of the last sync: all replicas together stay within the limit."""
        return self.leases.take_down(key, amount, limit, self._replicas())

    def settle(self, key: str, reserved: float, actual: float) -> None:
        if self.leases.settle(key, reserved, actual):
            self._kick()

    def spent(self, key: str) -> float:
        return self.leases.spent(key)

    # -- shared sets of names ----------------------------------------------------------------------------

    def add_names(self, key: str, names: Iterable[str], ttl_s: float) -> bool:
        """Add names locally and queue the new ones for Redis; True if there is something to send."""
        with self._names_lock:
            known = self._known_names(key)
            new = [name for name in names if name not in known]
            if not new:
                return False
            known.update(new)
            self._names_ttl_s[key] = max(1, int(ttl_s))
            self._new_names.setdefault(key, set()).update(new)
            return True

    def names(self, key: str) -> frozenset[str]:
        with self._names_lock:
            return frozenset(self._known_names(key))

    def _known_names(self, key: str) -> set[str]:
        """The set for ``key`` (call with the lock held), followed from the next sync on."""
        known = self._names.get(key)
        if known is None:
            if len(self._names) >= MAX_NAME_SETS:
                dropped = next(iter(self._names))
                del self._names[dropped]
                self._names_ttl_s.pop(dropped, None)
            known = self._names[key] = set()
        return known

    # -- the background: what the flush sends and the sync reads ----------------------------------------

    async def write(self, pipe: Any, restore: Mapping[str, float] | None) -> Callable[[list[Any] | None], None]:
        """Queue the changed rooms and deltas on ``pipe`` (``restore``: totals to put back first where Redis
        lost them). Call the result with the pipeline's results from the first command queued here, or with
        None if the pipeline failed (all is kept for the next flush)."""
        start = len(pipe)
        deltas, rooms = self.leases.drain(self.rooms_due or restore is not None)
        self.rooms_due = False
        with self._names_lock:
            new_names, self._new_names = self._new_names, {}
            if restore is not None:  # Redis may have lost the sets: send back every name known here
                new_names = {key: set(names) for key, names in self._names.items() if names}
        for key, names in new_names.items():
            pipe.sadd(self._names_key(key), *names)
            pipe.expire(self._names_key(key), self._names_ttl_s.get(key, TOTALS_TTL_S))
        for key in restore or ():
            deltas.setdefault(key, 0.0)
        for key, room in rooms.items():
            if room > 0:
                pipe.hset(self._room_key(key), self.replica_id, repr(room))
                pipe.expire(self._room_key(key), self._ttl_s(key))
            else:
                pipe.hdel(self._room_key(key), self.replica_id)
        skip = len(pipe) - start  # commands queued here before the deltas
        for key, delta in deltas.items():
            base = "" if restore is None or key not in restore else repr(restore[key])
            await self._settle_async(keys=[self._total_key(key)], args=[repr(delta), base, self._ttl_s(key)],
                                     client=pipe)

        def apply(results: list[Any] | None) -> None:
            if results is None:
                self.leases.undrained(deltas, rooms)
                with self._names_lock:
                    for key, names in new_names.items():
                        self._new_names.setdefault(key, set()).update(names)
                return
            for key, total in zip(deltas, results[skip:], strict=True):
                self.leases.known(key, float(total))

        return apply

    def read(self, pipe: Any) -> Callable[[list[Any]], None]:
        """Queue reads of the totals in use (and the others' unused rooms in them) on ``pipe``; call the result
        with the pipeline's results from the first command queued here."""
        totals = list(self.leases.recent())
        sliced = [key for key in totals if key.startswith(self._sliced)]  # only these can hold others' slices
        with self._names_lock:
            sets = list(self._names)
        for key in sets:
            pipe.smembers(self._names_key(key))
        if totals:
            pipe.mget([self._total_key(k) for k in totals])
            for key in sliced:  # a total this replica only reads may hold the others' slices too
                pipe.hgetall(self._room_key(key))
        me = self.replica_id.encode()

        def apply(results: list[Any]) -> None:
            with self._names_lock:
                for key, members in zip(sets, results, strict=False):
                    known = self._names.get(key)
                    if known is not None:
                        known.update(m.decode(errors="replace") for m in members)
            results = results[len(sets):]
            if not totals:
                return
            rooms = dict(zip(sliced, results[1:], strict=True))
            for key, value in zip(totals, results[0], strict=True):
                if value is not None:
                    others = sum(float(v) for r, v in rooms[key].items() if r != me) if key in rooms else 0.0
                    self.leases.known(key, float(value), others)

        return apply

    def _total_key(self, key: str) -> str:
        return self.config.key_prefix + "total:" + key

    def _names_key(self, key: str) -> str:
        return self.config.key_prefix + "names:" + key

    def _room_key(self, key: str) -> str:
        return self.config.key_prefix + "room:" + key
