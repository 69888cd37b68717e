"""``llmroute plan``: monthly cost of each strategy, and the quality it keeps where that was measured."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.text import Text

from ..config import RouterConfig, default_config_path
from ..errors import LLMRouteError
from ..pricing import format_price_per_m, format_usd, parse_token_amount
from .common import (FormatOption, JsonAlias, OutputFormat, config_from_ledger, console, fail, load_or_fail,
                     open_ledger_store, output_format, print_csv, print_json)

commands = typer.Typer()
"""Added to the root app without a name: its commands are top-level."""

if TYPE_CHECKING:
    from ..quality_report import MeasuredQuality


@commands.command()
def plan(
    monthly_tokens: Annotated[Optional[str], typer.Option(help="Tokens per month: 10M, 2.5B or a plain number")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Config whose prices to use")] = None,
    input_share: Annotated[Optional[float], typer.Option(help="Fraction of tokens that are input (default 0.5)")] = None,
    from_ledger: Annotated[bool, typer.Option("--from-ledger", help="Take volume and input share from the ledger")] = False,
    since: Annotated[Optional[str], typer.Option(help="The period of the ledger to read (default: volume 30d, "
                                                      "quality all graded pairs)")] = None,
    ledger: Annotated[Optional[str], typer.Option(help="SQLite file or postgresql:// DSN (default: the config's)")] = None,
    strong_share: Annotated[Optional[float], typer.Option(help="quality_aware target: share of strong calls")] = None,
    min_quality: Annotated[Optional[float], typer.Option(help="quality_aware target: share of strong-only quality to keep")] = None,
    max_price_per_m: Annotated[Optional[float], typer.Option(help="quality_aware target: blended $ per 1M tokens")] = None,
    benchmark_quality: Annotated[bool, typer.Option(
        "--benchmark-quality", help="Also show the shipped quality model's benchmark curve (not your traffic)")] = False,
    fmt: FormatOption = "table",
    as_json: JsonAlias = False,
) -> None:
    """Monthly cost of each strategy at a traffic volume, against the premium provider.

    quality_aware is planned at the config's target unless one of --strong-share, --min-quality
    or --max-price-per-m is given. Expected quality comes from the ledger's graded pairs (shadow
    evaluation or `llmroute quality collect`) once there are shadow.min_pairs of them.
    """
    from ..plan import describe, plan as make_plan

    fmt = output_format(fmt, as_json)
    cfg, source = _plan_config(config)
    targets = {k: v for k, v in (("strong_share", strong_share), ("min_quality", min_quality),
                                 ("max_price_per_m", max_price_per_m)) if v is not None}
    if targets:
        from pydantic import ValidationError

        from ..config import QualityTarget

        try:
            cfg.quality_aware.target = QualityTarget(**targets)
        except ValidationError as exc:
            fail("quality_aware target: " + "; ".join(e["msg"] for e in exc.errors()))
    volume_note = ""
    explicit = config is not None or default_config_path().exists()
    if from_ledger:
        if monthly_tokens is not None:
            fail("use either --monthly-tokens or --from-ledger, not both")
        tokens, measured_share, volume_note, noted = ledger_volume(ledger, cfg if explicit else None, since)
        if not explicit and noted is not None:
            cfg, source = noted, "the prices noted in the ledger"
        input_share = measured_share if input_share is None else input_share
    else:
        if monthly_tokens is None:
            fail("give --monthly-tokens (e.g. 10M), or --from-ledger to use the traffic the ledger recorded")
        try:
            tokens = parse_token_amount(monthly_tokens)  # type: ignore[arg-type]
        except ValueError as exc:
            fail(f"--monthly-tokens: {exc}")
    input_share = 0.5 if input_share is None else input_share
    if not 0.0 <= input_share <= 1.0:
        fail("--input-share must be between 0 and 1")
    measured, measured_note = _measured(cfg if explicit else None, ledger, since, cfg)
    try:
        baseline, rows = make_plan(cfg, tokens, input_share, measured=measured, benchmark=benchmark_quality)
    except LLMRouteError as exc:
        fail(str(exc))
    strategies = [{"strategy": r.strategy, "share": r.share, "cost_usd": r.cost_usd, "total_usd": r.total_usd,
                   "savings_usd": r.savings_usd, "savings_pct": r.savings_pct,
                   "expected_quality": r.expected_quality,
                   "quality": r.quality.to_dict() if r.quality else None, "quality_note": r.quality_note,
                   **({"benchmark_quality": r.benchmark.to_dict() if r.benchmark else None} if benchmark_quality else {})}
                  for r in rows]
    measurement = _measurement(measured, measured_note)
    if fmt == OutputFormat.JSON:
        print_json({"monthly_tokens": tokens, "input_share": input_share, "baseline": baseline, "prices_from": source,
                    "quality_from": measurement, "strategies": strategies})
        return
    if fmt == OutputFormat.CSV:
        print_csv([{k: v for k, v in s.items() if k not in ("quality", "benchmark_quality")} | _flat_quality(s)
                   for s in strategies])
        return
    console.print(Text.assemble(("Traffic Distribution Analysis", "bold"), f": {tokens:,} tokens/month, "
                                f"{input_share:.0%} input, prices from {source}"), highlight=False)
    if volume_note:
        console.print(f"volume and input share from {volume_note}", highlight=False)
    baseline_usd = rows[0].baseline_usd
    console.print(f"100% {baseline} (baseline): {format_usd(baseline_usd)}/month; "
                  f"{format_price_per_m(baseline_usd * 1e6 / tokens)} per 1M tokens", highlight=False)
    for row in rows:
        console.print(describe(row, tokens), highlight=False, soft_wrap=True)  # one line per strategy, for grep
    console.print(measurement["summary"], highlight=False, soft_wrap=True)


def _measured(explicit: RouterConfig | None, ledger: Optional[str], since: Optional[str],
              cfg: RouterConfig) -> tuple[MeasuredQuality | None, str]:
    """The graded pairs in the ledger the config (or --ledger) names; None and why when there are none to read."""
    from ..ledger import ledger_location, open_store
    from ..quality_report import measured_quality
    from ..report import parse_span

    location = ledger or ledger_location(explicit)
    if location is None:
        return None, "the ledger is switched off"
    try:
        since_ts = None
        if since:
            import time

            since_ts = time.time() - parse_span(since)
        store = open_store(location, readonly=True)
    except (LLMRouteError, ValueError) as exc:
        return None, f"no ledger to read ({exc})"
    try:
        return measured_quality(store, cfg, since_ts), f"the ledger ({store.where})"
    except LLMRouteError as exc:
        return None, f"the ledger could not be read ({exc})"
    finally:
        store.close()


def _measurement(measured: MeasuredQuality | None, where: str) -> dict[str, Any]:
    """Where the expected quality comes from, or how to measure it, in words and fields."""
    from ..quality_report import HOW_TO_MEASURE

    if measured is not None and measured.enough:
        summary = (f"expected quality: retained quality measured on {measured.pairs:,} graded pairs in {where} "
                   f"({measured.reference} as reference, {measured.candidate} as candidate, graded by "
                   f"{measured.grader_label}); 95% bootstrap intervals")
    else:
        found = (where if measured is None else f"{measured.pairs:,} graded pairs of {measured.reference} vs "
                 f"{measured.candidate} in {where}, fewer than shadow.min_pairs = {measured.min_pairs}")
        summary = (f"quality not measured on your traffic: {found}. To measure it: {HOW_TO_MEASURE}. "
                   "(--benchmark-quality shows the shipped model's benchmark curve, which is not your traffic)")
    return {"source": "ledger graded pairs" if measured is not None and measured.enough else None,
            "where": where, "pairs": measured.pairs if measured else 0,
            "ungraded": measured.ungraded if measured else 0, "min_pairs": measured.min_pairs if measured else None,
            "reference": measured.reference if measured else None, "candidate": measured.candidate if measured else None,
            "graders": measured.graders if measured else [], "summary": summary}


def _flat_quality(strategy: dict[str, Any]) -> dict[str, Any]:
    q = strategy.get("quality") or {}
    b = strategy.get("benchmark_quality") or {}
    return {"quality_ci_low": q.get("ci_low"), "quality_ci_high": q.get("ci_high"), "quality_pairs": q.get("pairs"),
            "quality_grader": q.get("grader"),
            **({"benchmark_quality": b.get("value")} if "benchmark_quality" in strategy else {})}


def _plan_config(path: Optional[Path]) -> tuple[RouterConfig, str]:
    if path is not None:
        return load_or_fail(path, strict_env=False), str(path)
    default = default_config_path()
    if default.exists():
        return load_or_fail(default, strict_env=False), str(default)
    from ..demo import emulated_config

    cfg = emulated_config({"cerebras": "http://127.0.0.1:1/v1", "runpod": "http://127.0.0.1:1/v1"})
    return cfg, "the seed's pair (emulator profiles)"


def ledger_volume(
    ledger: Optional[str], config: RouterConfig | None, since: Optional[str],
) -> tuple[int, float, str, RouterConfig | None]:
    """(tokens per 30 days, input share, description, a config of the prices the ledger noted)."""
    from ..report import window

    try:
        lo, hi = window(since, None, None)
    except ValueError as exc:
        fail(str(exc))
    store = open_ledger_store(ledger, config)
    try:
        first, last, prompt, completion = store.fetch(
            "SELECT MIN(ts), MAX(ts), SUM(prompt_tokens), SUM(completion_tokens) FROM requests "
            "WHERE status = 'ok' AND ts >= ? AND ts < ?", (lo, hi))[0]
        noted = store.prices()
    except LLMRouteError as exc:
        fail(str(exc))
    finally:
        store.close()
    tokens = int(prompt or 0) + int(completion or 0)
    if not tokens:
        fail("the ledger has no answered requests in this period to plan from", code=1)
    span_s = max(float(last) - float(first), 3600.0)  # at least an hour, so one burst does not extrapolate wildly
    monthly = round(tokens * 30 * 86400 / span_s)
    described = (f"the ledger ({store.where}): {tokens:,} tokens over {span_s / 86400:.2f} days, "
                 f"scaled to 30 days")
    return monthly, int(prompt or 0) / tokens, described, config_from_ledger(noted) if noted else None
