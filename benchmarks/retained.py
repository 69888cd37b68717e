"""Retained quality's bootstrap: numpy (llmroute.quality.retained) against the same percentile bootstrap in pure Python.

    PYTHONPATH=. python benchmarks/retained.py

2,000 resamples, best of 3 (1 for the 100k routed curve); pure Python at 100k pairs is timed on
100 resamples and scaled by 20.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from _util import machine

from llmroute.quality.retained import retained, routed_curve


def pure_retained(served: list[float], reference: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    rng = random.Random(seed)
    n = len(served)
    ratios = []
    for _ in range(resamples):
        s = r = 0.0
        for _ in range(n):
            i = rng.randrange(n)
            s += served[i]
            r += reference[i]
        ratios.append(s / r if r else float("nan"))
    ratios.sort()
    return ratios[int(0.025 * resamples)], ratios[int(0.975 * resamples) - 1]


def data(n: int, continuous: bool) -> tuple[list[float], list[float], list[float]]:
    """(router scores, candidate grades, reference grades): the reference right 90%, the candidate 80% of those."""
    rng = random.Random(1)
    ref = [float(rng.random() < 0.9) for _ in range(n)]
    cand = [r * float(rng.random() < 0.8) for r in ref]
    if continuous:
        ref = [0.5 + 0.5 * r - 0.1 * rng.random() for r in ref]
        cand = [0.5 + 0.5 * c - 0.1 * rng.random() for c in cand]
    return [rng.random() for _ in range(n)], cand, ref


def best(f: Callable[[], object], k: int = 3) -> float:
    times = []
    for _ in range(k):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    print(f"machine: {machine()}")
    print("| pairs | grades | numpy retained | numpy routed_curve (101 shares) | pure Python retained |")
    print("|---:|---|---:|---:|---:|")
    for n in (1_000, 10_000, 100_000):
        for continuous in (False, True):
            scores, cand, ref = data(n, continuous)
            np_ratio = best(lambda: retained(cand, ref))
            np_curve = best(lambda: routed_curve(scores, cand, ref), k=1 if n == 100_000 else 3)
            reps = 2000 if n < 100_000 else 100
            py = best(lambda: pure_retained(cand, ref, resamples=reps), k=1) * (2000 / reps)
            print(f"| {n:,} | {'continuous' if continuous else 'binary'} | {np_ratio:.3f} s | {np_curve:.3f} s | "
                  f"{py:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
