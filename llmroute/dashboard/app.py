"""Where the dashboard is served: inside ``llmroute serve``, or from a ledger alone (``llmroute dashboard``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..gateway.auth import KeyStore, LedgerKeySource
from .api import Dashboard, Handler
from .data import DashboardData
from .live import GatewayLike, Live
from .worker import ViewProcess

if TYPE_CHECKING:
    from ..config import RouterConfig


def gateway_routes(gateway: GatewayLike) -> list[tuple[str, str, Handler]]:
    """The dashboard's routes on a gateway: its live state, its ledger (if on) and its keys (config, environment
    and the ledger's, as the gateway holds them)."""
    router = gateway.router
    data = DashboardData.for_gateway(router.config, Live(gateway), ledger_on=router.ledger is not None)
    process = ViewProcess(data.location, data.config, data.source) if data.location is not None else None
    return Dashboard(data, gateway.keys, process).routes()  # type: ignore[attr-defined]


def ledger_app(location: str, config: RouterConfig | None, keys: KeyStore, *,
               key_source: LedgerKeySource | None = None) -> web.Application:
    """The dashboard over a ledger alone, read-only: no gateway, no provider is called. ``key_source`` keeps
    the ledger's keys current while it serves."""
    data = DashboardData.from_ledger(location, config)
    dashboard = Dashboard(data, keys)
    app = web.Application()
    for method, path, handler in dashboard.routes():
        app.router.add_route(method, path, handler)

    async def not_found(request: web.Request) -> web.StreamResponse:
        return dashboard.error(404, "no such page: the dashboard is at /dashboard", "invalid_request_error",
                                "not_found")

    app.router.add_route("*", "/{tail:[\\s\\S]*}", not_found)

    async def start(app: web.Application) -> None:
        if key_source is not None:
            key_source.start()

    async def close(app: web.Application) -> None:
        if key_source is not None:
            await key_source.aclose()
        data.close()

    app.on_startup.append(start)
    app.on_cleanup.append(close)
    return app
