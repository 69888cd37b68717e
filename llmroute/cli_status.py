"""``llmroute status``: what a running gateway thinks of each provider, from its ``/router/state``."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from .cli import FormatOption, JsonAlias, OutputFormat, fail, app, console, output_format, print_csv, print_json
from .config.loading import redact_url

_STYLE = {"closed": "green", "half_open": "yellow", "open": "red"}


@app.command()
def status(
    url: Annotated[str, typer.Option(help="The gateway's address")] = "http://127.0.0.1:8080",
    api_key: Annotated[Optional[str], typer.Option(help="A gateway key, if it needs one", envvar="LLMROUTE_API_KEY")] = None,
    fmt: FormatOption = "table",
    as_json: JsonAlias = False,
) -> None:
    """Breakers, cool-downs, latency and error rates of each provider, as a running gateway sees them."""
    fmt = output_format(fmt, as_json)
    shown = redact_url(url)
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
    if fmt == OutputFormat.JSON:
        print_json(state)
        return
    if fmt == OutputFormat.CSV:
        print_csv([{"provider": name, "breaker": p.get("breaker", {}).get("state"),
                    "breaker_reason": p.get("breaker", {}).get("reason"), "latency_ms": p.get("latency_ms"),
                    "error_rate": p.get("error_rate"), "cooling_down_s": p.get("cooling_down_s"),
                    "weight": p.get("weight")} for name, p in state.get("providers", {}).items()])
        return
    table = Table(title=f"llmroute gateway at {shown} (default strategy {state.get('default_strategy')})",
                  title_justify="left")
    for column in ("provider", "breaker", "since", "why", "latency ms", "error rate", "cooling", "weight"):
        table.add_column(column, justify="right" if column in ("latency ms", "error rate", "since") else "left")
    for name, p in state.get("providers", {}).items():
        breaker = p.get("breaker", {})
        shown = breaker.get("state", "?")
        if shown == "open":
            shown += f" (probe in {breaker.get('retry_in_s', 0):.1f} s)"
        table.add_row(
            name, Text(shown, style=_STYLE.get(breaker.get("state"), "white")), f"{breaker.get('since_s', 0):.0f} s",
            breaker.get("reason") or "-", f"{p.get('latency_ms', 0):.0f}", f"{p.get('error_rate', 0):.1%}",
            f"{p['cooling_down_s']:.1f} s" if p.get("cooling_down_s") else "-", f"{p.get('weight', 0):g}",
        )
    console.print(table)
