"""quality_aware's ``min_quality`` from the measured curve: the strong share graded pairs say is enough.

Judged by the retained quality's interval LOW bound, not the point estimate: with few or noisy pairs the
interval is wide and the router sends more to the strong tier, not less.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..ledger.pairs import GradedPair
from ..quality.retained import Estimate, routed_estimate, share_for_quality


@dataclass(frozen=True, slots=True)
class MeasuredShare:
    """quality_aware's strong share chosen from graded pairs, with the figures behind it."""

    share: float
    estimate: Estimate | None
    """Retained quality at that share, re-deciding the logged scores."""
    pairs: int
    graders: tuple[str, ...]


def measured_share(pairs: Sequence[GradedPair], min_quality: float, min_pairs: int, *,
                   providers: tuple[str, str] | None = None) -> MeasuredShare | None:
    """The smallest strong share whose retained quality, at the interval's LOW bound, reaches ``min_quality``,
    from graded pairs with a quality score (quality_aware's shadowed requests, ``quality collect``'s prompts);
    None with fewer than ``min_pairs`` of them (or none enough).

    ``providers`` (strong, weak): only pairs of that reference and candidate count. Pairs measured on another
    provider pair say nothing about this one, and a ledger keeps them after the config changes."""
    usable = [p for p in pairs if p.quality_score is not None and p.reference_grade is not None
              and p.candidate_grade is not None
              and (providers is None or (p.reference_provider, p.candidate_provider) == providers)]
    if len(usable) < min_pairs:
        return None
    scores = [p.quality_score for p in usable]
    candidate = [p.candidate_grade for p in usable]
    reference = [p.reference_grade for p in usable]
    share = share_for_quality(scores, candidate, reference, min_quality)
    if share is None:
        return None
    estimate = routed_estimate(scores, candidate, reference, share)
    return MeasuredShare(share, estimate, len(usable), tuple(sorted({p.grader for p in usable})))
