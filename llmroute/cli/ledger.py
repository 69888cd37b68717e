"""Commands that read the ledger: ``report`` and ``replay``."""

from __future__ import annotations

import html
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..config import RouterConfig
from ..errors import LLMRouteError
from ..ledger import Store
from ..ledger.store import PriceRow
from ..pricing import format_price_per_m, format_usd
from .common import (ConfigOption, FormatOption, FromOption, JsonAlias, LedgerOption, OutputFormat, SinceOption, ToOption,
                     check_plot_path, config_from_ledger, console, err, fail, open_period, output_format, parse_strategy,
                     print_csv, print_json)

commands = typer.Typer()
"""Added to the root app without a name: its commands are top-level."""


def ledger_prices(store: Store, config: RouterConfig | None) -> dict[str, PriceRow]:
    """Prices from the config when given, else as the ledger noted them when traffic was recorded."""
    from ..ledger import price_rows

    prices = store.prices()
    if config is not None:
        prices.update({p.provider: p for p in price_rows(config)})
    return prices


def pick_baseline(prices: dict[str, PriceRow], config: RouterConfig | None, name: Optional[str]) -> PriceRow | None:
    if name is None and config is not None:
        name = config.baseline()
    if name is None:
        priced = [p for p in prices.values() if p.input_per_m is not None and p.output_per_m is not None]
        return max(priced, key=lambda p: p.input_per_m + p.output_per_m) if priced else None  # type: ignore[operator]
    if name not in prices:
        fail(f"--baseline: no provider '{name}' in the config or the ledger (known: {', '.join(sorted(prices))})")
    if prices[name].input_per_m is None:
        fail(f"--baseline: provider '{name}' has no price_per_m to price tokens with")
    return prices[name]


@commands.command()
def report(
    since: SinceOption = None,
    from_: FromOption = None,
    to: ToOption = None,
    by: Annotated[str, typer.Option(help="provider, strategy, model, tag, key, user, day, route, status or decision")] = "provider",
    fmt: FormatOption = "table",
    plot: Annotated[Optional[Path], typer.Option(help="Write spend per day and cumulative savings to FILE.png, .svg, .pdf or .html")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Provider to price the same tokens on (default: the premium one)")] = None,
    ledger: LedgerOption = None,
    config: ConfigOption = None,
) -> None:
    """Requests, tokens, spend, blended $/1M, latency, fallbacks and savings, from the ledger."""
    from ..report import GROUPS, build_report, daily_by_provider

    fmt = output_format(fmt)
    check_plot_path(plot)
    if by not in GROUPS:
        fail(f"--by must be one of {', '.join(GROUPS)}, not '{by}'")
    lo, hi, cfg, store = open_period(since, from_, to, ledger, config)
    try:
        prices = ledger_prices(store, cfg)
        base = pick_baseline(prices, cfg, baseline)
        built = build_report(store, by, lo, hi, base, prices)
        rows, total, effective = built.rows, built.total, built.prices
        daily = daily_by_provider(store, lo, hi) if plot is not None else []
    except LLMRouteError as exc:
        fail(str(exc))
    finally:
        store.close()
    base_name = base.provider if base is not None else "none"
    if fmt == OutputFormat.JSON:
        print_json({"by": by, "from": lo, "to": hi, "baseline": base_name, "ledger": store.where,
                    "groups": [r.to_dict() for r in rows], "total": total.to_dict(),
                    "prices": [asdict(p) for p in effective], "measurement": built.measurement})
    elif fmt == OutputFormat.CSV:
        print_csv([r.to_dict() for r in [*rows, total]])
    else:
        _print_report(rows, total, effective, by, base_name, store.where)
        _print_measurement(built.measurement)
    if plot is not None:
        _plot(plot, daily, base, by, rows, total)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _print_report(rows: list, total: object, effective: list, by: str, base_name: str, where: str) -> None:
    table = Table(title=f"Spend by {by} (ledger: {where})", title_justify="left",
                  caption=f"savings: the same tokens priced on {base_name}")
    for column in (by, "requests", "failed", "tokens", "spend", "$/1M", f"{base_name} would cost", "saved",
                   "p50 ms", "p95 ms", "fallback rate"):
        table.add_column(column, justify="left" if column == by else "right")
    for row in [*rows, total]:
        spend = format_usd(row.cost_usd)
        if row.unknown_cost_requests:
            spend += f" (+{row.unknown_cost_requests} unpriced)"
        elif row.estimated_tokens_requests:  # the provider sent no usage: priced from estimated tokens
            spend += f" ({row.estimated_tokens_requests} est.)"
        elif row.gpu_priced_requests:
            spend += " (GPU-s est.)"
        table.add_row(
            Text(row.group, style="bold") if row is total else row.group, f"{row.requests:,}", f"{row.failed:,}",
            f"{row.tokens:,}", spend, format_price_per_m(row.blended_per_m), format_usd(row.baseline_usd),
            f"{format_usd(row.savings_usd)} ({row.savings_pct:.0f}%)", _ms(row.p50_ms), _ms(row.p95_ms),
            f"{row.fallback_rate:.1%}",
        )
    console.print(table)
    prices = Table(title="Prices: configured and effective", title_justify="left")
    for column in ("provider", "configured", "effective $/1M", "worker busy time", "tokens served"):
        prices.add_column(column, justify="left" if column in ("provider", "configured") else "right")
    for p in effective:
        prices.add_row(p.provider, p.configured,
                       format_price_per_m(p.effective_per_m) if p.effective_per_m is not None else "unknown (no traffic)",
                       f"{p.busy_s:,.1f} s" if p.busy_s is not None else "-", f"{p.tokens:,}")
    console.print(prices)


def _print_measurement(spend: dict) -> None:
    """Shadow and judge calls: what measuring quality cost, kept apart from what serving cost."""
    if not spend.get("pairs"):
        return
    console.print(f"cost of measurement (not in the spend above): {format_usd(spend['total_usd'])} = "
                  f"{format_usd(spend['shadow_cost_usd'])} shadow calls + {format_usd(spend['judge_cost_usd'])} "
                  f"judge, for {spend['pairs']:,} graded pairs (llmroute quality)", highlight=False)


def _plot(path: Path, daily: list, base: PriceRow | None, by: str, rows: list, total: object) -> None:
    from ..plots import spend_chart, write_chart
    from ..report import baseline_cost

    points = [(day, provider, cost, baseline_cost(base, prompt, completion, cached))
              for day, provider, cost, prompt, completion, cached in daily]
    if not points:
        fail("--plot: no requests in this period to plot")
    title = "llmroute: spend per day by provider, and cumulative savings"
    table = "<table border=1 cellpadding=4><tr>" + "".join(
        f"<th>{html.escape(h)}</th>" for h in (by, "requests", "spend US$", "baseline US$", "saved US$")) + "</tr>"
    for row in [*rows, total]:
        table += (f"<tr><td>{html.escape(row.group)}</td><td>{row.requests}</td><td>{row.cost_usd:.6f}</td>"
                  f"<td>{row.baseline_usd:.6f}</td><td>{row.savings_usd:.6f}</td></tr>")
    try:
        write_chart(path, lambda fmt: spend_chart(points, title, fmt), title, table + "</table>")
    except (LLMRouteError, OSError) as exc:
        fail(str(exc))
    err.print(f"wrote {path}", highlight=False)


def parse_weights(text: str, providers: list[str]) -> dict[str, float]:
    """'runpod=70,cerebras=30' -> {'runpod': 70.0, 'cerebras': 30.0}, checked against the providers."""
    weights: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in providers:
            fail(f"--weights: unknown provider '{name}' (known: {', '.join(providers)})")
        try:
            weights[name] = float(value)
        except ValueError:
            fail(f"--weights: '{part}' needs a number after '=', e.g. {name}=70")
        if weights[name] < 0:
            fail(f"--weights: {name} must be >= 0")
    if not weights or sum(weights.values()) <= 0:
        fail("--weights: give at least one positive weight, e.g. runpod=70,cerebras=30")
    return weights


@commands.command()
def replay(
    strategy: Annotated[str, typer.Option(help="Strategy to replay the logged traffic under")],
    weights: Annotated[Optional[str], typer.Option(help="Weights for balanced, e.g. runpod=70,cerebras=30")] = None,
    since: Annotated[Optional[str], typer.Option(help="Time span back from now (default 30d)")] = None,
    from_: Annotated[Optional[str], typer.Option("--from", help="Start date")] = None,
    to: Annotated[Optional[str], typer.Option(help="End date")] = None,
    strong_share: Annotated[Optional[float], typer.Option(help="For quality_aware: the share of strong calls")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the latency draws")] = 0,
    fmt: FormatOption = "table",
    as_json: JsonAlias = False,
    ledger: LedgerOption = None,
    config: ConfigOption = None,
) -> None:
    """What the logged traffic would have cost, and likely waited, under another strategy or split.

    quality_aware is replayed from the scores it logged (the ledger keeps no prompts), so only
    requests it routed count; --strong-share re-decides them under another target.
    """
    from ..replay import replay as run_replay
    from ..report import build_report
    from ..strategies import RoutingStrategy

    name = parse_strategy(strategy)
    fmt = output_format(fmt, as_json)
    lo, hi, cfg, store = open_period(since, from_, to, ledger, config)
    try:
        prices = ledger_prices(store, cfg)
        cfg = cfg or config_from_ledger(prices)
        if weights is not None:
            if name != RoutingStrategy.BALANCED:
                fail("--weights only applies to --strategy balanced")
            cfg = cfg.model_copy(update={"balanced_weights": parse_weights(weights, list(cfg.providers))})
        if strong_share is not None:
            from ..config import QualityTarget

            if name != RoutingStrategy.QUALITY_AWARE:
                fail("--strong-share only applies to --strategy quality_aware")
            if not 0.0 <= strong_share <= 1.0:
                fail("--strong-share must be between 0 and 1")
            target = QualityTarget(strong_share=strong_share)
            cfg = cfg.model_copy(update={"quality_aware": cfg.quality_aware.model_copy(update={"target": target})})
        effective = {p.provider: p.effective_per_m for p in build_report(store, "provider", lo, hi, None, prices).prices
                     if p.busy_s is not None and p.effective_per_m is not None}
        result = run_replay(store, cfg, name, lo, hi, effective_per_m=effective, seed=seed)
    except LLMRouteError as exc:
        fail(str(exc))
    finally:
        store.close()
    if fmt == OutputFormat.JSON:
        print_json({"actual": result.actual.to_dict(), "estimate": result.estimate.to_dict(),
                    "latency_source": result.latency_source, "skipped_without_score": result.skipped})
        return
    if fmt == OutputFormat.CSV:
        print_csv([result.actual.to_dict(), result.estimate.to_dict()])
        return
    if not result.actual.requests:
        fail("no successful requests in the ledger for this period", code=1)
    table = Table(title=f"Replay of {result.actual.requests:,} logged requests", title_justify="left")
    for column in ("", "split", "cost", "$/1M", "p50 ms", "p95 ms"):
        table.add_column(column, justify="left" if column in ("", "split") else "right")
    for outcome in (result.actual, result.estimate):
        split = " / ".join(f"{n} {c / outcome.requests:.0%}" for n, c in outcome.split.most_common())
        table.add_row(outcome.label, split, format_usd(outcome.cost_usd), format_price_per_m(outcome.blended_per_m),
                      _ms(outcome.p50_ms), _ms(outcome.p95_ms))
    console.print(table)
    if result.skipped:
        console.print(f"{result.skipped:,} requests routed by other strategies have no quality score and are left out "
                      "of both rows", highlight=False)
    delta = result.estimate.cost_usd - result.actual.cost_usd
    pct = 100 * delta / result.actual.cost_usd if result.actual.cost_usd else 0.0
    console.print(f"would have cost {format_usd(abs(delta))} {'more' if delta >= 0 else 'less'} "
                  f"({abs(pct):.0f}%) than what was spent. Latencies: "
                  + "; ".join(f"{n} {s}" for n, s in result.latency_source.items()), highlight=False)
