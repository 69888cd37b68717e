"""Budgets at the gateway: hold a request's worst case before routing, settle it after, and seed the totals.

``BudgetGate.hold`` reserves on every budget that applies (awaited: with Redis state the atomic check is a
round trip that must not block the event loop). An exhausted ``cheapest`` budget sends the request to the
cheapest provider alone, reserved again at that provider's worst case; otherwise ``Exhausted`` reaches the
caller, which answers 429 ``budget_exceeded``. ``BudgetGate.start`` runs before serving: it reads each
budget's spend so far this period from the ledger, so a restart does not give a budget back.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ..budgets import Ask, Budgets, Exhausted, Reservation, billed_usd, ledger_spend
from ..ledger import RequestContext
from ..result import Attempt, RouteResult
from ..router import LLMRouter
from ..strategies import RouteRequest, RoutingStrategy
from .auth import KeyHold, KeyIdentity, KeyLimiter

log = logging.getLogger("llmroute.gateway")


class BudgetGate:
    """The configured budgets (and those stored with keys) as the gateway applies them to requests."""

    def __init__(self, router: LLMRouter) -> None:
        self.router = router
        self.budgets = Budgets(router.config, router.state)  # keys made with a budget may come at any time
        self._cheap_routers: dict[str, LLMRouter] = {}  # per provider, a router with it alone: for ``cheapest``
        self.needs_tags = bool(self.budgets.by_tag)
        if router.shadow is not None and self.budgets.everything:
            self._count_shadow_spend(router.shadow)

    def applies(self, key: KeyIdentity | None) -> bool:
        """Could any budget hold this request? (A cheap test, so requests without budgets pay nothing more.)"""
        return bool(self.budgets) or (key is not None and key.stored is not None
                                      and key.stored.settings.budget_usd is not None)

    async def hold(self, key: KeyIdentity | None, body: dict[str, Any], context: RequestContext | None,
                   strategy: str, input_tokens: int | None = None) -> tuple[Reservation | None, LLMRouter, str]:
        """Reserve the request's worst case on every budget that applies: the reservation, and the router and
        strategy that serve it. Raises ``Exhausted`` when it does not fit (nor, for ``cheapest``, at the
        cheapest provider). ``input_tokens``: the prompt's estimate (``tokens.prompt_estimate``) if the caller
        has it already, so the prompt is estimated once per request."""
        stored = key.stored.settings if key is not None and key.stored is not None else None
        tags = context.tags if context is not None else (key.tags if key is not None else ())
        budgets = self.budgets.applicable(key.key_id if key is not None else None,
                                          (stored.budget_usd, stored.budget_period) if stored else None, tags)
        if not budgets:
            return None, self.router, strategy
        ask = Ask.of(body, input_tokens)
        try:
            return await self.budgets.reserve(budgets, ask, self.router.providers), self.router, strategy
        except Exhausted as exc:
            if exc.budget.on_exhausted != "cheapest":
                raise
        cheapest = self.router.strategy(RoutingStrategy.COST_OPTIMIZED).order(
            RouteRequest(ask.input_tokens, ask.max_tokens or self.router.config.expected_output_tokens))[0]
        reservation = await self.budgets.reserve(budgets, ask, (cheapest,))
        return reservation, self._cheap_router(cheapest), RoutingStrategy.COST_OPTIMIZED.value

    def _cheap_router(self, provider: str) -> LLMRouter:
        """A router with ``provider`` as its only provider, sharing this one's state and ledger."""
        cheap = self._cheap_routers.get(provider)
        if cheap is None:
            config = self.router.config
            only = config.providers[provider]
            only = only.model_copy(update={"health_check": None,  # the main router checks it already
                                           "cold_start": only.cold_start.model_copy(update={"keep_warm_s": None})})
            cut = config.model_copy(update={"providers": {provider: only}, "balanced_weights": None,
                                            "quality_aware": type(config.quality_aware)(),
                                            "shadow": config.shadow.model_copy(update={"rate": 0.0})})
            ledger = self.router.ledger if self.router.ledger is not None else False
            cheap = self._cheap_routers[provider] = LLMRouter(RoutingStrategy.COST_OPTIMIZED, cut,
                                                              state=self.router.state, ledger=ledger)
        return cheap

    def _count_shadow_spend(self, shadow: Any) -> None:
        """What shadow evaluation spends counts against the all-traffic budgets too (after the fact: it keeps
        its own daily cap, ``shadow.max_usd_per_day``)."""
        budgets, counted = self.budgets, shadow.on_spend

        def on_spend(kind: str, usd: float) -> None:
            counted(kind, usd)
            budgets.add(budgets.everything, usd)

        shadow.on_spend = on_spend

    async def start(self) -> None:
        """Before serving: add what the ledger recorded this period to each budget (read in a thread). A
        ledger that cannot be read: one warning, and the budgets start from zero."""
        ledger = self.router.ledger
        if ledger is None:
            return
        try:
            spend, stored = await asyncio.to_thread(self._read_ledger, ledger.store)
        except Exception as exc:  # noqa: BLE001: an unreadable ledger must not stop the gateway
            log.warning("budget spend could not be read from the ledger (%s: %s); budgets start this period from "
                        "zero in this process", type(exc).__name__, str(exc).split("\n")[0])
            return
        self.budgets.seed(spend, stored)
        await self.budgets.apply_seeds()

    def _read_ledger(self, store: Any) -> tuple[Any, list[tuple[str, float, str]]]:
        from ..keys import GatewayKeys

        reader = store.reader()
        try:
            keys, _ = GatewayKeys(reader).load()
            stored = [(k.name, k.settings.budget_usd, k.settings.budget_period) for k in keys.values()
                      if k.settings.budget_usd is not None and k.settings.budget_period is not None]
            return ledger_spend(reader, self.budgets, self.budgets.now()), stored
        finally:
            reader.close()

    async def aclose(self) -> None:
        for cheap in self._cheap_routers.values():
            await cheap.aclose()


def settle_request(limiter: KeyLimiter, key: KeyIdentity | None, tokens: KeyHold, held: Reservation | None,
           result: RouteResult | None, attempts: list[Attempt]) -> None:
    """A finished request's key tokens (what it used) and budget holds (what it was billed, as the ledger records)."""
    if key is not None:
        limiter.settle(key, tokens, result.total_tokens if result is not None else 0)
    if held is not None:
        held.settle(billed_usd(attempts))
