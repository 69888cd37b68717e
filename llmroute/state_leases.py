"""Spend leases: a replica holds a slice of a limit's room, so most reservations need no round trip.

A total in Redis (a budget's, a per-minute window's) counts everything every replica holds against it:
settled spend, reservations in flight and each replica's unused slice. A replica takes a slice with one
atomic script (``GRANT_LUA``): the slice is added to the total at once, so all replicas' slices together can
never pass the limit. It then reserves locally, under a lock, against what is left of its slice (its
``room``); it asks Redis again only when the room cannot hold a request. A reservation settled below its
amount gives the difference back to the room; above it, the excess comes out of the room, or is added to the
total. Unused room goes back to Redis after ``lease_idle_s`` without use, when another replica was refused, and
at close, so a refusal comes early by at most the other replicas' unused slices, and only until they hear of it.

Slices adapt: ``lease_share`` of what is left, divided by the live replicas, and at least the request. Near
the limit the room left is small, so slices shrink to single requests and no replica starves the others.

This module does no I/O: ``RedisState`` runs the scripts and feeds the results to ``Leases``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

# Take a slice of a limit: at least ARGV[1] (the part of a request the room lacks), else nothing.
# ARGV: need, limit, share of what is left, ttl. Returns {granted?, total after, slice} (numbers as strings,
# formatted once so Redis and the replica add the very same amount).
GRANT_LUA = """
local total = tonumber(redis.call('GET', KEYS[1]) or '0')
local need = tonumber(ARGV[1])
if need <= 0 then return {1, string.format('%.17g', total), '0'} end
local limit = tonumber(ARGV[2])
if total + need > limit then return {0, string.format('%.17g', total), '0'} end
local left = limit - total
local slice = string.format('%.17g', math.max(need, math.min(left, left * tonumber(ARGV[3]))))
total = redis.call('INCRBYFLOAT', KEYS[1], slice)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {1, total, slice}
"""

RECENT_S = 60.0
"""Totals used (reserved, settled or read) within this long are re-read from Redis at every sync."""


@dataclass(slots=True)
class Lease:
    """One total as this replica sees it."""

    known: float = 0.0
    """The total in Redis when last read: every replica's settled spend, holds and unused slices."""
    synced: bool = False
    """Has ``known`` been read from Redis (or granted) at least once?"""
    room: float = 0.0
    """This replica's unused slice: counted in the total (or in ``delta``), free to reserve locally."""
    others: float = 0.0
    """The other replicas' unused slices as last read: in ``known``, but not spent."""
    delta: float = 0.0
    """What Redis has not been told of yet: excess spend, slices given back, counters, slices taken while down."""
    room_sent: float | None = None
    """``room`` as last written to Redis (for the others' ``spent``); None: not written since (re)connecting."""
    leased: bool = False
    used_at: float = 0.0
    """``time.monotonic()`` of the last local reservation: idle room goes back."""
    seen_at: float = 0.0
    """``time.monotonic()`` of the last use of any kind: recent totals are re-read at every sync."""
    down_base: float | None = None
    """The total when Redis was lost: the local rule shares out what was left of the limit then."""
    down_taken: float = 0.0
    """Room taken by the local rule since Redis was lost."""

    @property
    def spent(self) -> float:
        """Settled plus held, cluster-wide: the total less every unused slice."""
        return max(0.0, self.known + self.delta - self.others - self.room)


class Leases:
    """Every total this replica reserves against or counts, with its slice. Thread-safe (a ``SyncRouter``'s
    loop thread and its callers may both spend)."""

    def __init__(self, share: float, idle_s: float, max_entries: int) -> None:
        self.share = share
        self.idle_s = idle_s
        self.max_entries = max_entries
        self._entries: dict[str, Lease] = {}
        self._dirty: set[str] = set()
        """Totals with a delta to send, or a room Redis has not seen."""
        self._orphans: dict[str, float] = {}
        """Deltas of totals forgotten (past ``max_entries``) before they were sent."""
        self._orphan_rooms: set[str] = set()
        self._lock = threading.Lock()

    def _entry(self, key: str) -> Lease:
        """The key's lease, most recently used last (call with the lock held). Past ``max_entries`` the least
        recently used goes (a live total is touched by every request), its room and delta sent at the next flush."""
        lease = self._entries.pop(key, None)
        if lease is None:
            lease = Lease()
            if len(self._entries) >= self.max_entries:
                old_key = next(iter(self._entries))
                old = self._entries.pop(old_key)
                self._give_back(old)
                if old.delta:
                    self._orphans[old_key] = self._orphans.get(old_key, 0.0) + old.delta
                if old.leased and old.room_sent:
                    self._orphan_rooms.add(old_key)
        self._entries[key] = lease
        return lease

    # -- the request path ------------------------------------------------------------------------

    def take(self, key: str, amount: float) -> bool:
        """Reserve ``amount`` from this replica's room; False if the room cannot hold it (or was never read)."""
        with self._lock:
            lease = self._entries.get(key)
            if lease is None or not lease.synced or lease.room < amount:
                return False
            lease.room -= amount
            lease.used_at = lease.seen_at = time.monotonic()
            return True

    def need(self, key: str, amount: float) -> float:
        """What a slice must add to the room to hold ``amount``."""
        with self._lock:
            lease = self._entries.get(key)
            return amount - lease.room if lease is not None and lease.synced else amount

    def slice_share(self, replicas: int) -> float:
        """The share of what is left one replica takes: ``lease_share`` divided among the live replicas."""
        return self.share / max(1, replicas)

    def granted(self, key: str, amount: float, ok: bool, total: float, slice_: float, keep: bool = True) -> bool:
        """Apply a grant's answer (the total after it, the slice added) and reserve ``amount`` from the room.
        ``keep``: a leased total, whose settled shortfalls go back to the room rather than to Redis."""
        with self._lock:
            lease = self._entry(key)
            lease.known, lease.synced = total, True
            lease.seen_at = time.monotonic()
            if slice_ > 0:
                lease.room += slice_
                lease.leased = lease.leased or keep
            if not ok or lease.room < amount:
                return False
            lease.room -= amount
            lease.used_at = lease.seen_at
            return True

    def take_down(self, key: str, amount: float, limit: float, replicas: int) -> bool:
        """Redis is lost: reserve from the room, and past it from this replica's share of what was left of the
        limit when Redis was lost, ``(limit - total then) / replicas``; all replicas together stay within it."""
        with self._lock:
            lease = self._entry(key)
            lease.seen_at = time.monotonic()
            if lease.room < amount:
                if lease.down_base is None:
                    lease.down_base = lease.known + lease.delta
                need = amount - lease.room
                if lease.down_taken + need > (limit - lease.down_base) / max(1, replicas):
                    return False
                lease.down_taken += need
                lease.room += need
                lease.delta += need  # counted in Redis when it is back
            lease.room -= amount
            lease.used_at = lease.seen_at
            self._dirty.add(key)
            return True

    def settle(self, key: str, reserved: float, actual: float) -> bool:
        """Replace a reservation by what was spent: a shortfall goes back to the room (a total reserved
        exactly: to Redis), an excess comes out of the room, or (none left) is added to the total. ``reserved``
        0 counts ``actual`` as spend. True if Redis has something to be told."""
        with self._lock:
            lease = self._entry(key)
            lease.seen_at = time.monotonic()
            freed = reserved - actual
            if freed >= 0 and lease.leased:
                lease.room += freed
                return False
            from_room = min(lease.room, -freed) if freed < 0 else 0.0
            lease.room -= from_room
            if freed + from_room == 0:
                return False
            lease.delta -= freed + from_room
            self._dirty.add(key)
            return True

    def spent(self, key: str) -> float:
        with self._lock:
            lease = self._entries.get(key)
            if lease is None:
                lease = self._entry(key)  # read from Redis at the next sync
            lease.seen_at = time.monotonic()
            return lease.spent

    def total(self, key: str) -> Lease | None:
        return self._entries.get(key)

    # -- the background ------------------------------------------------------------------------

    def _give_back(self, lease: Lease) -> None:
        lease.delta -= lease.room
        lease.room = 0.0

    def give_back(self, key: str | None = None, idle: bool = False) -> bool:
        """Return unused room to Redis (at the next flush): one key's (another replica was refused), every
        key's idle past ``idle_s`` (``idle``), or all (at close). True if any was returned."""
        now = time.monotonic()
        returned = False
        with self._lock:
            for k, lease in ((key, self._entries.get(key)),) if key is not None else self._entries.items():
                if lease is None or lease.room <= 0 or (idle and now - lease.used_at < self.idle_s):
                    continue
                self._give_back(lease)
                self._dirty.add(k)  # type: ignore[arg-type]
                returned = True
        return returned

    def changed(self) -> bool:
        """Is there a delta to send?"""
        return bool(self._dirty or self._orphans)

    def drain(self, rooms: bool) -> tuple[dict[str, float], dict[str, float]]:
        """What to send: per total, the delta to add; with ``rooms``, the unused room to show the others where
        it changed (once per sync, not per request: the others' ``spent`` is as of the last sync anyway)."""
        with self._lock:
            deltas, self._orphans = self._orphans, {}
            for key in self._dirty:
                lease = self._entries.get(key)
                if lease is not None and lease.delta:
                    deltas[key], lease.delta = deltas.get(key, 0.0) + lease.delta, 0.0
            self._dirty.clear()
            shown: dict[str, float] = {}
            if rooms:
                shown = dict.fromkeys(self._orphan_rooms, 0.0)
                self._orphan_rooms.clear()
                for key, lease in self._entries.items():
                    if lease.leased and lease.room != lease.room_sent:
                        shown[key] = lease.room_sent = lease.room
        return deltas, shown

    def undrained(self, deltas: dict[str, float], rooms: dict[str, float]) -> None:
        """A flush that failed: keep its deltas for the next, and show the rooms again."""
        with self._lock:
            for key, delta in deltas.items():
                lease = self._entries.get(key)
                if lease is None:
                    self._orphans[key] = self._orphans.get(key, 0.0) + delta
                else:
                    lease.delta += delta
                    self._dirty.add(key)
            for key in rooms:
                lease = self._entries.get(key)
                if lease is not None:
                    lease.room_sent = None

    def known(self, key: str, total: float, others: float | None = None) -> None:
        """A total read from Redis (and the other replicas' unused slices in it, when read too)."""
        with self._lock:
            lease = self._entries.get(key)
            if lease is not None:
                lease.known, lease.synced = total, True
                if others is not None:
                    lease.others = others

    def recent(self) -> list[str]:
        """The totals used lately: re-read at every sync."""
        since = time.monotonic() - RECENT_S
        with self._lock:
            return [k for k, lease in self._entries.items() if lease.seen_at >= since]

    def restore(self) -> dict[str, float]:
        """After (re)connecting: the totals as last known (put back where Redis lost them), every room shown
        again, and the local rule's share forgotten."""
        with self._lock:
            restore = {}
            for key, lease in self._entries.items():
                lease.down_base, lease.down_taken = None, 0.0
                if lease.synced:
                    restore[key] = lease.known
                    lease.room_sent = None
            return restore

    def back_up(self) -> None:
        """Redis answers again: the local rule's base is taken afresh at the next outage."""
        with self._lock:
            for lease in self._entries.values():
                lease.down_base, lease.down_taken = None, 0.0
