"""``llmroute quality``: retained quality measured on your own traffic, from the ledger's graded pairs."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..errors import LLMRouteError
from ..pricing import format_usd
from .collect import collect
from .common import (ConfigOption, FormatOption, FromOption, LedgerOption, OutputFormat, SinceOption, ToOption,
                     check_plot_path, console, err, fail, open_period, output_format, print_csv, print_json)

quality_app = typer.Typer(help="Measure the quality routing keeps, on your own prompts and traffic.")


@quality_app.callback(invoke_without_command=True)
def quality(
    ctx: typer.Context,
    since: SinceOption = None,
    from_: FromOption = None,
    to: ToOption = None,
    by: Annotated[str, typer.Option(help="strategy, route, tag, decision or day")] = "strategy",
    fmt: FormatOption = "table",
    plot: Annotated[Optional[Path], typer.Option(help="Write the cost/quality curve to FILE.png, .svg, .pdf or .html")] = None,
    ledger: LedgerOption = None,
    config: ConfigOption = None,
) -> None:
    """Retained quality (served over reference, 95% CI), pairs, measurement spend and your cost/quality curve."""
    if ctx.invoked_subcommand is not None:
        return
    from ..quality_report import BY, DEFAULT_MIN_PAIRS, build_quality_report

    fmt = output_format(fmt)
    check_plot_path(plot)
    if by not in BY:
        fail(f"--by must be one of {', '.join(BY)}, not '{by}'")
    lo, hi, cfg, store = open_period(since, from_, to, ledger, config)
    min_pairs = cfg.shadow.min_pairs if cfg is not None else DEFAULT_MIN_PAIRS
    try:
        built = build_quality_report(store, by, lo, hi, min_pairs)
    except LLMRouteError as exc:
        fail(str(exc))
    finally:
        store.close()
    if fmt == OutputFormat.JSON:
        print_json({"from": lo, "to": hi, "ledger": store.where, **built.to_dict()})
    elif fmt == OutputFormat.CSV:
        print_csv([r.to_dict() for r in [*built.rows, built.total]])
    else:
        _print_quality(built, store.where)
    if fmt != OutputFormat.TABLE:
        for warning in built.warnings:  # stdout stays machine-readable
            err.print(Text.assemble(("warning:", "yellow"), " ", warning), highlight=False, soft_wrap=True)
    if plot is not None:
        _plot(plot, built)


quality_app.command("collect")(collect)


def _print_quality(built, where: str) -> None:  # type: ignore[no-untyped-def]
    graders = ", ".join(f"{g} ({n:,} pairs)" for g, n in sorted(built.total.graders.items(), key=lambda kv: -kv[1]))
    table = Table(title=f"Retained quality by {built.by} (ledger: {where})", title_justify="left",
                  caption="retained: mean grade of the answers served / mean grade of the reference tier's answers; "
                          f"measuring $: shadow calls and judge; graded by {graders or '-'}", caption_justify="left")
    widest = max((len(row.group) for row in built.rows), default=5)
    for column in (built.by, "pairs", "ungraded", "retained", "95% CI", "served", "reference", "measuring $"):
        table.add_column(column, justify="left" if column == built.by else "right", no_wrap=True,
                         min_width=widest if column == built.by else None)
    for row in [*built.rows, built.total]:
        table.add_row(
            Text(row.group, style="bold") if row is built.total else row.group, f"{row.pairs:,}", f"{row.ungraded:,}",
            *_value_and_interval(row.estimate), _mean(row.served_mean), _mean(row.reference_mean),
            format_usd(row.shadow_cost_usd + row.judge_cost_usd))
    if built.total.pairs or built.total.ungraded:
        console.print(table)
    curve = built.curve
    if curve is not None:
        line = curve.line
        calls = line.calls_for(0.95)
        console.print(Text.assemble(("Your cost/quality curve", "bold"), f": {curve.pairs:,} pairs quality_aware "
                                    "routed, re-decided from their logged scores"), highlight=False)
        shares = Table(title_justify="left")
        for column in ("to reference", "retained", "95% CI", "prompt-blind split"):
            shares.add_column(column, justify="right", no_wrap=True)
        for i in range(0, 101, 10):
            shares.add_row(f"{i}%", *_value_and_interval(curve.points[i]), f"{curve.prompt_blind[i].value:.1%}")
        console.print(shares)
        console.print(f"calls to the reference for 95% of its quality: "
                      f"{'not reached' if calls is None else f'{calls:.0%}'}; APGR {line.apgr():.3f} "
                      "(0.5 is a prompt-blind split)", highlight=False)
    for warning in built.warnings:
        console.print(Text.assemble(("warning:", "yellow"), " ", warning), highlight=False, soft_wrap=True)


def _value_and_interval(estimate) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """``96.1%`` and ``94.8–97.2%``: two narrow columns instead of one that wraps."""
    if estimate is None:
        return "-", "-"
    return f"{estimate.value:.1%}", f"{estimate.low:.1%}–{estimate.high:.1%}"


def _mean(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _plot(path: Path, built) -> None:  # type: ignore[no-untyped-def]
    from ..plots import write_chart
    from ..quality_report import format_estimate, quality_chart

    if built.curve is None and built.prompt_blind is None:
        fail("--plot: no graded pairs in this period to plot")
    title = "llmroute: retained quality against the share sent to the reference tier"
    table = "<table border=1 cellpadding=4><tr>" + "".join(
        f"<th>{html.escape(h)}</th>" for h in (built.by, "pairs", "retained (95% CI)")) + "</tr>"
    for row in [*built.rows, built.total]:
        table += (f"<tr><td>{html.escape(row.group)}</td><td>{row.pairs}</td>"
                  f"<td>{html.escape(format_estimate(row.estimate))}</td></tr>")
    try:
        write_chart(path, lambda fmt: quality_chart(built.curve, built.prompt_blind, title, fmt), title,
                    table + "</table>")
    except (LLMRouteError, OSError) as exc:
        fail(str(exc))
    err.print(f"wrote {path}", highlight=False)
