"""``llmroute quality``: retained quality on your own traffic, from the ledger's graded pairs.

Counts and spend are summed in SQL; the bootstrap needs each pair's grades, so those are read
(only the grades, never the stored text) and resampled with numpy (``quality/retained.py``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .ledger import GradedPair, Store
from .ledger.pairs import PAIR_COLUMNS
from .ledger.schema import GRADED_PAIRS
from .quality.metrics import GRID, Curve, curve
from .quality.retained import Estimate, retained, routed_curve, split_curve
from .report import day_label, tag_names

if TYPE_CHECKING:
    from .config import RouterConfig

BY = ("strategy", "route", "tag", "decision", "day")
DEFAULT_MIN_PAIRS = 100
"""``shadow.min_pairs`` when no config is given."""
HOW_TO_MEASURE = ("send your own prompts to both tiers with `llmroute quality collect --data prompts.jsonl`, "
                  "or sample live traffic with `shadow: {rate: 0.05}` in the config")

_SERVED = ("CASE served_tier WHEN 'reference' THEN reference_grade WHEN 'candidate' THEN candidate_grade END")
_GRADED = f"reference_grade IS NOT NULL AND candidate_grade IS NOT NULL AND ({_SERVED}) IS NOT NULL"
_TEXT = ("prompt", "reference_answer", "candidate_answer")
# `quality collect` run again over the same prompts (another --out, or a line graded again) records the same
# prompt's pair again: only the latest counts, or repeating a run would narrow every interval with no new data.
# Its spend still counts: it was paid.
_CURRENT = ("NOT (source = 'collect' AND EXISTS (SELECT 1 FROM graded_pairs AS later WHERE later.source = 'collect' "
            "AND later.request_id = graded_pairs.request_id AND later.id > graded_pairs.id "
            "AND later.reference_provider = graded_pairs.reference_provider "
            "AND later.candidate_provider = graded_pairs.candidate_provider))")


def load_pairs(store: Store, since_ts: float | None = None, until_ts: float | None = None, *,
               with_text: bool = True, latest: int | None = None) -> list[GradedPair]:
    """The graded pairs recorded in ``since_ts <= ts < until_ts``, oldest first (none on a ledger older than v3).

    ``with_text=False`` leaves the stored prompt and answers out (reports never need them); ``latest``: only the
    most recent that many (what a gateway reads at start-up, whatever the ledger holds)."""
    if not store.has(GRADED_PAIRS):
        return []
    columns = ", ".join(f"NULL AS {c}" if not with_text and c in _TEXT else c for c in PAIR_COLUMNS)
    where, params = _window(since_ts, until_ts)
    if latest is None:
        rows = store.fetch(f"SELECT {columns} FROM graded_pairs {where} ORDER BY ts, id", params)
    else:
        rows = store.fetch(f"SELECT {columns} FROM graded_pairs {where} ORDER BY ts DESC, id DESC LIMIT ?",
                           (*params, int(latest)))[::-1]
    return [GradedPair.from_row(r) for r in rows]


@dataclass(slots=True)
class QualityRow:
    """One group of the report."""

    group: str
    pairs: int
    """Graded pairs: both answers graded, so the pair counts toward retained quality."""
    ungraded: int
    """Pairs left out: a grade is missing (a failed shadow call, an answer the grader could not parse)."""
    estimate: Estimate | None
    served_mean: float | None
    reference_mean: float | None
    shadow_cost_usd: float
    judge_cost_usd: float
    graders: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        e = self.estimate
        return {"group": self.group, "pairs": self.pairs, "ungraded": self.ungraded,
                "retained": e.value if e else None, "ci_low": e.low if e else None, "ci_high": e.high if e else None,
                "served_mean": self.served_mean, "reference_mean": self.reference_mean,
                "shadow_cost_usd": self.shadow_cost_usd, "judge_cost_usd": self.judge_cost_usd,
                "graders": self.graders}


@dataclass(slots=True)
class CurveReport:
    """quality_aware's cost/quality curve on your pairs, re-deciding the scores it logged."""

    pairs: int
    points: list[Estimate]
    """Retained quality at each reference share of ``metrics.GRID``, with its interval."""
    prompt_blind: list[Estimate]
    """The same pairs split without looking at the prompt (the random-routing line)."""
    line: Curve

    def to_dict(self) -> dict[str, Any]:
        return {"pairs": self.pairs, "calls_for_95": self.line.calls_for(0.95), "apgr": self.line.apgr(),
                "points": [{"reference_share": f, "retained": p.value, "ci_low": p.low, "ci_high": p.high,
                            "prompt_blind": b.value} for f, p, b in zip(GRID, self.points, self.prompt_blind)]}


@dataclass(slots=True)
class QualityReport:
    by: str
    rows: list[QualityRow]
    total: QualityRow
    curve: CurveReport | None
    prompt_blind: list[Estimate] | None
    """Every graded pair, split between the tiers without looking at the prompt, at each share of the grid."""
    tiers: list[dict[str, Any]]
    """The (reference, candidate) provider pairs measured, with their pair counts."""
    min_pairs: int
    has_table: bool

    @property
    def warnings(self) -> list[str]:
        """What a reader must know before trusting the figures."""
        if not self.has_table or not (self.total.pairs + self.total.ungraded):
            return [f"no graded pairs in the ledger for this period: quality is not measured yet; {HOW_TO_MEASURE}"]
        out = []
        if self.total.pairs < self.min_pairs:
            out.append(f"only {self.total.pairs} graded pairs (fewer than shadow.min_pairs = {self.min_pairs}): "
                       "the interval is too wide, or too unstable, to mean anything yet; collect more pairs")
        small = [r.group for r in self.rows if r.pairs < self.min_pairs]
        if small and len(self.rows) > 1 and self.total.pairs >= self.min_pairs:
            out.append(f"groups with fewer than {self.min_pairs} graded pairs, whose intervals mean little: "
                       + ", ".join(small[:10]) + (" ..." if len(small) > 10 else ""))
        if self.total.ungraded:
            out.append(f"{self.total.ungraded} pairs are ungraded (a grade is missing) and are left out")
        if len(self.tiers) > 1:
            out.append("pairs from more than one (reference, candidate) provider pair are pooled: "
                       + "; ".join(f"{t['reference']} vs {t['candidate']}: {t['pairs']}" for t in self.tiers))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "min_pairs": self.min_pairs, "groups": [r.to_dict() for r in self.rows],
                "total": self.total.to_dict(), "curve": self.curve.to_dict() if self.curve else None,
                "prompt_blind": [{"reference_share": f, "retained": e.value, "ci_low": e.low, "ci_high": e.high}
                                 for f, e in zip(GRID, self.prompt_blind)] if self.prompt_blind else None,
                "tiers": self.tiers, "warnings": self.warnings}


def build_quality_report(store: Store, by: str, lo: float, hi: float, min_pairs: int = DEFAULT_MIN_PAIRS,
                         ) -> QualityReport:
    """Retained quality per group over ``lo <= ts < hi``, the total, and quality_aware's curve."""
    if by not in BY:
        raise ValueError(f"--by must be one of {', '.join(BY)}, not '{by}'")
    empty = QualityRow("total", 0, 0, None, None, None, 0.0, 0.0)
    if not store.has(GRADED_PAIRS):
        return QualityReport(by, [], empty, None, None, [], min_pairs, has_table=False)
    expr = _group_expr(store, by)
    every, every_params = _window(lo, hi, current=False)
    sums = store.fetch(
        f"SELECT {expr}, grader, SUM(CASE WHEN {_CURRENT} THEN 1 ELSE 0 END), "
        f"SUM(CASE WHEN {_CURRENT} AND NOT ({_GRADED}) THEN 1 ELSE 0 END), "
        f"SUM(COALESCE(shadow_cost_usd, 0)), SUM(COALESCE(judge_cost_usd, 0)) FROM graded_pairs {every} "
        f"GROUP BY {expr}, grader", every_params)
    where, params = _window(lo, hi)
    grades = store.fetch(f"SELECT {expr}, {_SERVED}, candidate_grade, reference_grade FROM graded_pairs {where} "
                         f"AND {_GRADED}", params)
    tiers = store.fetch(f"SELECT reference_provider, candidate_provider, COUNT(*) FROM graded_pairs {where} "
                        "GROUP BY reference_provider, candidate_provider ORDER BY COUNT(*) DESC", params)
    label = day_label if by == "day" else str
    names = tag_names if by == "tag" else (lambda g: [label(g)])
    groups: dict[str, _Sums] = defaultdict(_Sums)
    total = _Sums()
    for group, grader, count, ungraded, shadow, judge in sums:
        for target in (total, *(groups[n] for n in names(group))):
            target.ungraded += int(ungraded or 0)
            target.shadow_cost_usd += float(shadow or 0)
            target.judge_cost_usd += float(judge or 0)
            if count:
                target.graders[str(grader)] += int(count)
    for group, served, candidate, reference in grades:
        total.candidate.append(float(candidate))
        for target in (total, *(groups[n] for n in names(group))):
            target.served.append(float(served))
            target.reference.append(float(reference))
    rows = [groups[name].row(name) for name in sorted(groups)]
    return QualityReport(by, rows, total.row("total"), _curve(store, where, params),
                         split_curve(total.candidate, total.reference),
                         [{"reference": r, "candidate": c, "pairs": int(n)} for r, c, n in tiers], min_pairs,
                         has_table=True)


@dataclass(slots=True)
class _Sums:
    ungraded: int = 0
    shadow_cost_usd: float = 0.0
    judge_cost_usd: float = 0.0
    graders: Counter[str] = field(default_factory=Counter)
    served: list[float] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)
    candidate: list[float] = field(default_factory=list)

    def row(self, group: str) -> QualityRow:
        n = len(self.served)
        return QualityRow(group, n, self.ungraded, retained(self.served, self.reference),
                          sum(self.served) / n if n else None, sum(self.reference) / n if n else None,
                          self.shadow_cost_usd, self.judge_cost_usd, dict(self.graders))


def _curve(store: Store, where: str, params: tuple[Any, ...]) -> CurveReport | None:
    """Pairs quality_aware routed (they carry its score), re-decided at every share."""
    rows = store.fetch(f"SELECT quality_score, candidate_grade, reference_grade FROM graded_pairs {where} "
                       f"AND quality_score IS NOT NULL AND {_GRADED}", params)
    if not rows:
        return None
    scores, candidate, reference = (list(c) for c in zip(*rows))
    points = routed_curve(scores, candidate, reference)
    blind = split_curve(candidate, reference)
    if points is None or blind is None:
        return None
    return CurveReport(len(rows), points, blind, curve(scores, candidate, reference))


@dataclass(slots=True)
class MeasuredQuality:
    """What the ledger's graded pairs say about one (reference, candidate) provider pair, for ``plan``."""

    reference: str
    candidate: str
    pairs: int
    ungraded: int
    graders: list[str]
    min_pairs: int
    candidate_grades: list[float]
    reference_grades: list[float]
    scores: list[float | None]
    """quality_aware's logged score per graded pair (None where another strategy routed it)."""

    @property
    def enough(self) -> bool:
        return self.pairs >= self.min_pairs

    @property
    def scored(self) -> int:
        return sum(s is not None for s in self.scores)

    def split(self, reference_share: float) -> Estimate | None:
        """A prompt-blind split sending ``reference_share`` to the reference tier; None without enough pairs."""
        if not self.enough:
            return None
        from .quality.retained import split_estimate

        return split_estimate(self.candidate_grades, self.reference_grades, reference_share)

    def routed(self, reference_share: float) -> Estimate | None:
        """quality_aware at ``reference_share``, from the pairs it scored; None without enough of them."""
        if self.scored < self.min_pairs:
            return None
        from .quality.retained import routed_estimate

        kept = [(s, c, r) for s, c, r in zip(self.scores, self.candidate_grades, self.reference_grades) if s is not None]
        return routed_estimate(*(list(c) for c in zip(*kept)), reference_share)  # type: ignore[arg-type]

    @property
    def grader_label(self) -> str:
        return "+".join(self.graders) if self.graders else "no grader"


def measured_quality(store: Store, config: RouterConfig, since_ts: float | None = None) -> MeasuredQuality:
    """The graded pairs between the config's shadow reference and candidate (quality_aware's strong and weak)."""
    reference, candidate = config.shadow_pair()
    min_pairs = config.shadow.min_pairs
    if not store.has(GRADED_PAIRS):
        return MeasuredQuality(reference, candidate, 0, 0, [], min_pairs, [], [], [])
    where, params = _window(since_ts, None)
    where += " AND reference_provider = ? AND candidate_provider = ?"
    params = (*params, reference, candidate)
    rows = store.fetch(f"SELECT quality_score, candidate_grade, reference_grade, grader FROM graded_pairs {where} "
                       f"AND {_GRADED}", params)
    ungraded = store.fetch(f"SELECT COUNT(*) FROM graded_pairs {where} AND NOT ({_GRADED})", params)[0][0]
    graders = Counter(str(r[3]) for r in rows)
    return MeasuredQuality(reference, candidate, len(rows), int(ungraded or 0), [g for g, _ in graders.most_common()],
                           min_pairs, [float(r[1]) for r in rows], [float(r[2]) for r in rows],
                           [None if r[0] is None else float(r[0]) for r in rows])


def _window(lo: float | None, hi: float | None, *, current: bool = True) -> tuple[str, tuple[Any, ...]]:
    """Pairs recorded in ``lo <= ts < hi``; ``current``: without the collected pairs a later run superseded."""
    where = "WHERE ts >= ? AND ts < ?" + (f" AND {_CURRENT}" if current else "")
    return where, (-math.inf if lo is None else lo, math.inf if hi is None else hi)


def _group_expr(store: Store, by: str) -> str:
    if by == "day":
        return store.day_number_expr
    if by == "tag":
        return "tags"
    return {"strategy": "COALESCE(strategy, '(none)')", "route": "COALESCE(route, '(none)')",
            "decision": "COALESCE(route_decision, '(none)')"}[by]


def format_estimate(estimate: Estimate | None) -> str:
    """``96.1% (95% CI 94.8–97.2%)``, or ``-`` when there is nothing to estimate."""
    if estimate is None:
        return "-"
    return f"{estimate.value:.1%} (95% CI {estimate.low:.1%}–{estimate.high:.1%})"


def quality_chart(report: CurveReport | None, total: Sequence[Estimate] | None, title: str, fmt: str = "png",
                  ) -> bytes:
    """Retained quality against the share sent to the reference tier: quality_aware's curve re-decided from
    its logged scores and the prompt-blind line, each with its 95% band."""
    from .plots import figure_bytes, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    x = [100 * f for f in GRID]
    series = []
    if report is not None:
        series.append((f"quality_aware, re-decided ({report.pairs:,} scored pairs)", report.points))
        total = report.prompt_blind  # the same pairs, split without looking at the prompt
    if total:
        series.append(("prompt-blind split", list(total)))
    for name, points in series:
        line = ax.plot(x, [100 * p.value for p in points], label=name)[0]
        ax.fill_between(x, [100 * p.low for p in points], [100 * p.high for p in points], alpha=0.2,
                        color=line.get_color(), label=f"{name}: 95% CI")
    ax.axhline(95, color="grey", linestyle=":", label="95% of reference quality")
    ax.set_xlabel("requests sent to the reference tier (%)")
    ax.set_ylabel("retained quality (% of reference-only)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    return figure_bytes(fig, fmt)


def quality_over_time(store: Store, by: str, lo: float, hi: float) -> list[dict[str, Any]]:
    """Retained quality per UTC day and group of ``by`` (tags split, as ``build_quality_report`` does), each with
    its bootstrap interval: the same pairs and estimate as the report, one more grouping."""
    if by not in BY:
        raise ValueError(f"--by must be one of {', '.join(BY)}, not '{by}'")
    if not store.has(GRADED_PAIRS):
        return []
    expr = _group_expr(store, by)
    where, params = _window(lo, hi)
    rows = store.fetch(f"SELECT {store.day_number_expr}, {expr}, {_SERVED}, reference_grade FROM graded_pairs "
                       f"{where} AND {_GRADED}", params)
    label = day_label if by == "day" else str
    names = tag_names if by == "tag" else (lambda g: [label(g)])
    cells: dict[tuple[int, str], tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for day, group, served, reference in rows:
        for name in names(group):
            cell = cells[(int(day), name)]
            cell[0].append(float(served))
            cell[1].append(float(reference))
    out = []
    for (day, name), (served, reference) in sorted(cells.items()):
        e = retained(served, reference)
        out.append({"day": day_label(day), "group": name, "pairs": len(served), "retained": e.value if e else None,
                    "ci_low": e.low if e else None, "ci_high": e.high if e else None})
    return out


def served_reference_share(store: Store, lo: float, hi: float) -> tuple[float | None, int]:
    """The share of graded pairs whose answer the reference tier served, and how many pairs: where traffic
    actually sat on the cost/quality curve in the period."""
    if not store.has(GRADED_PAIRS):
        return None, 0
    where, params = _window(lo, hi)
    count, reference = store.fetch(f"SELECT COUNT(*), SUM(CASE WHEN served_tier = 'reference' THEN 1 ELSE 0 END) "
                                   f"FROM graded_pairs {where} AND {_GRADED}", params)[0]
    count = int(count or 0)
    return (int(reference or 0) / count if count else None), count
