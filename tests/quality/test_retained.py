"""Retained quality and its bootstrap interval, checked against values worked out independently."""

from __future__ import annotations

import random

import pytest

from llmroute.quality.metrics import GRID, curve
from llmroute.quality.retained import (Estimate, retained, routed_curve, routed_estimate, share_for_quality,
                                       split_curve, split_estimate)


def test_a_tiny_case_worked_by_hand() -> None:
    # Three pairs, the reference right on all, the served answer right on two. A resample's ratio is k/3 with
    # k ~ Binomial(3, 2/3): P(0) = 1/27 (3.7%), P(1/3) = 22%, P(2/3) = 44%, P(1) = 29.6%. So the 95% interval's
    # 2.5th percentile falls among the zeros and the 97.5th among the ones; at 90%, the 5th percentile is
    # past the zeros (3.7% < 5%) and the 95th still among the ones.
    got = retained([1, 1, 0], [1, 1, 1])
    assert got == Estimate(2 / 3, 0.0, 1.0, 3)
    assert retained([1, 1, 0], [1, 1, 1], confidence=0.9) == Estimate(2 / 3, 1 / 3, 1.0, 3)


def _pure_python_bootstrap(served: list[float], reference: list[float], resamples: int, seed: int) -> tuple[float, float]:
    """The textbook percentile bootstrap of a ratio of means, drawn pair by pair."""
    rng = random.Random(seed)
    n = len(served)
    ratios = []
    for _ in range(resamples):
        drawn = [rng.randrange(n) for _ in range(n)]
        ratios.append(sum(served[i] for i in drawn) / sum(reference[i] for i in drawn))
    ratios.sort()
    return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


@pytest.mark.parametrize("continuous", [False, True])
def test_the_interval_matches_a_pair_by_pair_bootstrap(continuous: bool) -> None:
    rng = random.Random(7)
    reference = [float(rng.random() < 0.8) for _ in range(400)]
    served = [r * float(rng.random() < 0.9) for r in reference]
    if continuous:  # similarity-like grades: every pair distinct, so the pair-by-pair path runs
        reference = [0.5 + 0.5 * r - 0.1 * rng.random() for r in reference]
        served = [0.5 + 0.5 * s - 0.1 * rng.random() for s in served]
    got = retained(served, reference, resamples=4000, seed=3)
    low, high = _pure_python_bootstrap(served, reference, 4000, seed=11)
    assert got is not None and got.pairs == 400
    assert got.value == pytest.approx(sum(served) / sum(reference))
    assert got.low == pytest.approx(low, abs=0.006) and got.high == pytest.approx(high, abs=0.006)


def test_the_interval_covers_a_known_ratio_in_at_least_nine_runs_of_ten() -> None:
    # The reference tier is right with probability 0.8; the candidate keeps 85% of those; half the requests were
    # served by each tier. True retained quality: (0.5 * 0.8 + 0.5 * 0.8 * 0.85) / 0.8 = 0.925.
    rng = random.Random(2024)
    runs, covered = 200, 0
    for run in range(runs):
        served, reference = [], []
        for _ in range(300):
            ref = float(rng.random() < 0.8)
            cand = ref * float(rng.random() < 0.85)
            served.append(ref if rng.random() < 0.5 else cand)
            reference.append(ref)
        got = retained(served, reference, seed=run)
        assert got is not None
        covered += got.low <= 0.925 <= got.high
    assert 0.90 <= covered / runs <= 0.99


def test_the_routed_curve_covers_a_known_curve() -> None:
    # Scores s ~ U(0, 1); the reference is always right; the candidate is right with probability 1 - s.
    # Sending the top f by score to the reference keeps 1/2 + (1 - (1 - f)^2) / 2.
    rng = random.Random(5)
    truth = {f: 0.5 + (1 - (1 - f) ** 2) / 2 for f in (0.2, 0.5)}
    runs, covered = 100, {f: 0 for f in truth}
    for run in range(runs):
        scores = [rng.random() for _ in range(400)]
        candidate = [float(rng.random() < 1 - s) for s in scores]
        points = routed_curve(scores, candidate, [1.0] * 400, seed=run)
        assert points is not None
        for f, q in truth.items():
            covered[f] += points[round(f * 100)].low <= q <= points[round(f * 100)].high
    assert all(count / runs >= 0.88 for count in covered.values()), covered


def test_routed_points_are_the_metrics_curve_and_the_ends_are_exact() -> None:
    rng = random.Random(1)
    scores = [rng.random() for _ in range(250)]
    reference = [float(rng.random() < 0.8) for _ in scores]
    candidate = [r * float(rng.random() < 0.7 + 0.3 * (1 - s)) for r, s in zip(reference, scores)]
    points = routed_curve(scores, candidate, reference)
    line = curve(scores, candidate, reference)
    assert points is not None and len(points) == len(GRID)
    for f, point, q in zip(GRID, points, line.quality):
        assert point.value == pytest.approx(q / line.strong_only) and point.low <= point.value <= point.high
    assert points[-1] == Estimate(1.0, 1.0, 1.0, 250)  # everything to the reference keeps all of it
    assert routed_estimate(scores, candidate, reference, 0.37) == points[37]
    assert points[0].value == pytest.approx(retained(candidate, reference).value)  # type: ignore[union-attr]


def test_share_for_quality_goes_by_the_low_bound() -> None:
    rng = random.Random(9)
    scores = [rng.random() for _ in range(300)]
    reference = [1.0] * 300
    candidate = [float(rng.random() < 1 - s) for s in scores]
    points = routed_curve(scores, candidate, reference)
    assert points is not None
    target = 0.9
    share = share_for_quality(scores, candidate, reference, target)
    first_low = next(f for f, p in zip(GRID, points) if p.low >= target)
    first_point = next(f for f, p in zip(GRID, points) if p.value >= target)
    assert share == first_low and share > first_point  # the point estimate alone would promise too much
    assert share_for_quality(scores, candidate, reference, 0.0) == 0.0
    assert share_for_quality(scores, candidate, reference, 1.01) is None


def test_split_is_linear_in_the_share() -> None:
    rng = random.Random(3)
    reference = [float(rng.random() < 0.9) for _ in range(200)]
    candidate = [r * float(rng.random() < 0.8) for r in reference]
    base = retained(candidate, reference)
    assert base is not None
    for f in (0.0, 0.3, 1.0):
        got = split_estimate(candidate, reference, f)
        assert got is not None
        assert got.value == pytest.approx(f + (1 - f) * base.value)
        assert got.low == pytest.approx(f + (1 - f) * base.low) and got.high == pytest.approx(f + (1 - f) * base.high)
    assert split_curve(candidate, reference)[30] == split_estimate(candidate, reference, 0.3)  # type: ignore[index]


def test_edge_cases() -> None:
    assert retained([], []) is None and split_estimate([], [], 0.5) is None and routed_curve([], [], []) is None
    assert retained([0, 0], [0, 0]) is None  # nothing to keep a share of
    assert share_for_quality([0.1, 0.2], [0, 0], [0, 0], 0.9) is None
    got = retained([1, None, 0, 1], [1, 1, None, 1])  # ungraded pairs are left out, not scored 0
    assert got is not None and got.pairs == 2 and got.value == 1.0
    assert retained([1, 1], [1, 1], seed=4) == retained([1, 1], [1, 1], seed=4)
    with pytest.raises(ValueError, match="one value per pair"):
        retained([1], [1, 1])
    with pytest.raises(ValueError, match="between 0 and 1"):
        split_estimate([1], [1], 1.5)
    with pytest.raises(ValueError, match="confidence"):
        retained([1], [1], confidence=1.0)


def test_the_same_ledger_gives_the_same_figures() -> None:
    rng = random.Random(4)
    scores = [rng.random() for _ in range(150)]
    reference = [rng.random() for _ in scores]
    candidate = [r * rng.random() for r in reference]
    assert routed_curve(scores, candidate, reference, seed=1) == routed_curve(scores, candidate, reference, seed=1)
    assert retained(candidate, reference, seed=1) != retained(candidate, reference, seed=2)
