"""The drift alarm read from a ledger alone: the gateway's ``DriftWatch`` rule over the same pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..ledger import Store
from ..quality.retained import retained
from ..quality_report import DEFAULT_MIN_PAIRS, load_pairs
from .live import drift_state

if TYPE_CHECKING:
    from ..config import RouterConfig

DEFAULT_WINDOW = 1000
"""``shadow.window`` when no config is given."""


def ledger_drift(store: Store, config: RouterConfig | None) -> dict[str, Any]:
    """Retained quality over the latest ``shadow.window`` live pairs of the configured (reference, candidate)
    pair, and whether the alarm holds, as a gateway seeded from this ledger would compute it."""
    size = config.shadow.window if config is not None else DEFAULT_WINDOW
    min_pairs = config.shadow.min_pairs if config is not None else DEFAULT_MIN_PAIRS
    alert_below = config.shadow.alert_below if config is not None else None
    pairs = load_pairs(store, with_text=False, latest=size)
    if config is not None:
        reference, candidate = config.shadow_pair()
    else:  # no config: the pair most of the latest live pairs measured
        live = [(p.reference_provider, p.candidate_provider) for p in pairs if p.source == "shadow"]
        reference, candidate = max(set(live), key=live.count) if live else ("", "")
    # The pairs DriftWatch.seed keeps: live ones, of this provider pair, both grades known; the latest ``size``.
    kept = [(p.served_grade, p.reference_grade) for p in sorted(pairs, key=lambda p: p.ts)
            if p.source == "shadow" and (p.reference_provider, p.candidate_provider) == (reference, candidate)
            and p.served_grade is not None and p.reference_grade is not None][-size:]
    estimate = retained([s for s, _ in kept], [r for _, r in kept]) if kept else None
    return drift_state(False, alert_below, min_pairs,
                       None if estimate is None else (estimate.value, estimate.low, estimate.high, estimate.pairs))
