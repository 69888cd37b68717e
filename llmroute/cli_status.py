"""``llmroute status``: what a running gateway thinks of each provider, from its ``/router/state``."""

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

from .cli import FormatOption, JsonAlias, OutputFormat, fail, app, console, output_format, print_csv, print_json
from .config.loading import redact_url

_STYLE = {"closed": "green", "half_open": "yellow", "open": "red"}


@app.command()
def status(
    url: Annotated[str, typer.Option(help="The gateway's address")] = "http://127.0.0.1:8080",
    api_key: Annotated[Optional[str], typer.Option(help="A gateway key, if it needs one", envvar="LLMROUTE_API_KEY")] = None,
    watch: Annotated[Optional[float], typer.Option(
        help="Refresh in place every this many seconds until Ctrl-C (table format)", min=0.2)] = None,
    fmt: FormatOption = "table",
    as_json: JsonAlias = False,
) -> None:
    """Breakers, cool-downs, latency and error rates of each provider, budgets and shadow evaluation, as a running
    gateway sees them."""
    fmt = output_format(fmt, as_json)
    shown = redact_url(url)
    if watch is not None and fmt != OutputFormat.TABLE:
        fail("--watch refreshes a table: use it without --format json/csv")
    state = _fetch(url, api_key, shown)
    if fmt == OutputFormat.JSON:
        print_json(state)
        return
    if fmt == OutputFormat.CSV:
        print_csv([{"provider": name, "breaker": p.get("breaker", {}).get("state"),
                    "breaker_reason": p.get("breaker", {}).get("reason"), "latency_ms": p.get("latency_ms"),
                    "error_rate": p.get("error_rate"), "cooling_down_s": p.get("cooling_down_s"),
                    "weight": p.get("weight")} for name, p in state.get("providers", {}).items()])
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
    for column in ("provider", "breaker", "since", "why", "latency ms", "error rate", "cooling", "weight"):
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
        )
    parts: list[Any] = [table]
    budgets = state.get("budgets")
    if isinstance(budgets, dict) and budgets:
        spend = Table(title="budgets (this period)", title_justify="left")
        for column in ("budget", "period", "limit", "spent", "reserved", "left", "when spent"):
            spend.add_column(column, justify="left" if column in ("budget", "period", "when spent") else "right")
        for name, b in budgets.items():
            if isinstance(b, dict):
                spend.add_row(name, str(b.get("period", "-")), _usd(b.get("usd")), _usd(b.get("spent_usd")),
                              _usd(b.get("reserved_usd")), _usd(b.get("left_usd")), str(b.get("on_exhausted", "-")))
        parts.append(spend)
    shadow = state.get("shadow")
    if isinstance(shadow, dict) and shadow.get("rate"):
        retained = shadow.get("retained") or {}
        quality = (f"retained {retained['estimate']:.1%} (95% CI {retained['low']:.1%}-{retained['high']:.1%}, "
                   f"{retained['pairs']:,} pairs)" if retained else "retained: not measured yet")
        parts.append(Text(f"shadow evaluation at rate {shadow['rate']:g}: {shadow.get('sampled', 0):,} sampled, "
                          f"{shadow.get('in_flight', 0)} in flight, {shadow.get('queued', 0)} queued, spent today "
                          f"{_usd(shadow.get('spent_today_usd'))} of {_usd(shadow.get('cap_usd_per_day'))}; {quality}"))
    return Group(*parts)


def _usd(value: Any) -> str:
    return f"${value:,.6f}".rstrip("0").rstrip(".") if isinstance(value, (int, float)) else "-"
