"""The dashboard's JSON API (``/dashboard/api/<view>``) and the guard in front of every dashboard route.

Read-only and for admin keys: ``Authorization: Bearer <key>`` or the page's sign-in cookie, checked against the
same digests as the gateway's keys. Each view is computed off the event loop (in a thread; in a gateway, in a
process of its own, ``worker.py``, so the requests it serves never wait on the ledger's reading) and its answer cached for a while: concurrent askers share one computation, and a cached answer lives at least
``MIN_CACHE_S`` and twice as long as it took to compute, so however many dashboards poll, a large ledger
keeps at most about a third of one core busy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from ..errors import LLMRouteError
from ..gateway.auth import KeyIdentity, KeyStore, is_loopback
from ..gateway.errors import error_response
from .context import DASHBOARD_KEY
from .data import VIEWS, BadQuery, DashboardData
from .pages import COOKIE, SECURITY_HEADERS, login_response, page_routes
from .worker import ViewProcess

log = logging.getLogger("llmroute.dashboard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MIN_CACHE_S = 1.5
MAX_CACHED = 64
"""Answers kept (one per view and query string): query strings come from clients, so the cache is bounded."""
_QUERY_KEYS = ("since", "from", "to", "by", "key", "tag", "provider", "strategy", "status", "limit", "before")


def security_headers() -> dict[str, str]:
    """The page's security headers (CSP, nosniff, no referrer), on every answer of the dashboard."""
    return dict(SECURITY_HEADERS)


class Dashboard:
    """One dashboard over ``data``, guarded by ``keys``."""

    def __init__(self, data: DashboardData, keys: KeyStore, process: ViewProcess | None = None) -> None:
        self.data, self.keys = data, keys
        self.process = process
        """Where views over the ledger are computed when not in a thread (the gateway's: worker.ViewProcess)."""
        self._answers: OrderedDict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, dict[str, Any]]] = OrderedDict()
        self._running: dict[tuple[str, tuple[tuple[str, str], ...]], asyncio.Future[dict[str, Any]]] = {}
        self._headers = security_headers()

    async def view(self, name: str, params: Mapping[str, str]) -> dict[str, Any]:
        """A view's answer: cached, or computed once (in a thread, or the gateway's dashboard process) however
        many ask at once."""
        query = tuple((k, params[k]) for k in _QUERY_KEYS if params.get(k))
        key = (name, query)
        cached = self._answers.get(key)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1]
        running = self._running.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            snap = self.data.live.capture() if self.data.live is not None and name != "meta" else None
            began = time.monotonic()
            if self.process is not None and name != "meta":
                answer = await self.process.compute(name, dict(query), snap)
            else:
                answer = await asyncio.to_thread(self.data.compute, name, dict(query), snap)
            took = time.monotonic() - began
            self._answers[key] = (time.monotonic() + max(MIN_CACHE_S, 2 * took), answer)
            self._answers.move_to_end(key)
            while len(self._answers) > MAX_CACHED:
                self._answers.popitem(last=False)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        finally:
            del self._running[key]

    # -- auth -------------------------------------------------------------------------------------

    def refusal(self, request: web.Request) -> tuple[int, str] | None:
        """Why the request may not see the dashboard (status, message), or None when it may."""
        if not self.keys:
            # No key configured anywhere: the gateway is open on loopback, and so is the dashboard; never off it.
            sock = request.transport.get_extra_info("sockname") if request.transport is not None else None
            if sock and is_loopback(str(sock[0])):
                return None
            return 401, ("the dashboard needs an admin key when not on loopback: make one with "
                         "`llmroute keys create --name NAME --admin` and send it as Authorization: Bearer <key>")
        key = self.identify(request)
        if key is None:
            return 401, "missing or invalid API key: send an admin key as Authorization: Bearer <key>"
        if not key.admin:
            return 403, f"the key '{key.key_id}' is not an admin key; the dashboard needs one"
        return None

    def identify(self, request: web.Request) -> KeyIdentity | None:
        header = request.headers.get("Authorization")
        if header:
            return self.keys.identify(header)
        cookie = request.cookies.get(COOKIE)
        return self.keys.identify(f"Bearer {cookie}") if cookie else None

    def guard(self, handler: Handler, *, page: bool = False) -> Handler:
        """Admin key first (the page gets its sign-in form instead of JSON); then errors as OpenAI-shaped JSON."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            refused = self.refusal(request)
            if refused is not None:
                status, message = refused
                if page:
                    return login_response(request, refused=COOKIE in request.cookies
                                          or "Authorization" in request.headers)
                return self.error(status, message, "invalid_request_error" if status == 401 else "permission_error",
                                   "invalid_api_key" if status == 401 else "admin_key_required")
            request[DASHBOARD_KEY] = self
            try:
                return await handler(request)
            except BadQuery as exc:
                return self.error(400, exc.message, "invalid_request_error", "invalid_query", exc.param)
            except LLMRouteError as exc:  # the ledger cannot be read now: say so, the page tries again
                return self.error(503, f"the ledger cannot be read: {str(exc).splitlines()[0][:300]}",
                                   "server_error", "ledger_unavailable")
            except Exception:
                log.exception("dashboard: unexpected error on %s", request.path)
                return self.error(500, "internal error in the dashboard", "server_error", "internal_error")

        return guarded

    def error(self, status: int, message: str, error_type: str, code: str, param: str | None = None) -> web.Response:
        return error_response(status, message, error_type, code, param, headers={**self._headers, "Cache-Control": "no-store"})

    # -- routes -----------------------------------------------------------------------------------

    async def api(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["view"]
        if name not in VIEWS:
            return self.error(404, f"no dashboard view '{name[:64]}'; views: {', '.join(VIEWS)}",
                               "invalid_request_error", "not_found")
        answer = await self.view(name, request.query)
        return web.Response(body=orjson.dumps(answer, default=str), content_type="application/json",
                            headers={**self._headers, "Cache-Control": "no-store"})

    def routes(self) -> list[tuple[str, str, Handler]]:
        """Every dashboard route, guarded: the API, and the page's (``pages.page_routes``), whose sign-in
        (any POST) and static files are left open: they hold no data."""
        out: list[tuple[str, str, Handler]] = [("GET", "/dashboard/api/{view}", self.guard(self.api))]
        for method, path, handler in page_routes():
            public = method == "POST" or path.startswith("/dashboard/static/")
            out.append((method, path, handler if public else self.guard(handler, page=path == "/dashboard")))
        return out

