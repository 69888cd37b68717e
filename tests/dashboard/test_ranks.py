"""Percentiles from kept, sorted unions and the pieces that change: the value ``report.percentile`` picks."""

from __future__ import annotations

import random

import numpy as np

from llmroute.dashboard.ranks import Unions, kth, percentiles
from llmroute.report import percentile


def test_kth_is_the_value_at_that_rank_of_both_arrays_sorted() -> None:
    rng = random.Random(7)
    for _ in range(400):
        # Few distinct values, so ties across the two arrays are common; either may be empty; b in any order.
        a = np.sort(np.array([rng.randint(0, 9) for _ in range(rng.randint(0, 30))], dtype=float))
        b = np.array([rng.randint(0, 9) for _ in range(rng.randint(0, 30))], dtype=float)
        both = np.sort(np.concatenate((a, b)))
        for k in range(len(both)):
            assert kth(a, b, k) == both[k]


def test_percentiles_equal_the_reports_over_every_value() -> None:
    rng = np.random.default_rng(3)
    unions = Unions()
    days = [np.sort(rng.lognormal(6.9, 0.4, rng.integers(0, 500))) for _ in range(20)]
    for _ in range(5):  # the same finished days at each refresh, today growing
        today = [np.sort(rng.lognormal(6.0, 1.0, rng.integers(0, 50))) for _ in range(3)]
        values = sorted(float(v) for piece in (*days, *today) for v in piece)
        got = percentiles(unions, days, today)
        assert got == (percentile(values, 0.50), percentile(values, 0.95))
    assert len(unions._kept) == 1  # the finished days were sorted once


def test_kept_unions_are_bounded() -> None:
    unions = Unions(max_values=1000)
    for n in range(10):
        unions.union([np.arange(300.0) + n, np.arange(300.0)])
    assert sum(len(union) for _, union in unions._kept.values()) <= 1000
    assert percentiles(Unions(), [], []) == (None, None)
