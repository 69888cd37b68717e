"""``llmroute status``: what a running gateway thinks of each provider, and what it has spent, from its
``/router/state``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Annotated, Any, Optional

import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..config.loading import redact_url
from .common import FormatOption, JsonAlias, OutputFormat, console, fail, output_format, print_csv, print_json

commands = typer.Typer()
"""Added to the root app without a name: its commands are top-level."""

_STYLE = {"closed": "green", "half_open": "yellow", "open": "red"}
SHOWN_PER_DIMENSION = 10
"""Keys, tags and providers shown per table (the costliest this period); --format json has them all."""
_DIMENSIONS = (("keys", "key"), ("tags", "tag"), ("providers", "provider"))
_CSV_TABLES = ("providers", "spend", "budgets")


@commands.command()
def status(
    url: Annotated[str, typer.Option(help="The gateway's address")] = "http://127.0.0.1:8080",
    api_key: Annotated[Optional[str], typer.Option(help="A gateway key, if it needs one", envvar="LLMROUTE_API_KEY")] = None,
    watch: Annotated[Optional[float], typer.Option(
        help="Refresh in place every this many seconds until Ctrl-C (table format)", min=0.2)] = None,
    fmt: FormatOption = "table",
    as_json: JsonAlias = False,
    table: Annotated[str, typer.Option(
        "--table", help=f"What --format csv prints: {' | '.join(_CSV_TABLES)}")] = "providers",
) -> None:
    """Breakers, cool-downs, latency, error rates and connection pools of each provider, spend today and this period per key, tag and
    provider, budgets (and their pacing) and shadow evaluation, as a running gateway sees them."""
    fmt = output_format(fmt, as_json)
    shown = redact_url(url)
    if watch is not None and fmt != OutputFormat.TABLE:
        fail("--watch refreshes a table: use it without --format json/csv")
    if table not in _CSV_TABLES:
        fail(f"--table {table!r}: use one of {', '.join(_CSV_TABLES)}")
    state = _fetch(url, api_key, shown)
    if fmt == OutputFormat.JSON:
        print_json(state)
        return
    if fmt == OutputFormat.CSV:
        print_csv(_spend_rows(state) if table == "spend" else _budget_rows(state) if table == "budgets" else
                  [{"provider": name, "breaker": p.get("breaker", {}).get("state"),
                    "breaker_reason": p.get("breaker", {}).get("reason"), "latency_ms": p.get("latency_ms"),
                    "error_rate": p.get("error_rate"), "cooling_down_s": p.get("cooling_down_s"),
                    "weight": p.get("weight"), **_pool_fields(p.get("pool"))}
                   for name, p in state.get("providers", {}).items()])
        return
    if watch is None:
        console.print(_view(state, shown))
        return
    try:
        if not console.is_terminal:  # piped or logged: each refresh printed after the last, with its time
            while True:
                console.print(Text(time.strftime("%Y-%m-%d %H:%M:%S"), style="dim"), _view(state, shown))
                time.sleep(watch)  # the refresh interval the user asked for, not a synchronisation
                state = _fetch(url, api_key, shown)
        with Live(_view(state, shown), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(watch)
                live.update(_view(_fetch(url, api_key, shown), shown), refresh=True)
    except KeyboardInterrupt:
        return


def _fetch(url: str, api_key: str | None, shown: str) -> dict[str, Any]:
    request = urllib.request.Request(url.rstrip("/") + "/router/state")
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            state = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        fail(f"{shown}: the gateway answered {exc.code}" + (" (pass --api-key)" if exc.code == 401 else ""), code=1)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        fail(f"{shown}: cannot reach the gateway ({reason})", code=1)
    except ValueError:
        fail(f"{shown}: the answer is not llmroute's /router/state JSON", code=1)
    if not isinstance(state, dict):
        fail(f"{shown}: the answer is not llmroute's /router/state JSON", code=1)
    return state


def _view(state: dict[str, Any], shown: str) -> Group:
    """The providers' table, then budgets and shadow evaluation when the gateway has them."""
    table = Table(title=f"llmroute gateway at {shown} (default strategy {state.get('default_strategy')})",
                  title_justify="left")
    for column in ("provider", "breaker", "since", "why", "latency ms", "error rate", "cooling", "weight", "pool"):
        table.add_column(column, justify="right" if column in ("latency ms", "error rate", "since") else "left")
    for name, p in state.get("providers", {}).items():
        breaker = p.get("breaker", {})
        label = breaker.get("state", "?")
        if label == "open":
            label += f" (probe in {breaker.get('retry_in_s', 0):.1f} s)"
        table.add_row(
            name, Text(label, style=_STYLE.get(breaker.get("state"), "white")), f"{breaker.get('since_s', 0):.0f} s",
            breaker.get("reason") or "-", f"{p.get('latency_ms', 0):.0f}", f"{p.get('error_rate', 0):.1%}",
            f"{p['cooling_down_s']:.1f} s" if p.get("cooling_down_s") else "-", f"{p.get('weight', 0):g}",
            _pool_cell(p.get("pool")),
        )
    parts: list[Any] = [table]
    spend = state.get("spend")
    if isinstance(spend, dict) and isinstance(spend.get("today"), dict) and isinstance(spend.get("this_period"), dict):
        parts.append(_spend_table(spend))
    budgets = {n: b for n, b in (state.get("budgets") or {}).items() if isinstance(b, dict)}
    if budgets:
        limits = Table(title="budgets (this period)", title_justify="left")
        for column in ("budget", "period", "limit", "spent", "reserved", "left", "when spent"):
            limits.add_column(column, justify="left" if column in ("budget", "period", "when spent") else "right")
        for name, b in budgets.items():
            limits.add_row(name, str(b.get("period", "-")), _usd(b.get("usd")), _usd(b.get("spent_usd")),
                           _usd(b.get("reserved_usd")), _usd(b.get("left_usd")), str(b.get("on_exhausted", "-")))
        parts.append(limits)
        paced = {n: b["pacing"] for n, b in budgets.items() if isinstance(b.get("pacing"), dict)}
        if paced:
            parts.append(_pacing_table(paced))
    shadow = state.get("shadow")
    if isinstance(shadow, dict) and shadow.get("rate"):
        retained = shadow.get("retained") or {}
        quality = (f"retained {retained['estimate']:.1%} (95% CI {retained['low']:.1%}-{retained['high']:.1%}, "
                   f"{retained['pairs']:,} pairs)" if retained else "retained: not measured yet")
        parts.append(Text(f"shadow evaluation at rate {shadow['rate']:g}: {shadow.get('sampled', 0):,} sampled, "
                          f"{shadow.get('in_flight', 0)} in flight, {shadow.get('queued', 0)} queued, spent today "
                          f"{_usd(shadow.get('spent_today_usd'))} of {_usd(shadow.get('cap_usd_per_day'))}; {quality}"))
    return Group(*parts)


def _pool_cell(pool: Any) -> Text:
    """Connections in use of the most, requests waiting for one now, and the waits so far."""
    if not isinstance(pool, dict):
        return Text("-")
    text = f"{pool.get('in_use', 0):,}/{pool.get('max_connections', 0):,}"
    if pool.get("waiting"):
        text += f", {pool['waiting']:,} waiting"
    if pool.get("waits_total"):
        text += f"; {pool['waits_total']:,} waited (p95 {pool.get('wait_p95_ms') or 0:,.0f} ms"
        text += f", {pool['wait_timeouts_total']:,} gave up)" if pool.get("wait_timeouts_total") else ")"
    return Text(text, style="yellow" if pool.get("waiting") else "white")


def _pool_fields(pool: Any) -> dict[str, Any]:
    """--format csv: the pool's numbers as ``pool_*`` columns."""
    pool = pool if isinstance(pool, dict) else {}
    return {f"pool_{key}": pool.get(key) for key in _POOL_FIELDS}


_POOL_FIELDS = ("max_connections", "in_use", "waiting", "waits_total", "wait_timeouts_total", "wait_p95_ms")


def _spend_table(spend: dict[str, Any]) -> Table:
    """Today's and this period's spend in all, then per key, tag and provider (the costliest first)."""
    today, period = spend["today"], spend["this_period"]
    table = Table(title=f"spend (today UTC, and this {spend.get('period', 'period')})", title_justify="left")
    for column in ("by", "name", "today", "tokens", "requests", f"this {spend.get('period', 'period')}", "tokens ",
                   "requests "):
        table.add_column(column, justify="left" if column in ("by", "name") else "right")
    table.add_row("all", "", *_sums(today.get("all")), *_sums(period.get("all")))
    for plural, label in _DIMENSIONS:
        rows = period.get(plural) or {}
        for name in list(rows)[:SHOWN_PER_DIMENSION]:
            table.add_row(label, name, *_sums((today.get(plural) or {}).get(name)), *_sums(rows[name]))
        if len(rows) > SHOWN_PER_DIMENSION:
            table.add_row(label, Text(f"... {len(rows) - SHOWN_PER_DIMENSION} more (--format json)", style="dim"))
    return table


def _sums(sums: Any) -> tuple[str, str, str]:
    if not isinstance(sums, dict):
        return "-", "-", "-"
    return _usd(sums.get("cost_usd")), f"{sums.get('tokens', 0):,}", f"{sums.get('requests', 0):,}"


def _pacing_table(paced: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="budget pacing", title_justify="left")
    for column in ("budget", "target", "spent", "strong share", "wanted", "projected end", "bound"):
        table.add_column(column, justify="left" if column in ("budget", "bound") else "right")
    for name, p in paced.items():
        table.add_row(name, _usd(p.get("target_usd")), _usd(p.get("spend_usd")), _share(p.get("share")),
                      _share(p.get("wanted_share")), _usd(p.get("projected_end_usd")), str(p.get("bound") or "-"))
    return table


def _spend_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """--table spend: one row per window and series."""
    spend = state.get("spend") or {}
    rows = []
    for window, key in (("day", "today"), ("period", "this_period")):
        view = spend.get(key) or {}
        series = [("all", "all", view.get("all"))] + [
            (label, name, sums) for plural, label in _DIMENSIONS for name, sums in (view.get(plural) or {}).items()]
        rows.extend({"window": window, "start_ts": view.get("start_ts"), "by": by, "name": name,
                     "cost_usd": (sums or {}).get("cost_usd"), "tokens": (sums or {}).get("tokens"),
                     "requests": (sums or {}).get("requests")} for by, name, sums in series if sums is not None)
    return rows


def _budget_rows(state: dict[str, Any]) -> list[dict[str, Any]]:
    """--table budgets: one row per budget, its pacing state's fields beside it when it has one."""
    rows = []
    for name, b in (state.get("budgets") or {}).items():
        if isinstance(b, dict):
            pacing = b.get("pacing") if isinstance(b.get("pacing"), dict) else {}
            rows.append({"budget": name, **{k: v for k, v in b.items() if k != "pacing"},
                         **{f"pacing_{k}": pacing.get(k) for k in _PACING_FIELDS}})
    return rows


_PACING_FIELDS = ("target_usd", "spend_usd", "share", "wanted_share", "projected_end_usd", "bound", "exhausts_at_ts")


def _share(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "-"


def _usd(value: Any) -> str:
    return f"${value:,.6f}".rstrip("0").rstrip(".") if isinstance(value, (int, float)) else "-"
