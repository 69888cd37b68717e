"""``llmroute dashboard``: the web dashboard served from a ledger alone, read-only, with no gateway."""

from __future__ import annotations

import logging
from typing import Annotated, Optional

import typer

from ..errors import LLMRouteError
from ..ledger import ledger_location
from .common import MAX_PORT, ConfigOption, LedgerOption, cannot_listen, config_or_none, err, fail

commands = typer.Typer()
"""Added to the root app without a name: its commands are top-level."""


@commands.command()
def dashboard(
    config: ConfigOption = None,
    ledger: LedgerOption = None,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=MAX_PORT, help="Port")] = 8090,
    api_key: Annotated[Optional[list[str]], typer.Option(
        "--api-key", help="An admin key to accept (repeatable); also the config's keys, $LLMROUTE_API_KEYS and "
                          "the ledger's admin keys", envvar="LLMROUTE_DASHBOARD_KEY")] = None,
) -> None:
    """Serve the dashboard (spend, savings, quality, providers, budgets, requests) from a ledger: a SQLite file or
    a Postgres DSN shared by several gateways. Read-only: nothing is written and no provider is called."""
    import asyncio

    from aiohttp import web

    from ..dashboard.app import ledger_app
    from ..gateway.auth import KeyStore, LedgerKeySource, is_loopback

    cfg = config_or_none(config)
    location = ledger or ledger_location(cfg)
    if location is None:
        fail("the ledger is switched off ($LLMROUTE_LEDGER=off or ledger.enabled: false); pass --ledger")
    pairs = [(f"cli-{i}", key) for i, key in enumerate(api_key or [], 1) if key]
    keys = KeyStore([*pairs, *(cfg.gateway.keys() if cfg is not None else _env_keys())])
    source = LedgerKeySource(keys, location, refresh_s=cfg.gateway.keys_refresh_s if cfg is not None else 2.0)
    try:
        source.refresh()  # the ledger's keys (admin ones open the dashboard); also proves the ledger opens
        application = ledger_app(location, cfg, keys, key_source=source)  # type: ignore[arg-type]
    except LLMRouteError as exc:
        source.close()
        fail(str(exc))
    if not keys and not is_loopback(host):
        source.close()
        fail(f"refusing to serve the dashboard on {host} without an admin key: pass --api-key, set "
             "LLMROUTE_API_KEYS, or make one with `llmroute keys create --name NAME --admin`; or bind to 127.0.0.1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_serve(web, application, host, port))
    except OSError as exc:
        cannot_listen(host, port, exc)
    except KeyboardInterrupt:
        pass


async def _serve(web, application, host: str, port: int) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port
        shown = f"[{host}]" if ":" in host else host
        err.print(f"llmroute dashboard on http://{shown}:{bound}/dashboard (ledger: read-only)", highlight=False)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def _env_keys() -> list[tuple[str, str]]:
    """``$LLMROUTE_API_KEYS`` without a config, as the gateway reads it."""
    from ..config.schema import GatewayConfig

    return GatewayConfig().keys()
