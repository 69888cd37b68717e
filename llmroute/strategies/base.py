"""The interface every routing strategy implements.

``RoutingStrategy`` lives in ``llmroute.config.enums`` (the config validates it); it is re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..config.enums import RoutingStrategy, unknown_strategy_message

__all__ = ["Route", "RouteRequest", "RoutingStrategy", "Strategy", "StrategyBase", "StrongShare",
           "unknown_strategy_message"]

if TYPE_CHECKING:
    from ..config import RouterConfig
    from ..state import RouterState


@dataclass(frozen=True, slots=True)
class StrongShare:
    """A share of strong calls imposed on a request from outside its strategy: a paced budget's.

    quality_aware turns it into a score threshold, balanced into a strong/weak split that is exact over
    consecutive requests with the same ``scope``; the other strategies ignore it (they have no share to move).
    """

    share: float
    """In [0, 1]: the fraction of requests in ``scope`` that should go to the strong provider."""
    scope: str
    """Who the share is for (a paced budget's name): requests with one scope share one split counter."""


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What a strategy may look at: the request's expected size, never its secrets."""

    input_tokens: int
    output_tokens: int
    prompt: str | None = None
    """A completions request's prompt, or a caller's text to route on."""
    messages: Sequence[Mapping[str, Any]] | None = None
    """A chat request's messages, as sent: a strategy that reads the prompt picks its text from them,
    so the request path does no text work for strategies that do not."""
    strong_share: StrongShare | None = None
    """Overrides the strategy's own share of strong calls for this request (budget pacing); None: its own."""


@dataclass(frozen=True, slots=True)
class Route:
    """A strategy's decision: the provider order, and for per-prompt strategies why."""

    order: list[str]
    quality_score: float | None = None
    """quality_aware: the probability that the prompt needs the strong provider."""
    decision: str | None = None
    """quality_aware: ``strong`` or ``weak``, the tier the score chose."""


class Strategy(Protocol):
    """Turns a request into an ordered list of provider names.

    The first name is the first choice, the rest the fallback order. Every
    configured provider appears exactly once, so the cascade can reach all of them.
    """

    name: RoutingStrategy

    def order(self, request: RouteRequest) -> list[str]: ...

    def route(self, request: RouteRequest) -> Route: ...


class StrategyBase:
    """Shared constructor: strategies read the config and the shared state, nothing else."""

    name: RoutingStrategy

    def __init__(self, config: RouterConfig, state: RouterState) -> None:
        self.config = config
        self.state = state

    def order(self, request: RouteRequest) -> list[str]:
        raise NotImplementedError

    def route(self, request: RouteRequest) -> Route:
        """The decision the router acts on; per-prompt strategies add their score to it."""
        return Route(self.order(request))

    def expected_cost_usd(self, provider: str, request: RouteRequest) -> float:
        price = self.config.providers[provider].routing_price
        return (request.input_tokens * price.input + request.output_tokens * price.output) / 1e6

    def latency_ms(self, provider: str) -> float:
        return self.state.latency_estimate_ms(provider)
