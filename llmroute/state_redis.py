"""Routing state shared by replicas through Redis, without a round trip on the request path.

Each replica keeps ``InMemoryState`` as its local copy and serves every request from it. What changes
(an outcome, a breaker opening, a cool-down, a rate-limit reading, a score) is queued, and a background
task sends the queue as one message on a Redis channel per round trip, with the few keys a replica needs
to catch up after a reconnect. Every replica applies the others' messages to its own copy. So breakers
count the whole cluster's failures and open everywhere within a message's delay; the open period's single
probe is claimed with one ``SET NX`` ahead of time; buckets and cool-downs are the cluster's.

Spend totals are the exception (``state_totals``): a budget that each replica checks against its own copy
is the bypass this exists to prevent. Each replica reserves locally within its slice of a limit, which Redis
counts at once; a new slice is one atomic Lua call (``state_leases``).

Redis down: everything keeps working from the local copy (one log line, ``on_backend_change(False)``),
``reserve`` falls back to its unused slices, then to its share of what was left (``SharedTotals.reserve_locally``), and on reconnect the
replica pulls the shared snapshot, pushes its own and what it spent meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson
import redis
import redis.asyncio as aredis

from .breaker import OPEN
from .config.settings import BreakerSettings, ColdStartSettings
from .config.state import StateConfig
from .ratelimit import Bucket, RateLimitWindow
from .state import InMemoryState
from .state_totals import SharedTotals
from .state_wire import (
    MAX_REMOTE_OUTCOMES,
    Event,
    SharedWindow,
    changed_wall,
    first_error,
    newer_open,
    to_monotonic,
    to_wall,
)

log = logging.getLogger("llmroute")


class RedisState(InMemoryState):
    """``InMemoryState`` on the request path, kept in step with the other replicas through Redis."""

    def __init__(
        self, config: StateConfig, latency_priors_ms: Mapping[str, float], alpha: float = 0.3, *,
        breakers: Mapping[str, BreakerSettings] | None = None,
        on_breaker_change: Callable[[str, str, str], None] | None = None,
        cold_starts: Mapping[str, ColdStartSettings] | None = None,
    ) -> None:
        super().__init__(latency_priors_ms, alpha, breakers=breakers, on_breaker_change=on_breaker_change,
                         cold_starts=cold_starts)
        self.config = config
        self.replica_id = uuid.uuid4().hex[:16]
        self.up = False
        """Is Redis reachable and this replica resynced? False: local state only."""
        self.replicas = config.min_replicas
        """Replicas alive at the last sync (at least ``min_replicas``): ``reserve``'s local rule divides by it."""
        prefix = config.key_prefix
        self._channel = prefix + "events"
        self._keys = {name: prefix + name for name in ("breakers", "cooldowns", "ratelimits", "replicas")}
        self._events: deque[Event] = deque(maxlen=config.max_pending_events)
        self._ok: dict[str, list[Any]] = {}
        """Per provider, successes since the last flush: [count, latency samples (at most samples_per_flush)]."""
        self._scores: dict[str, list[float]] = {}
        self._receivers: dict[str, Callable[[float], None]] = {}
        self.totals = SharedTotals(config, self.replica_id, is_up=lambda: self.up, replicas=lambda: self.replicas,
                                   lost=self._lost, publish=self._publish, kick=self._kick)
        """Spend totals and this replica's slice of each: reservations are local while a slice lasts."""
        self._openings: dict[str, tuple[float, float]] = {}
        """Per provider, (when, until) of the opening its open breaker follows (wall clock)."""
        self._applying = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: aredis.Redis | None = None
        self._sync_client: redis.Redis | None = None
        self._first_sync: asyncio.Event | None = None
        self._was_up: bool | None = None
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Start syncing and wait (at most ``timeout_s``) for the first sync, so a replica starts out with
        what the others know; without Redis it serves from local state and keeps trying."""
        self._ensure_task()
        assert self._first_sync is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_sync.wait(), self.config.timeout_s * 4)

    async def aclose(self) -> None:
        self._closed = True
        self.totals.leases.give_back()  # every unused slice goes back with the last flush
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(Exception):  # the last changes, if Redis is there to take them
                if self.up and self._client is not None:
                    await asyncio.wait_for(self._flush(self._client), self.config.timeout_s)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # bounded: shutdown must not hang on it
                await asyncio.wait_for(task, self.config.timeout_s)
        if self._sync_client is not None:
            self._sync_client.close()

    def _ensure_task(self) -> None:
        if self._task is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the first call from one starts syncing
        self._wake, self._first_sync = asyncio.Event(), asyncio.Event()
        self._task = loop.create_task(self._run(), name="llmroute-state-sync")

    def _kick(self) -> None:
        if self._wake is None:
            self._ensure_task()
        if self._wake is not None:
            self._wake.set()

    def _publish(self, event: Event) -> None:
        if not self._applying:
            self._events.append(event)
            self._kick()

    # -- the request path: local first, queued for the others ---------------------------

    def record_success(self, provider: str, latency_ms: float, started_at: float | None = None) -> None:
        stats = self._get(provider)
        cold = stats.cold_starts
        super().record_success(provider, latency_ms, started_at)
        pending = self._ok.get(provider)
        if pending is None:
            pending = self._ok[provider] = [0, []]
        pending[0] += 1
        if stats.cold_starts == cold and len(pending[1]) < self.config.samples_per_flush:
            pending[1].append(latency_ms)
        self._kick()

    def record_failure(self, provider: str, kind: str, latency_ms: float, status: int | None = None,
                       started_at: float | None = None) -> None:
        super().record_failure(provider, kind, latency_ms, status, started_at)
        self._publish(["f", provider, kind, latency_ms])

    def set_cooldown(self, provider: str, until: float) -> None:
        super().set_cooldown(provider, until)
        self._publish(["cool", provider, until])

    def ratelimit(self, provider: str) -> RateLimitWindow:
        window = self._ratelimits.get(provider)
        if window is None:
            window = self._ratelimits[provider] = SharedWindow(
                publish=lambda event, provider=provider: self._publish([event[0], provider, *event[1:]]))
        return window

    def shared_samples(self, key: str, receive: Callable[[float], None]) -> Callable[[float], None]:
        self._receivers[key] = receive
        limit = self.config.samples_per_flush

        def add(sample: float) -> None:
            receive(sample)
            pending = self._scores.setdefault(key, [])
            if len(pending) < limit:
                pending.append(sample)
                self._kick()

        return add

    def _breaker_moved(self, provider: str, state: str, reason: str) -> None:
        super()._breaker_moved(provider, state, reason)
        if self._applying:
            return
        breaker = self.breaker(provider)
        if state == OPEN:
            event = ["open", provider, to_wall(breaker.open_until), breaker.open_period_s, reason, time.time()]
            self._openings[provider] = (event[5], event[2])
            self._publish(event)
        elif state == "closed":
            self._publish(["close", provider, reason, time.time()])

    # -- spend totals: leases (state_totals) ---------------------------------------------------------

    def lease_keys(self, prefix: str) -> None:
        self.totals.lease_keys(prefix)

    def short_lived(self, prefix: str, ttl_s: float) -> None:
        self.totals.short_lived(prefix, ttl_s)

    def reserve(self, key: str, amount: float, limit: float) -> bool:
        return self.totals.reserve(key, amount, limit)

    async def areserve(self, key: str, amount: float, limit: float) -> bool:
        return await self.totals.areserve(key, amount, limit)

    def _reserve_locally(self, key: str, amount: float, limit: float) -> bool:
        return self.totals.reserve_locally(key, amount, limit)

    def settle(self, key: str, reserved: float, actual: float) -> None:
        self.totals.settle(key, reserved, actual)

    def spent(self, key: str) -> float:
        return self.totals.spent(key)

    def add_names(self, key: str, names: Iterable[str], ttl_s: float) -> None:
        if self.totals.add_names(key, names, ttl_s):
            self._kick()

    def names(self, key: str) -> frozenset[str]:
        return self.totals.names(key)

    # -- the background task -----------------------------------------------------------------

    async def _run(self) -> None:
        url = self.config.redis_url.get_secret_value()
        timeout_s = self.config.timeout_s
        while True:
            client = aredis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
            listener = aredis.Redis.from_url(url, socket_connect_timeout=timeout_s)  # pub/sub waits without limit
            try:
                await client.ping()
                pubsub = listener.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self._channel)
                await self._resync(client)
                self._client = client
                self._connected()
                await first_error(self._flush_loop(client), self._listen(pubsub), self._sync_loop(client))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001: whatever Redis does, requests go on from local state
                self._lost(exc)
            finally:
                self._client = None
                if self._first_sync is not None:
                    self._first_sync.set()
                for c in (client, listener):
                    with contextlib.suppress(Exception):
                        await c.aclose()
            await asyncio.sleep(self.config.reconnect_s)

    def _connected(self) -> None:
        url = self.config.redis_url.get_secret_value()
        if self._sync_client is None:
            timeout_s = self.config.reserve_timeout_s
            self._sync_client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        assert self._client is not None
        self.totals.connect(self._sync_client, self._client)
        self.up = True
        if self._first_sync is not None:
            self._first_sync.set()
        if self._was_up is False:
            log.warning("state backend redis is back: shared state resynced")
        self._was_up = True
        if self.on_backend_change is not None:
            self.on_backend_change(True)

    def _lost(self, exc: BaseException) -> None:
        self.up = False
        if self._was_up is not False:
            log.warning("state backend redis unreachable (%s): serving from local state until it is back",
                        type(exc).__name__)
            self._was_up = False
            if self.on_backend_change is not None:
                self.on_backend_change(False)

    async def _flush_loop(self, client: aredis.Redis) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush(client)

    def _drain(self) -> list[Event]:
        events = list(self._events)
        self._events.clear()
        for provider, (count, samples) in self._ok.items():
            events.append(["ok", provider, count, samples])
        self._ok = {}
        for key, scores in self._scores.items():
            events.append(["q", key, scores])
        self._scores = {}
        return events

    async def _flush(self, client: aredis.Redis, restore: Mapping[str, float] | None = None) -> None:
        """Send what changed in one pipeline: the message, the snapshot keys, probe claims, the rooms others
        subtract from a total, spend. ``restore``: totals to put back first where Redis lost them."""
        events = self._drain()
        counted: Callable[[list[Any] | None], None] | None = None
        try:
            pipe = client.pipeline(transaction=False)
            if events:
                pipe.publish(self._channel, orjson.dumps({"o": self.replica_id, "e": events}))
            opened = [event for event in events if self._snapshot_write(pipe, event)]
            first = len(pipe)
            claims = [self._claim(pipe, event[1], event[2]) for event in opened]
            spend = len(pipe)
            counted = await self.totals.write(pipe, restore)
            results = await pipe.execute()
        except BaseException:
            if counted is not None:
                counted(None)  # not sent: kept for the next flush
            raise
        self._claimed(claims, results[first:first + len(claims)])
        counted(results[spend:])

    def _claimed(self, claims: list[tuple[str, float]], won: list[Any]) -> None:
        for (provider, until_wall), mine in zip(claims, won, strict=True):
            if not mine:  # another replica probes: stay open until its verdict comes
                breaker = self.breaker(provider)
                breaker.hold(to_monotonic(until_wall) + breaker.settings.probe_timeout_s)

    def _snapshot_write(self, pipe: Any, event: Event) -> bool:
        """Write what a replica reconnecting later must find; True for an open breaker (its probe is claimed)."""
        kind, keys = event[0], self._keys
        if kind == "open":
            _, provider, until_wall, open_s, reason, at = event
            pipe.hset(keys["breakers"], provider, orjson.dumps([until_wall, open_s, reason, at]))
            return True
        if kind == "close":
            pipe.hdel(keys["breakers"], event[1])
        elif kind == "cool":
            pipe.hset(keys["cooldowns"], event[1], self.cooldown_until(event[1]))
        elif kind == "rl":
            pipe.hset(keys["ratelimits"], event[1], orjson.dumps(event[2:]))
        return False

    def _claim(self, pipe: Any, provider: str, until_wall: float) -> tuple[str, float]:
        """One probe per open period cluster-wide: the first replica to set this key sends it."""
        ttl_s = max(0.0, until_wall - time.time()) + self.breaker(provider).settings.probe_timeout_s
        pipe.set(f"{self.config.key_prefix}probe:{provider}:{int(until_wall * 1000)}", self.replica_id, nx=True,
                 px=max(1, int(ttl_s * 1000)))
        return provider, until_wall

    async def _listen(self, pubsub: Any) -> None:
        async for message in pubsub.listen():
            try:
                body = orjson.loads(message["data"])
                if body.get("o") == self.replica_id:
                    continue
                claims = [self._apply(event) for event in body["e"]]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("ignored a malformed state message (%s)", type(exc).__name__)
                continue
            if self._client is not None:
                await self._claim_probes(self._client, claims)

    def _apply(self, event: Event) -> tuple[str, float] | None:
        """Apply another replica's change to the local copy; an adopted open breaker is returned (to claim).

        Outcomes go through the breaker as if seen here: if they open it, that opening is this replica's
        news too. Adopted states are not sent back."""
        kind, provider = event[0], event[1]
        if kind == "need":  # another replica was refused: unused room of that total goes back
            if self.totals.leases.give_back(str(provider)):
                self._kick()
            return None
        if kind == "q":
            receive = self._receivers.get(provider)
            if receive is not None:
                for score in event[2]:
                    receive(float(score))
            return None
        if provider not in self._stats:  # another config's provider: nothing here routes to it
            return None
        if kind == "ok":
            stats = self._get(provider)
            for latency_ms in event[3]:
                self._observe(stats, float(latency_ms))
            breaker = self.breaker(provider)
            for _ in range(min(int(event[2]), MAX_REMOTE_OUTCOMES)):
                breaker.observe_remote(False)
        elif kind == "f":
            if event[2] == "timeout":
                self._observe(self._get(provider), float(event[3]))
            self.breaker(provider).observe_remote(True, str(event[2]))
        elif kind == "open":
            _, _, until_wall, open_s, reason, at = event
            breaker = self.breaker(provider)
            return self._adopt_open(provider, float(until_wall), float(open_s), str(reason), float(at))
        elif kind == "close":
            breaker = self.breaker(provider)
            if event[3] >= changed_wall(breaker):
                with self._quiet():
                    breaker.force(True, f"{event[2]} (another replica)")
        elif kind == "cool":
            InMemoryState.set_cooldown(self, provider, float(event[2]))
        elif kind == "rl":
            self._adopt_buckets(provider, event[2], event[3])
        elif kind == "sp":
            RateLimitWindow.spend(self.ratelimit(provider), int(event[2]))
        return None

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """Changes made inside are another replica's news: not sent back."""
        self._applying = True
        try:
            yield
        finally:
            self._applying = False

    def _adopt_open(self, provider: str, until_wall: float, open_s: float, reason: str,
                    at: float) -> tuple[str, float] | None:
        breaker = self.breaker(provider)
        if until_wall <= time.time() or not newer_open(breaker, self._openings.get(provider), at):
            return None
        with self._quiet():
            breaker.adopt_open(to_monotonic(until_wall), open_s, f"{reason} (another replica)")
        self._openings[provider] = (at, until_wall)
        return provider, until_wall

    def _adopt_buckets(self, provider: str, tokens: list[list[float]], requests: list[list[float]]) -> None:
        window = self.ratelimit(provider)
        window.tokens = [Bucket(float(r), to_monotonic(float(w))) for r, w in tokens]
        window.requests = [Bucket(float(r), to_monotonic(float(w))) for r, w in requests]

    async def _sync_loop(self, client: aredis.Redis) -> None:
        while True:
            await asyncio.sleep(self.config.sync_interval_s)
            await self._pull(client)
            if not self.up:  # a reservation timed out, but Redis answers again
                self._connected()
            self.totals.leases.give_back(idle=True)  # slices unused for lease_idle_s go back
            self.totals.rooms_due = True  # the others learn this replica's unused rooms
            self._kick()

    async def _pull(self, client: aredis.Redis) -> None:
        """Heal what messages missed, count the live replicas, and refresh the spend totals."""
        keys = self._keys
        now_wall = time.time()
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(keys["breakers"])
        pipe.hgetall(keys["cooldowns"])
        pipe.zadd(keys["replicas"], {self.replica_id: now_wall})
        pipe.zremrangebyscore(keys["replicas"], 0, now_wall - 3 * self.config.sync_interval_s)
        pipe.zcard(keys["replicas"])
        totals = self.totals.read(pipe)
        results = await pipe.execute()
        opened: list[tuple[str, float] | None] = []
        breakers, cooldowns, *_, replicas = results[:5]
        self.replicas = max(self.config.min_replicas, int(replicas))
        for name, raw in breakers.items():
            provider = name.decode()
            if provider in self._stats:
                until_wall, open_s, reason, at = orjson.loads(raw)
                opened.append(self._adopt_open(provider, until_wall, open_s, reason, at))
        for name, until in cooldowns.items():
            if name.decode() in self._stats:
                InMemoryState.set_cooldown(self, name.decode(), float(until))
        totals(results[5:])
        await self._claim_probes(client, opened)

    async def _claim_probes(self, client: aredis.Redis, opened: list[tuple[str, float] | None]) -> None:
        """Claim the probe of each breaker adopted open; where another replica has it, hold for its verdict."""
        opened = [o for o in opened if o is not None]
        if opened:
            pipe = client.pipeline(transaction=False)
            claims = [self._claim(pipe, provider, until_wall) for provider, until_wall in opened]
            self._claimed(claims, await pipe.execute())

    async def _resync(self, client: aredis.Redis) -> None:
        """After (re)connecting: take what the others know, then tell them what this replica knows."""
        await self._pull(client)
        wall = time.time()
        for provider, breaker in self._breakers.items():
            if breaker.state == OPEN:
                at, until_wall = self._openings.get(provider, (to_wall(breaker.changed_at), 0.0))
                self._events.append(["open", provider, until_wall or to_wall(breaker.open_until),
                                     breaker.open_period_s, breaker.last_reason, at])
        for provider, stats in self._stats.items():
            if stats.cooldown_until > wall:
                self._events.append(["cool", provider, stats.cooldown_until])
        for provider, window in self._ratelimits.items():
            if window.tokens or window.requests:
                self._events.append(["rl", provider, [[b.remaining, to_wall(b.resets_at)] for b in window.tokens],
                                     [[b.remaining, to_wall(b.resets_at)] for b in window.requests]])
        await self._flush(client, self.totals.leases.restore())  # a total Redis lost comes back from what was known
