"""The root ``llmroute`` app: ``--version``, and each command group's commands, in the order help lists them."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from .. import __version__
from .check_config import commands as check_config_commands
from .dashboard import commands as dashboard_commands
from .keys import keys_app
from .ledger import commands as ledger_commands
from .plan import commands as plan_commands
from .quality import quality_app
from .router import router_app
from .serve import commands as serve_commands
from .status import commands as status_commands

app = typer.Typer(
    help="Route LLM traffic to the right provider, fall back when one fails, and prove the savings.",
    no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True,
                                                     help="Print the version and exit")] = None,
) -> None:
    """Route LLM traffic to the right provider, fall back when one fails, and prove the savings."""


@app.command()
def version() -> None:
    """Print the version (also: llmroute --version)."""
    print(__version__)


# Top-level commands first, then the groups with subcommands.
for group in (check_config_commands, serve_commands, ledger_commands, dashboard_commands, plan_commands,
              status_commands):
    app.add_typer(group)
app.add_typer(keys_app, name="keys")
app.add_typer(quality_app, name="quality")
app.add_typer(router_app, name="router")


def main() -> None:
    try:
        app(prog_name="llmroute")
    except KeyboardInterrupt:
        sys.exit(130)
