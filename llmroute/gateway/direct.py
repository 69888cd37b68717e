"""A request for an exact-path POST route goes straight to its handler, without aiohttp's router.

For every request, aiohttp's ``Application`` resolves the path through its URL
dispatcher, builds and freezes a match-info object, checks for ``Expect`` and
middlewares, then calls the handler: about 2 µs a request. The completion
endpoints are fixed paths with one handler each, so their match is found once,
when serving starts, and reused (it holds no per-request data). Anything else
(another method or path, an ``Expect`` header, an app with middlewares or
sub-applications) takes aiohttp's own dispatch, so it behaves exactly as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp.web_urldispatcher import PlainResource, UrlMappingMatchInfo

RequestHandler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


def direct_routes(app: web.Application) -> dict[str, tuple[RequestHandler, UrlMappingMatchInfo]]:
    """Exact path -> (handler, frozen match info) for the app's POST routes on plain paths; empty when the app
    has middlewares or sub-applications (their dispatch is aiohttp's to do). The first route registered for a
    path wins, as in aiohttp's router."""
    if app.middlewares or any(not isinstance(r, (PlainResource, web.DynamicResource))
                              for r in app.router.resources()):
        return {}
    table: dict[str, tuple[RequestHandler, UrlMappingMatchInfo]] = {}
    for route in app.router.routes():
        resource = route.resource
        if route.method != hdrs.METH_POST or not isinstance(resource, PlainResource) or resource.canonical in table:
            continue
        match = UrlMappingMatchInfo({}, route)
        match.add_app(app)
        match.freeze()
        table[resource.canonical] = (route.handler, match)
    return table


def dispatcher(app: web.Application, fallback: RequestHandler) -> RequestHandler:
    """A request handler for ``app``'s server: its direct routes at once, everything else through ``fallback``
    (the app's own handler)."""
    table = direct_routes(app)
    if not table:
        return fallback
    post, expect = hdrs.METH_POST, hdrs.EXPECT

    async def dispatch(request: web.BaseRequest) -> web.StreamResponse:
        if request.method == post:
            direct = table.get(request.rel_url.path_safe)
            if direct is not None and expect not in request.headers:
                request._match_info = direct[1]  # type: ignore[attr-defined]  # what aiohttp's dispatch sets
                return await direct[0](request)
        return await fallback(request)

    return dispatch
