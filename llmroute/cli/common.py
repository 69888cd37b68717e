"""What the command groups share: the consoles, ``fail``, output formats, option types, and opening the ledger."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text

from ..config import RouterConfig, default_config_path, load_config
from ..errors import ConfigError, LLMRouteError
from ..ledger import Store, ledger_location, open_store
from ..ledger.store import PriceRow
from ..strategies import RoutingStrategy

MAX_PORT = 65535
"""Largest TCP port: every ``--port`` option is checked against it, so a typo is a usage error, not a traceback."""

# Messages carry file names, keys and install hints such as ``llmroute[plot]``: Rich must print them as they
# are, so markup is off and styles are applied with ``Text``. Tables are wide; when output is piped, do not
# squeeze them into 80 columns (unless $COLUMNS says how wide to be).
console = Console(markup=False) if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=240, markup=False)
err = Console(stderr=True, markup=False)


def fail(message: str, code: int = 2) -> None:
    err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_or_fail(path: Optional[Path], *, strict_env: bool = True) -> RouterConfig:
    try:
        return load_config(path, strict_env=strict_env)
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def _format_choices() -> list[str]:
    return [f.value for f in OutputFormat]


FormatOption = Annotated[str, typer.Option("--format", help="table, json or csv", autocompletion=_format_choices)]
JsonAlias = Annotated[bool, typer.Option("--json", hidden=True, help="Same as --format json")]


def output_format(fmt: str, as_json: bool = False) -> OutputFormat:
    """``--format``, checked the same way on every command, with the older ``--json`` flag still honoured."""
    if as_json:
        return OutputFormat.JSON
    try:
        return OutputFormat(fmt.lower())
    except ValueError:
        fail(f"--format must be table, json or csv, not '{fmt}'")
        raise  # unreachable


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def print_csv(rows: list[dict[str, Any]]) -> None:
    """One header line, then one line per row; nested values (a split) as JSON text."""
    if not rows:
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()} for row in rows)
    print(out.getvalue(), end="")


def parse_strategy(value: str, option: str = "--strategy") -> RoutingStrategy:
    try:
        return RoutingStrategy(value)
    except ValueError as exc:
        fail(f"{option}: {exc}")
        raise  # unreachable


def check_plot_path(path: Optional[Path]) -> None:
    """Refuse a ``--plot`` file name whose format is not written, before any work is done."""
    if path is None:
        return
    from ..plots import chart_format

    try:
        chart_format(path)
    except LLMRouteError as exc:
        fail(str(exc))


def cannot_listen(host: str, port: int, exc: OSError) -> None:
    """One line naming the address and the reason (``address already in use``), not a traceback."""
    from ..playground import cannot_listen_message

    fail(cannot_listen_message(host, port, exc))


LedgerOption = Annotated[Optional[str], typer.Option(
    "--ledger", help="SQLite file or postgresql:// DSN (default: the config's, $LLMROUTE_LEDGER, or the user data dir)")]
ConfigOption = Annotated[Optional[Path], typer.Option(help="Config for prices and the ledger location")]
SinceOption = Annotated[Optional[str], typer.Option(help="Time span back from now: 30m, 12h, 7d, 4w (default 30d)")]
FromOption = Annotated[Optional[str], typer.Option("--from", help="Start date (YYYY-MM-DD or ISO date-time, UTC)")]
ToOption = Annotated[Optional[str], typer.Option(help="End date, inclusive for a plain date")]


def config_or_none(path: Optional[Path]) -> RouterConfig | None:
    candidate = path if path is not None else default_config_path()
    if path is None and not candidate.exists():
        return None
    try:
        return load_config(candidate, strict_env=False)
    except ConfigError as exc:
        fail(str(exc))
        raise


def open_ledger_store(ledger: Optional[str], config: RouterConfig | None) -> Store:
    location = ledger or ledger_location(config)
    if location is None:
        fail("the ledger is switched off ($LLMROUTE_LEDGER=off or ledger.enabled: false); pass --ledger")
    try:
        return open_store(location, readonly=True)  # type: ignore[arg-type]
    except LLMRouteError as exc:
        fail(str(exc))
        raise


def open_period(
    since: Optional[str], from_: Optional[str], to: Optional[str], ledger: Optional[str], config: Optional[Path],
) -> tuple[float, float, RouterConfig | None, Store]:
    """The period asked for, the config if any, and the ledger opened read-only; exits with a message on bad input."""
    from ..report import window

    try:
        lo, hi = window(since, from_, to)
    except ValueError as exc:
        fail(str(exc))
    cfg = config_or_none(config)
    return lo, hi, cfg, open_ledger_store(ledger, cfg)


def config_from_ledger(prices: dict[str, PriceRow]) -> RouterConfig:
    """A config holding the prices the ledger noted, for replays and plans run without the config file."""
    from ..config import parse_config

    providers = {}
    for p in prices.values():
        entry: dict[str, object] = {"base_url": "http://127.0.0.1:1/v1", "model": p.provider,
                                    "quality": p.quality, "latency_ms": p.latency_prior_ms, "idle_share": p.idle_share}
        if p.input_per_m is not None and p.output_per_m is not None:
            entry["price_per_m"] = {"input": p.input_per_m, "output": p.output_per_m,
                                    **({"cached_input": p.cached_input_per_m} if p.cached_input_per_m is not None else {})}
        if p.per_gpu_second is not None:
            entry["price_per_gpu_second"] = p.per_gpu_second
        providers[p.provider] = entry
    if not providers:
        fail("the ledger has no prices noted and no config was given: pass --config")
    return parse_config({"providers": providers}, file="(prices noted in the ledger)")
