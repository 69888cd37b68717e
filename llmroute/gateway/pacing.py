"""Budget pacing at the gateway: one ``PacingController`` per budget with ``pacing: true``, fed in the background.

Every ``pacing_update_s`` a task re-plans each paced budget from its spend this period (the budget's total in
the state, as ``BudgetGate`` keeps it) and its tokens this period (counted here as requests finish, into the
state's totals, so with a shared state every replica steers from the cluster's numbers). The request path only
reads: ``applicable`` finds the paced budgets covering a request (all traffic, a tag, or a key, as budgets
apply), and the lowest of their shares goes to the strategy as ``RouteRequest.strong_share``. Without a paced
budget the gateway never calls in here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..budget_period import SpendPath, period_bounds
from ..budgets import Budget, Budgets
from ..config.budgets import BudgetConfig, pacing_prices, pacing_problems
from ..errors import ConfigError
from ..pacing import PacingController, PacingState
from ..strategies import QualityAware, RoutingStrategy, StrongShare

if TYPE_CHECKING:
    from ..ledger import RequestContext
    from ..result import Attempt, RouteResult
    from ..router import LLMRouter
    from .auth import KeyIdentity

log = logging.getLogger("llmroute.gateway")

Settle = Callable[["RouteResult | None", "list[Attempt]"], None]


def billed_tokens(attempts: Iterable[Attempt]) -> int:
    """The tokens a request's billed attempts used: the volume its spend paid for (failed and hedge-losing
    attempts that were billed included, as in the spend)."""
    return sum(a.prompt_tokens + a.completion_tokens for a in attempts if a.cost_usd)


class Paced:
    """One paced budget: its controller, the share requests in its scope get now, and its token counter."""

    __slots__ = ("budget", "config", "controller", "share", "_period")

    def __init__(self, config: BudgetConfig, budget: Budget, controller: PacingController) -> None:
        self.config = config
        self.budget = budget
        self.controller = controller
        self.share = StrongShare(controller.share, budget.name)
        """Replaced (never mutated) at each update: the request path reads one attribute."""
        self._period: tuple[float, float, str] = (0.0, 0.0, "")

    @property
    def name(self) -> str:
        return self.budget.name

    def tokens_key(self, now_ts: float) -> str:
        """The state total holding this budget's tokens in the period of ``now_ts`` (a new period starts at 0)."""
        start, end, key = self._period
        if not start <= now_ts < end:
            start, end = period_bounds(self.budget.period, now_ts)
            key = f"pacing-tokens:{self.budget.name}:{int(start)}"
            self._period = (start, end, key)
        return key


def controller_for(config: BudgetConfig, *, weak_usd_per_m: float, strong_usd_per_m: float,
                   clock: Callable[[], float] = time.time) -> PacingController:
    """The controller a paced budget's config asks for (the defaults the benchmark measured for the rest)."""
    return PacingController(
        config.usd, config.period, weak_usd_per_m=weak_usd_per_m, strong_usd_per_m=strong_usd_per_m,
        min_strong_share=config.min_strong_share, max_strong_share=config.max_strong_share,
        path=SpendPath(config.daily_profile) if config.daily_profile is not None else None,
        horizon_s=config.pacing_horizon_s, headroom=config.pacing_headroom, clock=clock)


class PacingGate:
    """The paced budgets of a gateway: which cover a request, their shares, their token counts, their updates."""

    def __init__(self, router: LLMRouter, budgets: Budgets, *, clock: Callable[[], float] = time.time) -> None:
        config = router.config
        problems = pacing_problems(config)
        if problems:
            key, problem = problems[0]
            raise ConfigError(problem, file=config.source, key=key)
        self._router = router
        self._state = router.state
        self._budgets = budgets
        self._clock = clock
        self.everything: list[Paced] = []
        self.by_tag: dict[str, list[Paced]] = {}
        self.by_key: dict[str, Paced] = {}
        self.paced: list[Paced] = []
        paced = [c for c in config.budgets if c.pacing]
        if paced:
            _, _, strong_usd, weak_usd = pacing_prices(config)
            for c in paced:
                one = Paced(c, budgets.known[c.label], controller_for(
                    c, weak_usd_per_m=weak_usd, strong_usd_per_m=strong_usd, clock=clock))
                self.paced.append(one)
                if c.key is not None:
                    self.by_key[c.key] = one
                elif c.tag is not None:
                    self.by_tag.setdefault(c.tag, []).append(one)
                else:
                    self.everything.append(one)
        self.update_s = min((c.pacing_update_s for c in paced), default=5.0)
        self._counted_keys: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def __bool__(self) -> bool:
        return bool(self.paced)

    # -- the request path ----------------------------------------------------------------

    def applicable(self, key: KeyIdentity | None, context: RequestContext | None) -> Sequence[Paced]:
        """The paced budgets covering a request, as ``Budgets.applicable`` finds budgets: all traffic's, its
        key's, its tags' (the key's tags when there is no context)."""
        found: Sequence[Paced] = self.everything
        if key is not None and self.by_key:
            mine = self.by_key.get(key.key_id)
            if mine is not None:
                found = [*found, mine]
        if self.by_tag:
            tags = context.tags if context is not None else (key.tags if key is not None else ())
            for tag in dict.fromkeys(tags):
                more = self.by_tag.get(tag)
                if more:
                    found = [*found, *more]
        return found

    @staticmethod
    def share(paced: Sequence[Paced]) -> StrongShare | None:
        """The share for a request several paced budgets cover: the lowest (each budget must hold)."""
        if not paced:
            return None
        if len(paced) == 1:
            return paced[0].share
        return min((p.share for p in paced), key=lambda s: s.share)

    def count(self, paced: Sequence[Paced], attempts: Iterable[Attempt]) -> None:
        """A finished request's billed tokens, into each covering budget's count for this period."""
        tokens = billed_tokens(attempts)
        if tokens:
            now_ts = self._clock()
            for p in paced:
                self._state.settle(p.tokens_key(now_ts), 0.0, tokens)

    def counting(self, paced: Sequence[Paced], settle: Settle | None) -> Settle:
        """``settle`` (a stream's end callback), counting the stream's tokens too."""

        def settled(result: RouteResult | None, attempts: list[Attempt]) -> None:
            if settle is not None:
                settle(result, attempts)
            self.count(paced, attempts)

        return settled

    # -- updates (off the request path) ----------------------------------------------------

    def update(self, now: float | None = None) -> dict[str, PacingState]:
        """Re-plan every paced budget from its spend and tokens this period; ``now`` defaults to the clock."""
        now_ts = self._clock() if now is None else now
        floor = self._quality_floor()
        reserved = {name: b["reserved_usd"] for name, b in self._budgets.snapshot().items()} if self.paced else {}
        states = {}
        for p in self.paced:
            total = self._state.spent(self._budgets.state_key(p.budget, now_ts))
            spend_usd = max(0.0, total - reserved.get(p.name, 0.0))  # settled spend: holds in flight are worst cases
            key = p.tokens_key(now_ts)
            if self._counted_keys.get(p.name) != key:  # a shared state refreshes only the totals it holds
                self._state.settle(key, 0.0, 0.0)
                self._counted_keys[p.name] = key
            states[p.name] = p.controller.update(spend_usd, self._state.spent(key), now=now_ts,
                                                 quality_floor_share=floor)
            p.share = StrongShare(p.controller.share, p.name)
        return states

    def _quality_floor(self) -> float | None:
        """The strong share graded pairs say keeps quality_aware's ``min_quality``; None when not measured."""
        if self._router.config.quality_aware.target.min_quality is None:
            return None
        strategy = self._router.strategy(RoutingStrategy.QUALITY_AWARE)  # built at start-up when min_quality is set
        return strategy.measured_share if isinstance(strategy, QualityAware) else None

    def states(self) -> dict[str, dict[str, Any]]:
        """Each paced budget's last state (``PacingState.to_dict``), for ``/router/state``."""
        return {p.name: p.controller.state.to_dict() for p in self.paced if p.controller.state is not None}

    def start(self) -> None:
        """Plan once now (so the state shows pacing from the start), then every ``update_s`` in the background."""
        if not self.paced or self._task is not None:
            return
        self.update()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="llmroute-pacing")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.update_s)
            try:
                self.update()
            except Exception:  # noqa: BLE001: a failed update keeps the last share; requests go on
                log.exception("budget pacing: update failed; the shares stay as they were")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
