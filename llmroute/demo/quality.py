"""The demo's quality figures: what shadow evaluation measured, beside the truth the demo knows.

With the emulated pair, shadow evaluation samples each strategy's answered requests, sends each also
to the other tier, and a judge (the strong provider, in rating mode) grades both answers. The pairs go
to the ledger, and each strategy's retained quality is read back from there with its bootstrap
interval, as ``llmroute quality --by strategy`` computes it. The true value comes from the labels the
emulators answer from (``workload.truth``), over every request the strategy served.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

if TYPE_CHECKING:
    from ..ledger import Ledger

__all__ = ["measured_retained", "quality_table", "shadow_settings"]

def shadow_settings(rate: float, requests: int, reference: str = "cerebras") -> dict[str, Any]:
    """Config keys for the demo's shadow evaluation: every sampled request graded, none dropped for room."""
    return {
        "shadow": {"rate": rate, "grader": "judge", "max_in_flight": 32, "max_queued": requests, "store_text": True,
                   "max_usd_per_day": 100.0},
        # rating: a right answer 10, a wrong one 1, so each grade is the answer's correctness and the ratio of
        # means is the truth's own definition of retained quality.
        "judge": {"provider": reference, "mode": "rating", "max_tokens": 64},
    }


def measured_retained(ledger: Ledger, strategy: str, since_ts: float) -> dict[str, Any]:
    """This strategy's retained quality from the ledger's graded pairs since ``since_ts``, with its 95% interval."""
    from ..quality.retained import retained
    from ..quality_report import load_pairs

    ledger.flush()
    reader = ledger.store.reader()
    try:
        pairs = [p for p in load_pairs(reader, since_ts=since_ts, with_text=False) if p.strategy == strategy]
    finally:
        reader.close()
    estimate = retained([p.served_grade for p in pairs], [p.reference_grade for p in pairs])
    spend = sum((p.shadow_cost_usd or 0.0) + (p.judge_cost_usd or 0.0) for p in pairs)
    out: dict[str, Any] = {"pairs": len(pairs), "shadow_cost_usd": spend}
    if estimate is not None:
        out.update(value=estimate.value, low=estimate.low, high=estimate.high, graded=estimate.pairs)
    return out


def quality_table(summaries: list[dict[str, Any]], reference: str, rate: float) -> Table:
    """Per strategy: savings, the retained quality shadow evaluation measured (95% interval), and the truth."""
    how = (f"shadow evaluation of {rate:.0%} of answers (paused from the outage until the breaker closed), "
           "each graded by a judge" if rate > 0 else "off (--shadow-rate 0)")
    table = Table(title=f"quality kept, against {reference} answering everything", title_justify="left",
                  caption=f"measured: {how}; true: from the workload's known answers, over every request",
                  caption_justify="left")
    for column in ("strategy", "saved", "measured", "95% CI", "pairs", "true", "in CI", "shadow $"):
        table.add_column(column, justify="left" if column == "strategy" else "right", no_wrap=True)
    for s in summaries:
        measured, true = s.get("measured") or {}, s.get("true_retained")
        has = "value" in measured
        inside = has and true is not None and measured["low"] - 1e-9 <= true <= measured["high"] + 1e-9
        table.add_row(
            s["strategy"], f"{round(s['savings_pct'])}%", f"{measured['value']:.1%}" if has else "-",
            f"{measured['low']:.1%}-{measured['high']:.1%}" if has else "-", str(measured.get("graded", 0)),
            "-" if true is None else f"{true:.1%}", ("yes" if inside else "no") if has and true is not None else "-",
            f"${measured.get('shadow_cost_usd', 0.0):.6f}",
        )
    return table
