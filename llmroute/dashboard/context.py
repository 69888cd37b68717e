"""Where a dashboard request finds the dashboard serving it: set by the guard, read by the page's chart handlers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from aiohttp import web

DASHBOARD_KEY = "llmroute.dashboard"


class Views(Protocol):
    async def view(self, name: str, params: Mapping[str, str]) -> dict[str, Any]: ...


def dashboard_of(request: web.Request) -> Views:
    """The dashboard serving this request (set by the guard): its views, cached as the API answers them."""
    return request[DASHBOARD_KEY]  # type: ignore[no-any-return]
