"""The daily cap on what measuring quality spends: shadow calls and judge calls together.

Every call reserves its worst case before it is sent and settles to its bill after, atomically in
the router's state, so concurrent calls can never pass the cap together. The worst case must bound
the bill, whatever the provider does:

- priced by tokens: the prompt (estimated, with a margin for other tokenizers) and the output cap the
  call is sent with;
- priced by GPU seconds: the call's timeout, since the worker's time is what is billed and a slow or
  cold worker can take all of it;
- a provider that bills past that once (it ignored ``max_tokens``, say) has its later reservations
  scaled by the largest overrun seen, so it cannot do so again unbudgeted.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import RouterConfig
    from ..state import RouterState

PROMPT_MARGIN = 1.25
"""Reserved prompt tokens over the estimate: token counts differ between tokenizers, and the budget must hold."""
PROMPT_SLACK_TOKENS = 16
"""Added to every reserved prompt: chat templates add a few tokens per message."""
TIMEOUT_MARGIN = 1.1
"""A GPU-second call is reserved at this times its timeout: reading the answer ends a little after it."""


def utc_day(ts: float | None = None) -> int:
    """Whole UTC days since the epoch: the period of the daily budget."""
    return int((time.time() if ts is None else ts) // 86400)


class ShadowBudget:
    """This process's share of ``shadow.max_usd_per_day``, less what the ledger says was spent today."""

    def __init__(self, config: RouterConfig, state: RouterState) -> None:
        self.config = config
        self._state = state
        self.workers = 1
        self._seed_day, self._seed_usd = utc_day(), 0.0
        self._overrun: dict[str, float] = {}
        """Per provider, the largest bill seen over its reservation (1.0 until one is)."""

    def split(self, workers: int) -> None:
        """Each of ``workers`` gateway processes gets an equal share of the cap (and of today's spend)."""
        self.workers = max(1, workers)

    def seed(self, spent_today_usd: float) -> None:
        """What the ledger says measuring spent today (before this process started)."""
        self._seed_day, self._seed_usd = utc_day(), spent_today_usd

    @property
    def cap_usd(self) -> float:
        return self.config.shadow.max_usd_per_day / self.workers

    def _seeded_usd(self, day: int) -> float:
        return self._seed_usd / self.workers if day == self._seed_day else 0.0

    def _key(self) -> tuple[str, float]:
        """Today's key in the state and this process's limit on it."""
        day = utc_day()
        return f"shadow-usd:{day}", self.cap_usd - self._seeded_usd(day)

    def left_usd(self) -> float:
        key, limit = self._key()
        return limit - self._state.spent(key)

    def spent_today_usd(self) -> float:
        """This process's spend today, reservations in flight included, and its share of the ledger's."""
        key, _ = self._key()
        return self._state.spent(key) + self._seeded_usd(utc_day())

    def worst_case_usd(self, provider: str, input_tokens: int, output_tokens: int, timeout_s: float) -> float:
        """The most a call to ``provider`` can be billed: ``output_tokens`` must be the cap it is sent with."""
        settings = self.config.providers[provider]
        if settings.gpu_priced:
            usd_per_s = (settings.price_per_gpu_second or 0.0) / (1 - settings.idle_share)
            usd = timeout_s * TIMEOUT_MARGIN * usd_per_s
        else:
            price = settings.routing_price
            usd = ((input_tokens * PROMPT_MARGIN + PROMPT_SLACK_TOKENS) * price.input
                   + output_tokens * price.output) / 1e6
        return usd * self._overrun.get(provider, 1.0)

    def reserve(self, usd: float) -> str | None:
        """Reserve ``usd`` against today's budget: the key to settle it on, None if it does not fit."""
        key, limit = self._key()
        return key if self._state.reserve(key, usd, limit) else None

    def settle(self, key: str, provider: str, reserved_usd: float, billed_usd: float) -> None:
        """Replace a reservation by the bill; a bill past it makes ``provider``'s later reservations larger."""
        self._state.settle(key, reserved_usd, billed_usd)
        if reserved_usd > 0 and billed_usd > reserved_usd:
            self._overrun[provider] = max(self._overrun.get(provider, 1.0),
                                          self._overrun.get(provider, 1.0) * billed_usd / reserved_usd)
