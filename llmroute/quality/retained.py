"""Retained quality from graded pairs, with a bootstrap confidence interval.

Retained quality is a ratio of means: the mean grade of the answers served over the mean grade
the reference (strong) tier gets on the same prompts. Its interval is the percentile bootstrap over
pairs: resample the pairs with replacement, recompute the ratio, and take the middle
``confidence`` share of the resampled ratios. A resample keeps each pair's two grades together,
so the correlation between them (the same prompt is easy or hard for both tiers) is respected.

The same resamples (same ``seed``, same number of pairs) give every estimate here, so the intervals
of one report are consistent with each other and the same ledger always gives the same figures.

Counterfactual splits re-use the pairs: a prompt-blind split sending share ``f`` to the reference
keeps ``f + (1 - f) * mean(candidate) / mean(reference)``; a split by quality_aware's logged score
sends the top ``f`` of the pairs by score to the reference, as ``metrics.curve`` does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .metrics import GRID, curve

_CELLS = 1 << 22
"""Resampled pair slots drawn per block: bounds the memory of a bootstrap (about 100 MB) whatever the pair count."""


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate and its interval, from ``pairs`` graded pairs."""

    value: float
    low: float
    high: float
    pairs: int

    def to_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high, "pairs": self.pairs}


def retained(served: Sequence[float | None], reference: Sequence[float | None], *, confidence: float = 0.95,
             resamples: int = 2000, seed: int = 0) -> Estimate | None:
    """mean(served) / mean(reference) over the pairs with both grades. None with no such pair, or when
    every reference grade is 0 (nothing to retain a share of)."""
    return _ratio(*_complete(served, reference), confidence, resamples, seed)


def split_estimate(candidate: Sequence[float | None], reference: Sequence[float | None], reference_share: float, *,
                   confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> Estimate | None:
    """Quality kept by a prompt-blind split sending ``reference_share`` of requests to the reference tier."""
    f = _share(reference_share)
    ratio = _ratio(*_complete(candidate, reference), confidence, resamples, seed)
    return None if ratio is None else _blend(f, ratio)


def split_curve(candidate: Sequence[float | None], reference: Sequence[float | None], *, confidence: float = 0.95,
                resamples: int = 2000, seed: int = 0) -> list[Estimate] | None:
    """``split_estimate`` at every share of ``metrics.GRID``."""
    ratio = _ratio(*_complete(candidate, reference), confidence, resamples, seed)
    return None if ratio is None else [_blend(f, ratio) for f in GRID]


def routed_estimate(scores: Sequence[float | None], candidate: Sequence[float | None],
                    reference: Sequence[float | None], reference_share: float, *, confidence: float = 0.95,
                    resamples: int = 2000, seed: int = 0) -> Estimate | None:
    """Quality kept when the ``reference_share`` of pairs with the highest scores goes to the reference
    tier (quality_aware re-deciding its logged scores at another target). Rounded to the 0.01 grid."""
    f = _share(reference_share)
    points = routed_curve(scores, candidate, reference, confidence=confidence, resamples=resamples, seed=seed)
    return None if points is None else points[round(f * 100)]


def routed_curve(scores: Sequence[float | None], candidate: Sequence[float | None],
                 reference: Sequence[float | None], *, confidence: float = 0.95, resamples: int = 2000,
                 seed: int = 0) -> list[Estimate] | None:
    """``routed_estimate`` at every share of ``metrics.GRID``, from one set of resamples."""
    _check(confidence, resamples)
    score, cand, ref = _complete(scores, candidate, reference)
    n = len(ref)
    if n == 0 or ref.sum() <= 0:
        return None
    order = np.argsort(-score, kind="stable")  # as metrics.curve: highest score first, ties in pair order
    cand, ref = cand[order], ref[order]
    base = curve(score[order].tolist(), cand.tolist(), ref.tolist())
    ref_mean = float(ref.mean())
    gain = ref - cand
    targets = np.array([round(f * n) for f in GRID], dtype=np.int64)
    kept = np.empty((resamples, len(GRID)))
    done = 0
    for counts in _count_blocks(n, resamples, seed):
        b = len(counts)
        cand_total = (counts * cand).sum(axis=1)
        # The top K of a resample in score order: whole pairs while their counts fit, then part of one.
        taken = np.cumsum(counts, axis=1)
        gained = np.cumsum(counts * gain, axis=1)
        ref_total = cand_total + gained[:, -1]
        offsets = np.arange(b, dtype=np.int64)[:, None] * (n + 1)  # rows made one sorted run for searchsorted
        at = np.searchsorted((taken + offsets).ravel(), (targets[None, :] + offsets).ravel()).reshape(b, -1)
        at -= (np.arange(b) * n)[:, None]
        rows = np.arange(b)[:, None]
        before = np.where(at > 0, taken[rows, np.maximum(at - 1, 0)], 0)
        gain_before = np.where(at > 0, gained[rows, np.maximum(at - 1, 0)], 0.0)
        total_gain = gain_before + (targets[None, :] - before) * gain[at]
        with np.errstate(divide="ignore", invalid="ignore"):
            kept[done:done + b] = (cand_total[:, None] + total_gain) / ref_total[:, None]
        done += b
    kept[~np.isfinite(kept)] = np.nan  # a resample whose reference grades are all 0 has no ratio
    low, high = _bounds(kept, confidence)
    return [Estimate(q / ref_mean, float(lo), float(hi), n) for q, lo, hi in zip(base.quality, low, high)]


def share_for_quality(scores: Sequence[float | None], candidate: Sequence[float | None],
                      reference: Sequence[float | None], min_quality: float, *, confidence: float = 0.95,
                      resamples: int = 2000, seed: int = 0) -> float | None:
    """The smallest reference share on the 0.01 grid whose routed interval's LOW bound reaches ``min_quality``:
    a target is met when the data rules out missing it, not when the point estimate happens to. None if none does."""
    points = routed_curve(scores, candidate, reference, confidence=confidence, resamples=resamples, seed=seed)
    if points is None:
        return None
    return next((f for f, e in zip(GRID, points) if e.low >= min_quality - 1e-12), None)


def _ratio(numerator: np.ndarray, reference: np.ndarray, confidence: float, resamples: int,
           seed: int) -> Estimate | None:
    _check(confidence, resamples)
    n = len(reference)
    ref_total = float(reference.sum())
    if n == 0 or ref_total <= 0:
        return None
    sums = _resampled_sums(np.stack([numerator, reference], axis=1), resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = sums[:, 0] / sums[:, 1]
    ratios[~np.isfinite(ratios)] = np.nan  # a resample whose reference grades are all 0 has no ratio
    low, high = _bounds(ratios[:, None], confidence)
    return Estimate(float(numerator.sum()) / ref_total, float(low[0]), float(high[0]), n)


def _resampled_sums(columns: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Each column's sum over each bootstrap resample of the rows: shape (resamples, columns)."""
    n = len(columns)
    values, counts = np.unique(columns, axis=0, return_counts=True)
    if len(values) * 8 <= n:
        # Few distinct rows (exact, choice, number and judge grades take a handful of values): a resample
        # is then fully described by how often it draws each distinct row, a multinomial draw, which
        # is the same distribution as drawing n rows and far cheaper.
        drawn = np.random.default_rng(seed).multinomial(n, counts / n, size=resamples)
        return (drawn[:, :, None] * values[None, :, :]).sum(axis=1)
    out = np.empty((resamples, columns.shape[1]))
    done = 0
    for block in _count_blocks(n, resamples, seed):
        for j in range(columns.shape[1]):  # elementwise, not BLAS: a threaded BLAS thrashes on a busy host
            out[done:done + len(block), j] = (block * columns[:, j]).sum(axis=1)
        done += len(block)
    return out


def _count_blocks(n: int, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Bootstrap resamples as counts: row i says how often each pair was drawn in resample i."""
    rng = np.random.default_rng(seed)
    block = max(1, min(resamples, _CELLS // n))
    done = 0
    while done < resamples:
        b = min(block, resamples - done)
        drawn = rng.integers(0, n, size=(b, n))
        drawn += (np.arange(b, dtype=np.int64) * n)[:, None]
        yield np.bincount(drawn.ravel(), minlength=b * n).reshape(b, n)
        done += b


def _bounds(values: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column, ignoring resamples without a ratio."""
    tail = 100 * (1 - confidence) / 2
    with np.errstate(invalid="ignore"):
        low, high = np.nanpercentile(values, [tail, 100 - tail], axis=0)
    return low, high


def _blend(f: float, ratio: Estimate) -> Estimate:
    """``f + (1 - f) * ratio``: increasing in the ratio, so the interval's bounds map to bounds."""
    return Estimate(f + (1 - f) * ratio.value, f + (1 - f) * ratio.low, f + (1 - f) * ratio.high, ratio.pairs)


def _complete(*columns: Sequence[float | None]) -> tuple[np.ndarray, ...]:
    """The columns as float arrays, keeping only the pairs where every value is known: an ungraded pair
    is left out, never counted as a 0."""
    n = len(columns[0])
    if any(len(c) != n for c in columns):
        raise ValueError("every column needs one value per pair")
    arrays = [np.array([np.nan if v is None else v for v in c], dtype=np.float64).reshape(n) for c in columns]
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    return tuple(a[keep] for a in arrays)


def _share(value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"reference share must be between 0 and 1, not {value}")
    return value


def _check(confidence: float, resamples: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
