"""Budgets: which apply to a request, what it may cost at worst, and the reservation that holds it.

Before a provider is called, the request's worst case is reserved on every budget that applies, in one
all-or-nothing step: ``RouterState.areserve`` checks and adds atomically (a lock in process, an awaited Lua
script in Redis, so the event loop never blocks on it), so concurrent requests, on one replica or several, cannot pass a limit together. After the call the
reservation is settled to what the ledger records for the request. A budget's total lives under a key per
period start, so a new period starts empty.

The worst case bounds the bill: prompt tokens (estimated, with the margin shadow evaluation uses) plus the
output cap times ``n``, at the priciest provider the request may reach; a GPU-second provider's worst case is
its ``timeout_s`` of worker time. Attempts that fail or lose a hedge are billed as well (worker time, or the
prompt), so each provider's share of that is added once per pass over them. What a budget can still be passed by: an answer billed above its
reservation (a provider that ignores ``max_tokens``, or a request with no ``max_tokens`` whose answer is
longer than the budget's ``default_max_tokens``), by that excess, once per request in flight.

A restart must not forget what was spent: ``ledger_spend`` reads each period's spend so far from the ledger
(one query per kind of budget), and ``Budgets.seed`` adds it to a budget's total the first time the budget
reserves, unless the state already holds a total for it (a shared state that outlived the process).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from .budget_period import PERIODS, Period, period_bounds, retry_after_s
from .config.budgets import BudgetConfig
from .evaluation.shadow_budget import PROMPT_MARGIN, PROMPT_SLACK_TOKENS, TIMEOUT_MARGIN
from .tokens import prompt_estimate

if TYPE_CHECKING:
    from .config import RouterConfig
    from .ledger import Store
    from .result import Attempt
    from .state import RouterState

MAX_KEY_BUDGETS = 4096
"""Key budgets (from ``llmroute keys``) remembered at once; more are rebuilt when next used."""


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    usd: float
    period: Period
    on_exhausted: str = "refuse"
    default_max_tokens: int = 4096

    @classmethod
    def from_config(cls, c: BudgetConfig) -> Budget:
        return cls(c.label, c.usd, c.period, c.on_exhausted, c.default_max_tokens)


@dataclass(frozen=True, slots=True)
class _Cost:
    """A provider's worst case as ``fixed + input * per_input + output * per_output`` US dollars."""

    fixed: float
    per_input: float
    per_output: float

    def usd(self, input_tokens: int, output_tokens: int) -> float:
        return self.fixed + input_tokens * self.per_input + output_tokens * self.per_output


@dataclass(frozen=True, slots=True)
class _Route:
    """The worst cases of the providers a request may reach, and what their failed attempts are billed per
    pass (``fixed + input * per_input``, summed): worked out once per provider list."""

    costs: tuple[_Cost, ...]
    failed: _Cost


@dataclass(frozen=True, slots=True)
class Ask:
    """What a request may cost at worst: its prompt, its output cap (None: each budget's default) and ``n``."""

    input_tokens: int
    max_tokens: int | None
    n: int = 1

    @classmethod
    def of(cls, body: Mapping[str, Any], input_tokens: int | None = None) -> Ask:
        """From an OpenAI chat or completions body the gateway has validated. ``input_tokens``: the prompt's
        estimate if the caller made one already (``tokens.prompt_estimate``), so a request is estimated once."""
        prompt = prompt_estimate(body) if input_tokens is None else input_tokens
        n = body.get("n")
        return cls(prompt, output_cap(body), n if isinstance(n, int) and n > 0 else 1)

    def output_tokens(self, budget: Budget) -> int:
        return (self.max_tokens or budget.default_max_tokens) * self.n


def output_cap(body: Mapping[str, Any]) -> int | None:
    """The request's output cap, None if it set none. With both ``max_completion_tokens`` and ``max_tokens``,
    the larger: providers differ in which one they obey, and the worst case must hold for either."""
    caps = [v for v in (body.get("max_completion_tokens"), body.get("max_tokens"))
            if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return max(caps) if caps else None


class Exhausted(Exception):
    """A budget the request's worst case does not fit in."""

    def __init__(self, budget: Budget, now_ts: float) -> None:
        super().__init__(budget.name)
        self.budget = budget
        self.retry_after_s = retry_after_s(budget.period, now_ts)

    @property
    def message(self) -> str:
        return (f"the budget '{self.budget.name}' (${self.budget.usd:g} per {self.budget.period}) is spent for this "
                f"period; it starts again in {self.retry_after_s} s")


class Reservation:
    """The amounts held on each budget for one request, released or settled exactly once."""

    __slots__ = ("_budgets", "_held", "_done")

    def __init__(self, budgets: Budgets, held: list[tuple[Budget, str, float]]) -> None:
        self._budgets, self._held, self._done = budgets, held, False

    def settle(self, cost_usd: float) -> None:
        """Replace every hold by ``cost_usd`` (0 releases them): the request's billed cost, as the ledger records it."""
        if self._done:
            return
        self._done = True
        self._budgets.release(self._held, cost_usd)

    def keep(self) -> None:
        """Count every hold as spent: the request ended where its bill cannot be known (it was cancelled)."""
        if not self._done:
            self._done = True
            for budget, key, usd in self._held:
                self._budgets.release(((budget, key, usd),), usd)


def billed_usd(attempts: Iterable[Attempt]) -> float:
    """What a request's attempts were billed (failed and hedge-cancelled ones included), as the ledger sums it."""
    return sum(a.cost_usd for a in attempts if a.cost_usd)


class Budgets:
    """The configured budgets and the reservations held against them in ``state``."""

    def __init__(self, config: RouterConfig, state: RouterState, clock: Callable[[], float] = time.time) -> None:
        self._state = state
        self._clock = clock
        state.lease_keys("budget:")  # replicas reserve budgets from slices: see ``state_leases``
        self.everything: list[Budget] = []
        self.by_tag: dict[str, list[Budget]] = {}
        self.by_key: dict[str, Budget] = {}
        for c in config.budgets:
            budget = Budget.from_config(c)
            if c.key is not None:
                self.by_key[c.key] = budget
            elif c.tag is not None:
                self.by_tag.setdefault(c.tag, []).append(budget)
            else:
                self.everything.append(budget)
        self._stored: dict[tuple[str, float, str], Budget] = {}
        self.known: dict[str, Budget] = {b.name: b for b in (*self.everything, *self.by_key.values(),
                                                             *(b for bs in self.by_tag.values() for b in bs))}
        """Every budget seen: the configured ones and the key budgets used since start (what state reports)."""
        self._reserved: dict[str, float] = {}
        self._seeds: dict[str, tuple[float, float]] = {}
        """Per budget name, (period start, spend the ledger recorded then) not yet added to the state's total."""
        self._costs = {name: _worst_case(p) for name, p in config.providers.items()}
        self._passes = 1 + config.retry_rounds
        self._routes: dict[tuple[str, ...], _Route] = {}
        self._periods: dict[tuple[str, str], tuple[float, float, str]] = {}
        """Per budget name and period, (start, end, state key) of the period last used: a key per period, not per request."""

    def now(self) -> float:
        return self._clock()

    def __bool__(self) -> bool:
        return bool(self.everything or self.by_tag or self.by_key)

    def applicable(self, key_id: str | None, key_budget: tuple[float | None, str | None] | None,
                   tags: Sequence[str]) -> list[Budget]:
        """The request's budgets: its key's (a config entry, else the one stored with the key), its tags', all traffic's."""
        found = list(self.everything)
        if key_id is not None:
            budget = self.by_key.get(key_id)
            if budget is None and key_budget is not None and key_budget[0] is not None and key_budget[1] is not None:
                budget = self._stored_budget(key_id, key_budget[0], key_budget[1])
            if budget is not None:
                found.append(budget)
        if self.by_tag:
            for tag in dict.fromkeys(tags):
                found.extend(self.by_tag.get(tag, ()))
        return found

    def _stored_budget(self, key_id: str, usd: float, period: str) -> Budget:
        cache_key = (key_id, usd, period)
        budget = self._stored.get(cache_key)
        if budget is None:
            if len(self._stored) >= MAX_KEY_BUDGETS:
                self._stored.clear()
            budget = self._stored[cache_key] = Budget(f"key:{key_id}", usd, period)  # type: ignore[arg-type]
            if len(self.known) < MAX_KEY_BUDGETS:
                self.known[budget.name] = budget
        return budget

    def worst_case_usd(self, ask: Ask, budget: Budget, providers: Iterable[str]) -> float:
        """The most the request can be billed if ``providers`` serve it: the answer at the priciest, plus
        every attempt that may fail or lose a hedge, billed all the same (a GPU-second provider's worker time up
        to its timeout, a token provider's prompt), once per pass over them (``retry_rounds``)."""
        providers = tuple(providers)
        route = self._routes.get(providers) or self._route(providers)
        output, prompt = ask.output_tokens(budget), ask.input_tokens
        answer = max((c.usd(prompt, output) for c in route.costs), default=0.0)
        return answer + route.failed.usd(prompt, 0)

    def _route(self, providers: tuple[str, ...]) -> _Route:
        costs = tuple(self._costs[p] for p in providers)
        failed = _Cost(self._passes * sum(c.fixed for c in costs), self._passes * sum(c.per_input for c in costs), 0.0)
        if len(self._routes) >= MAX_KEY_BUDGETS:
            self._routes.clear()
        route = self._routes[providers] = _Route(costs, failed)
        return route

    def state_key(self, budget: Budget, now_ts: float) -> str:
        """The state's key for the budget's current period: a new period is a new key, so it starts empty."""
        cached = self._periods.get((budget.name, budget.period))
        if cached is not None and cached[0] <= now_ts < cached[1]:
            return cached[2]
        start, end = period_bounds(budget.period, now_ts)
        key = f"budget:{budget.name}:{int(start)}"
        if len(self._periods) >= MAX_KEY_BUDGETS:
            self._periods.clear()
        self._periods[(budget.name, budget.period)] = (start, end, key)
        return key

    async def reserve(self, budgets: Sequence[Budget], ask: Ask, providers: Iterable[str]) -> Reservation:
        """Hold the request's worst case on every one of ``budgets``, or on none: raises ``Exhausted`` naming
        the first that refused, after releasing what was already held."""
        providers = tuple(providers)
        now_ts = self._clock()
        held: list[tuple[Budget, str, float]] = []
        worst: dict[int, float] = {}  # per output cap: budgets mostly share one
        for budget in budgets:
            key = self.state_key(budget, now_ts)
            output = ask.max_tokens or budget.default_max_tokens
            usd = worst.get(output)
            if usd is None:
                usd = worst[output] = self.worst_case_usd(ask, budget, providers)
            try:
                ok = await self._state.areserve(key, usd, budget.usd)
            except BaseException:  # cancelled while waiting on a shared state: give back what was held
                self.release(held, 0.0)
                raise
            if not ok:
                self.release(held, 0.0)
                raise Exhausted(budget, now_ts)
            held.append((budget, key, usd))
            self._reserved[budget.name] = self._reserved.get(budget.name, 0.0) + usd
        return Reservation(self, held)

    def seed(self, spend: LedgerSpend, stored_keys: Iterable[tuple[str, float, str]] = (),
             now_ts: float | None = None) -> None:
        """Remember what the ledger says each budget spent this period, for ``apply_seeds``. ``stored_keys``:
        (key id, usd, period) of the budgets stored with keys (``llmroute keys``), known from now on."""
        now_ts = self._clock() if now_ts is None else now_ts
        starts = {p: period_bounds(p, now_ts)[0] for p in PERIODS}
        for key_id, usd, period in stored_keys:
            if key_id not in self.by_key:
                self._stored_budget(key_id, usd, period)
        keyed = {b.name: (key_id, b) for key_id, b in self.by_key.items()}
        keyed.update({b.name: (key_id, b) for (key_id, _, _), b in self._stored.items()})
        for name, (key_id, budget) in keyed.items():
            self._seeds[name] = (starts[budget.period], spend.keys.get(key_id, {}).get(budget.period, 0.0))
        for budget in (*self.everything, *(b for bs in self.by_tag.values() for b in bs)):
            self._seeds[budget.name] = (starts[budget.period], spend.budgets.get(budget.name, 0.0))

    async def apply_seeds(self) -> None:
        """Add the remembered spend to each budget's total (at start-up, before serving), except where the state
        holds a total already: a shared state that outlived this process has counted that spend."""
        now_ts = self._clock()
        seeds, self._seeds = self._seeds, {}
        for name, (start, usd) in seeds.items():
            budget = self.known.get(name)
            if budget is None or usd <= 0 or start != period_bounds(budget.period, now_ts)[0]:
                continue  # nothing spent, or a period that has ended since
            key = self.state_key(budget, now_ts)
            await self._state.areserve(key, 0.0, budget.usd)  # a shared state reads its total into the local copy
            if self._state.spent(key) <= 0:
                self._state.settle(key, 0.0, usd)

    def release(self, held: Iterable[tuple[Budget, str, float]], cost_usd: float) -> None:
        for budget, key, usd in held:
            self._state.settle(key, usd, cost_usd)
            self._reserved[budget.name] = max(0.0, self._reserved.get(budget.name, 0.0) - usd)

    def add(self, budgets: Iterable[Budget], cost_usd: float) -> None:
        """Count spend that reserved nothing beforehand (shadow evaluation's calls) against ``budgets``."""
        now_ts = self._clock()
        for budget in budgets:
            self._state.settle(self.state_key(budget, now_ts), 0.0, cost_usd)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per budget: limit, period, spent this period (settled), reserved by this process, and what is left."""
        now_ts = self._clock()
        out = {}
        for name, budget in self.known.items():
            total = self._state.spent(self.state_key(budget, now_ts))
            reserved = min(total, self._reserved.get(name, 0.0))
            start, end = period_bounds(budget.period, now_ts)
            out[name] = {"usd": budget.usd, "period": budget.period, "period_start_ts": start, "period_end_ts": end,
                         "spent_usd": round(total - reserved, 9), "reserved_usd": round(reserved, 9),
                         "left_usd": round(max(0.0, budget.usd - total), 9), "on_exhausted": budget.on_exhausted}
        return out


def _worst_case(p: Any) -> _Cost:
    """A provider's worst case, as shadow evaluation reserves it: GPU time up to its timeout, or tokens."""
    if p.gpu_priced:
        usd_per_s = (p.price_per_gpu_second or 0.0) / (1 - p.idle_share)
        return _Cost(p.timeout_s * TIMEOUT_MARGIN * usd_per_s, 0.0, 0.0)
    price = p.routing_price
    return _Cost(PROMPT_SLACK_TOKENS * price.input / 1e6, PROMPT_MARGIN * price.input / 1e6, price.output / 1e6)


@dataclass(slots=True)
class LedgerSpend:
    """What the ledger recorded in the current periods: per key id and period, and per tag or all-traffic budget."""

    keys: dict[str, dict[str, float]]
    budgets: dict[str, float]


def ledger_spend(store: Store, budgets: Budgets, now_ts: float) -> LedgerSpend:
    """The spend each budget already has this period, by the ledger: requests' ``cost_usd`` (of the key, with
    the tag, or all), and for all-traffic budgets what shadow evaluation spent (its graded pairs' shadow and
    judge costs). One query per kind of budget, each one pass over the requests since the earliest period start."""
    from .ledger.schema import GRADED_PAIRS

    starts = {p: period_bounds(p, now_ts)[0] for p in PERIODS}
    since = min(starts.values())
    per_period = ", ".join("SUM(CASE WHEN ts >= ? THEN {col} ELSE 0 END)" for _ in PERIODS)
    period_args = tuple(starts[p] for p in PERIODS)
    keys: dict[str, dict[str, float]] = {}
    for key_id, *sums in store.fetch(
            f"SELECT key_id, {per_period.format(col='cost_usd')} FROM requests "
            "WHERE ts >= ? AND key_id IS NOT NULL AND cost_usd IS NOT NULL GROUP BY key_id", (*period_args, since)):
        keys[key_id] = {p: float(v or 0.0) for p, v in zip(PERIODS, sums, strict=True)}
    spent: dict[str, float] = {}
    tagged = [b for bs in budgets.by_tag.values() for b in bs]
    if tagged:
        tags = [tag for tag, bs in budgets.by_tag.items() for _ in bs]
        columns = ", ".join("SUM(CASE WHEN ts >= ? AND tags LIKE ? ESCAPE '!' THEN cost_usd ELSE 0 END)" for _ in tagged)
        args = [a for b, tag in zip(tagged, tags, strict=True) for a in (starts[b.period], _tag_pattern(tag))]
        row = store.fetch(f"SELECT {columns} FROM requests WHERE ts >= ?", (*args, since))[0]
        spent.update({b.name: float(v or 0.0) for b, v in zip(tagged, row, strict=True)})
    if budgets.everything:
        row = store.fetch(f"SELECT {per_period.format(col='COALESCE(cost_usd, 0)')} FROM requests WHERE ts >= ?",
                          (*period_args, since))[0]
        total = {p: float(v or 0.0) for p, v in zip(PERIODS, row, strict=True)}
        if store.has(GRADED_PAIRS):
            col = "COALESCE(shadow_cost_usd, 0) + COALESCE(judge_cost_usd, 0)"
            row = store.fetch(f"SELECT {per_period.format(col=col)} FROM graded_pairs WHERE ts >= ? AND source = ?",
                              (*period_args, since, "shadow"))[0]
            total = {p: total[p] + float(v or 0.0) for p, v in zip(PERIODS, row, strict=True)}
        spent.update({b.name: total[b.period] for b in budgets.everything})
    return LedgerSpend(keys, spent)


def _tag_pattern(tag: str) -> str:
    """A LIKE pattern for a request whose stored tags (a JSON list of strings) hold ``tag`` exactly."""
    quoted = orjson.dumps(tag).decode()
    return "%" + quoted.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"
