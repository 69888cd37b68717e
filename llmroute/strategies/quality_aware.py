"""quality_aware: send a prompt to the strong provider only when a local model says it needs it."""

from __future__ import annotations

import bisect
import functools
from collections import deque
from typing import TYPE_CHECKING

from ..quality.features import prompt_text
from ..config.enums import RoutingStrategy
from .base import Route, RouteRequest, StrategyBase

if TYPE_CHECKING:
    from ..config import RouterConfig
    from ..quality.model import QualityRouter
    from ..state import RouterState

MIN_ADAPT_SAMPLES = 20


@functools.lru_cache(maxsize=8)
def load_quality_model(path: str | None) -> QualityRouter:
    """One loaded model per file per process, however many routers use it."""
    from ..quality.model import QualityRouter

    return QualityRouter.load(path)


def target_share(config: RouterConfig, model: QualityRouter) -> float:
    """The share of requests to send to strong for the configured target."""
    target = config.quality_aware.target
    if target.strong_share is not None:
        return target.strong_share
    if target.min_quality is not None:
        return model.share_for_quality(target.min_quality)
    strong, weak = config.quality_pair()
    price_strong, price_weak = (_blended(config, strong), _blended(config, weak))
    if price_strong <= price_weak:
        return 1.0
    assert target.max_price_per_m is not None
    return min(1.0, max(0.0, (target.max_price_per_m - price_weak) / (price_strong - price_weak)))


def _blended(config: RouterConfig, provider: str) -> float:
    price = config.providers[provider].routing_price
    return (price.input + price.output) / 2


class ScoreWindow:
    """The last ``size`` scores, kept sorted, so the threshold follows the traffic actually seen.

    A model's quantiles describe its training prompts; a team's traffic is something else. Once
    ``MIN_ADAPT_SAMPLES`` scores are in, the threshold is the window's own quantile, so the
    configured share of strong calls holds on the live mix.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []

    def add(self, score: float) -> None:
        if self.size <= 0:
            return
        self._recent.append(score)
        bisect.insort(self._sorted, score)
        if len(self._recent) > self.size:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]

    def threshold(self, strong_share: float) -> float | None:
        """The score at or above which ``strong_share`` of the window lies; None until warmed up."""
        n = len(self._sorted)
        if n < MIN_ADAPT_SAMPLES or not 0.0 < strong_share < 1.0:
            return None
        return self._sorted[min(n - 1, int((1.0 - strong_share) * n))]


class QualityAware(StrategyBase):
    """Scores the prompt; at or above the threshold: strong first, else weak first. The other follows
    as fallback, then every other provider by price, so resilience is unchanged. A request's
    ``strong_share`` (budget pacing) replaces the configured share for that request's threshold."""

    name = RoutingStrategy.QUALITY_AWARE

    def __init__(self, config: RouterConfig, state: RouterState) -> None:
        super().__init__(config, state)
        self.model = load_quality_model(config.quality_aware.model)
        self.strong, self.weak = config.quality_pair()
        self.strong_share = target_share(config, self.model)
        self.measured_share: float | None = None
        """The share graded pairs measured for ``min_quality`` (set by the router at start-up), else None."""
        self.model_threshold = self.model.threshold_for_share(self.strong_share)
        self.window = ScoreWindow(config.quality_aware.adapt_window)
        self._add_score = state.shared_samples(f"scores:{self.strong}>{self.weak}", self.window.add)
        """Adds a score to the window, and (with a shared state) to every replica's: the threshold follows the
        whole cluster's traffic."""
        typical = RouteRequest(input_tokens=500, output_tokens=config.expected_output_tokens)
        rest = sorted((n for n in config.providers if n not in (self.strong, self.weak)),
                      key=lambda n: self.expected_cost_usd(n, typical))
        self.orders = {"strong": [self.strong, self.weak, *rest], "weak": [self.weak, self.strong, *rest]}
        """The provider order for each tier: the chosen one, the other, then the rest by price."""
        if self.strong == self.weak:  # a single provider: nothing to choose
            self.orders = {"strong": [self.strong, *rest], "weak": [self.strong, *rest]}

    def set_strong_share(self, share: float, *, measured: bool = False) -> None:
        """Send ``share`` of requests to strong from now on (a share measured on this traffic, say); the
        model's threshold follows, and the adaptive window keeps the new share on live traffic.
        ``measured``: the share graded pairs say keeps ``min_quality`` (budget pacing never goes below it)."""
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"strong share must be between 0 and 1, got {share}")
        self.strong_share = share
        self.model_threshold = self.model.threshold_for_share(share)
        self.measured_share = share if measured else None

    def threshold(self, strong_share: float | None = None) -> float:
        """The live threshold for ``strong_share`` (default: the configured one): the window's quantile once
        warmed up, the model's before."""
        if strong_share is None:
            adaptive = self.window.threshold(self.strong_share)
            return self.model_threshold if adaptive is None else adaptive
        adaptive = self.window.threshold(strong_share)  # one index into the sorted window: cheap per request
        return self.model.threshold_for_share(strong_share) if adaptive is None else adaptive

    def route(self, request: RouteRequest) -> Route:
        text = prompt_text(request.messages) if request.messages is not None else request.prompt or ""
        paced = request.strong_share
        return self.decide(self.model.score(text), None if paced is None else paced.share)

    def decide(self, score: float, strong_share: float | None = None) -> Route:
        """The route for a prompt with this score (``replay`` re-decides logged scores with it);
        ``strong_share`` overrides the configured share (a paced budget's)."""
        decision = "strong" if score >= self.threshold(strong_share) else "weak"
        self._add_score(score)
        return Route(list(self.orders[decision]), quality_score=score, decision=decision)

    def order(self, request: RouteRequest) -> list[str]:
        return self.route(request).order
