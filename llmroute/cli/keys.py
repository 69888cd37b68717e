"""``llmroute keys``: gateway keys in the ledger's database. A key is printed once, when it is made."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from ..errors import LLMRouteError
from ..keys import GatewayKeys, KeySettings, split_list
from ..ledger import ledger_location, open_store
from .common import (ConfigOption, FormatOption, LedgerOption, OutputFormat, config_or_none, console, err, fail,
                     output_format, print_csv, print_json)

keys_app = typer.Typer(help="Gateway keys with limits, allowed strategies and tags, kept in the ledger's database.",
                       no_args_is_help=True)

NameArg = Annotated[str, typer.Argument(help="The key's name (recorded as key_id in the ledger)", show_default=False)]
BudgetOption = Annotated[Optional[float], typer.Option("--budget-usd", help="Budget in USD per --period (stored "
                                                        "for budget enforcement)")]
PeriodOption = Annotated[Optional[str], typer.Option("--period", help="day, week or month")]
RpmOption = Annotated[Optional[int], typer.Option("--rpm", help="Requests per minute, per gateway worker")]
TpmOption = Annotated[Optional[int], typer.Option("--tpm", help="Tokens per minute, per gateway worker")]
StrategiesOption = Annotated[Optional[str], typer.Option("--strategies", help="Comma-separated strategies the key "
                                                          "may use (default: all)")]
TagsOption = Annotated[Optional[list[str]], typer.Option("--tags", help="k=v tags added to every request "
                                                          "(comma-separated or repeated)")]


def _tags(values: Optional[list[str]]) -> tuple[str, ...] | None:
    return None if values is None else split_list(",".join(values))


def _open(ledger: Optional[str], config: Any, *, readonly: bool = False) -> GatewayKeys:
    cfg = config_or_none(config)
    location = ledger or ledger_location(cfg)
    if location is None:
        fail("the ledger is switched off ($LLMROUTE_LEDGER=off or ledger.enabled: false), and keys live in it; "
             "pass --ledger")
    try:
        busy_timeout_s = cfg.ledger.busy_timeout_s if cfg is not None else 10.0
        return GatewayKeys(open_store(location, readonly=readonly, busy_timeout_s=busy_timeout_s))  # type: ignore[arg-type]
    except LLMRouteError as exc:
        fail(str(exc))
        raise  # unreachable


def _run(keys: GatewayKeys, action: Any) -> Any:
    """Run a store action; its error (bad option, unknown name, unwritable ledger) as one line."""
    try:
        return action()
    except LLMRouteError as exc:
        fail(str(exc))
    finally:
        keys.store.close()


def _show(rows: list[dict[str, Any]], fmt: OutputFormat, title: str) -> None:
    if fmt == OutputFormat.JSON:
        print_json(rows)
        return
    if fmt == OutputFormat.CSV:
        print_csv(rows)
        return
    table = Table(title=title, title_justify="left")
    columns = list(rows[0]) if rows else ["name"]
    for column in columns:
        table.add_column(column, justify="right" if column in ("budget_usd", "rpm", "tpm") else "left")
    for row in rows:
        table.add_row(*(_cell(row[c]) for c in columns))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ",".join(value) or "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", help="The key's name (recorded as key_id in the ledger)")],
    budget_usd: BudgetOption = None,
    period: PeriodOption = None,
    rpm: RpmOption = None,
    tpm: TpmOption = None,
    strategies: StrategiesOption = None,
    tags: TagsOption = None,
    admin: Annotated[bool, typer.Option("--admin", help="An admin key (operators' endpoints)")] = False,
    ledger: LedgerOption = None,
    config: ConfigOption = None,
    fmt: FormatOption = "table",
) -> None:
    """Make a key and print it. It is shown this once: only its SHA-256 digest is stored."""
    fmt = output_format(fmt)
    settings = KeySettings(budget_usd=budget_usd, budget_period=period, rpm=rpm, tpm=tpm,
                           strategies=split_list(strategies), tags=_tags(tags) or (), admin=admin)
    keys = _open(ledger, config)
    key, stored = _run(keys, lambda: (keys.create(name, settings), keys.get(name)))
    if fmt == OutputFormat.TABLE:
        err.print(f"Created key '{name}' in {keys.store.where}. Save it now: it cannot be shown again.",
                  highlight=False, soft_wrap=True)
        print(key, flush=True)  # alone on stdout, so `KEY=$(llmroute keys create ...)` works
        return
    row = {"key": key, **stored.public()}
    if fmt == OutputFormat.CSV:
        print_csv([row])
    else:
        print_json(row)


@keys_app.command("list")
def list_keys(
    active: Annotated[bool, typer.Option("--active", help="Only keys not revoked")] = False,
    ledger: LedgerOption = None,
    config: ConfigOption = None,
    fmt: FormatOption = "table",
) -> None:
    """Every key's name, creation time, limits, strategies, tags and whether it is revoked (never a key)."""
    fmt = output_format(fmt)
    keys = _open(ledger, config, readonly=True)
    where = keys.store.where
    stored = _run(keys, lambda: keys.list(include_revoked=not active))
    _show([k.public() for k in stored], fmt, f"gateway keys in {where}")


@keys_app.command("update")
def update(
    name: NameArg,
    budget_usd: BudgetOption = None,
    period: PeriodOption = None,
    no_budget: Annotated[bool, typer.Option("--no-budget", help="Clear the budget")] = False,
    rpm: RpmOption = None,
    no_rpm: Annotated[bool, typer.Option("--no-rpm", help="Clear the requests-per-minute limit")] = False,
    tpm: TpmOption = None,
    no_tpm: Annotated[bool, typer.Option("--no-tpm", help="Clear the tokens-per-minute limit")] = False,
    strategies: StrategiesOption = None,
    all_strategies: Annotated[bool, typer.Option("--all-strategies", help="Allow every strategy")] = False,
    tags: Annotated[Optional[list[str]], typer.Option("--tags", help="Replace the key's tags")] = None,
    no_tags: Annotated[bool, typer.Option("--no-tags", help="Clear the tags")] = False,
    admin: Annotated[Optional[bool], typer.Option("--admin/--no-admin", help="Make it an admin key, or not")] = None,
    ledger: LedgerOption = None,
    config: ConfigOption = None,
    fmt: FormatOption = "table",
) -> None:
    """Change a key's settings; a running gateway applies them within gateway.keys_refresh_s."""
    fmt = output_format(fmt)
    changes: dict[str, Any] = {}
    for option, given, clear, fields_ in (
        ("--budget-usd", budget_usd is not None or period is not None, no_budget, {"budget_usd": budget_usd, "budget_period": period}),
        ("--rpm", rpm is not None, no_rpm, {"rpm": rpm}),
        ("--tpm", tpm is not None, no_tpm, {"tpm": tpm}),
        ("--strategies", strategies is not None, all_strategies, {"strategies": split_list(strategies)}),
        ("--tags", tags is not None, no_tags, {"tags": _tags(tags)}),
    ):
        if given and clear:
            fail(f"{option} and its clearing flag contradict each other; give one")
        if clear:
            changes.update(dict.fromkeys(fields_, None) | ({"tags": ()} if option == "--tags" else {}))
        elif given:
            changes.update({k: v for k, v in fields_.items() if v is not None})
    if admin is not None:
        changes["admin"] = admin
    if not changes:
        fail("nothing to change: give at least one option (see `llmroute keys update --help`)")
    keys = _open(ledger, config)
    where = keys.store.where
    updated = _run(keys, lambda: keys.update(name, **changes))
    _show([updated.public()], fmt, f"updated in {where}")


@keys_app.command("revoke")
def revoke(name: NameArg, ledger: LedgerOption = None, config: ConfigOption = None) -> None:
    """Revoke a key for good; a running gateway refuses it within gateway.keys_refresh_s."""
    keys = _open(ledger, config)
    revoked = _run(keys, lambda: keys.revoke(name))
    err.print(f"Revoked key '{revoked.name}' at {revoked.public()['revoked']}.", highlight=False, soft_wrap=True)
