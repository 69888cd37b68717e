"""The dashboard's page, its assets, its charts and its sign-in, as aiohttp handlers.

The HTML shell holds no data: ``app.js`` fills it from the JSON API (``/dashboard/api/*``) and refreshes it by
polling. Charts are SVG drawn here from the very dicts the API answers (``dashboard_of(request).view``), so a
figure has one definition. The browser carries the admin key in an HttpOnly cookie set by the sign-in form
(scripts send ``Authorization: Bearer`` instead); the mount in ``api``/``app`` checks it on every route here but
the static assets and sign-in/out, which contain no data.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from . import charts
from .context import dashboard_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

COOKIE = "llmroute_dashboard"
"""The cookie the sign-in form sets: the admin key itself, HttpOnly, so no script on the page can read it."""

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
"""Sent with the page, its assets, its charts and (by the API's mount) every API answer: no inline script or
style anywhere, nothing from another origin, never framed."""

_ASSETS = {"app.js": "text/javascript", "app.css": "text/css"}
_MAX_KEY_CHARS = 512
_MAX_FORM_BYTES = 4096
_QUERY_KEYS = ("since", "from", "to", "by")
"""The query parameters a chart passes on to its view (the page adds a cache-busting ``t`` that is not one)."""


def _read(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


_INDEX = _read("index.html")
_STATIC = {name: _read(name) for name in _ASSETS}
"""Read once: a few kilobytes, and a package file that changes needs a restart anyway."""


def _answer(body: bytes | str, content_type: str, status: int = 200, cache: str = "no-store") -> web.Response:
    response = web.Response(body=body.encode() if isinstance(body, str) else body, status=status,
                            content_type=content_type, charset="utf-8" if content_type != "image/svg+xml" else None)
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = cache
    return response


def _error(status: int, message: str, code: str, param: str | None = None) -> web.Response:
    body = orjson.dumps({"error": {"message": message, "type": "invalid_request_error", "param": param,
                                   "code": code}})
    return _answer(body, "application/json", status)


async def index(request: web.Request) -> web.StreamResponse:
    """The page: a shell with no data in it (``app.js`` asks the API)."""
    return _answer(_INDEX, "text/html")


async def static(request: web.Request) -> web.StreamResponse:
    """``app.js`` and ``app.css``; any other name is a 404 (a fixed list: no path reaches the file system)."""
    name = request.match_info.get("name", "")
    if name not in _ASSETS:
        return _error(404, "no such dashboard file", "not_found")
    return _answer(_STATIC[name], _ASSETS[name], cache="no-cache")


def login_response(request: web.Request, refused: bool) -> web.Response:
    """The 401 answer to the page without an admin key: a sign-in form, and nothing else."""
    note = ("<p class=\"login-error\" role=\"alert\">That key was refused: the dashboard needs a gateway key "
            "marked admin.</p>" if refused else "")
    html = (
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<link rel=\"icon\" href=\"data:,\"><title>llmroute dashboard: sign in</title>"
        "<link rel=\"stylesheet\" href=\"/dashboard/static/app.css\"></head><body class=\"login\">"
        "<main class=\"login-box\"><h1>llmroute dashboard</h1>"
        "<p>Sign in with a gateway key marked admin (<code>llmroute keys create --admin</code>, or a config key "
        "with <code>admin: true</code>).</p>" + note +
        "<form method=\"post\" action=\"/dashboard/login\"><label for=\"key\">Admin key</label>"
        "<input id=\"key\" name=\"key\" type=\"password\" autocomplete=\"current-password\" required>"
        "<button type=\"submit\">Sign in</button></form>"
        "<p class=\"muted\">The key is kept in an HttpOnly cookie for this browser session only.</p>"
        "</main></body></html>"
    )
    return _answer(html, "text/html", status=401)


def _same_origin(request: web.Request) -> bool:
    """A form posted from this origin (or by a client that sends no Origin, like curl)."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null" and request.headers.get("Sec-Fetch-Site") == "same-origin":
        return True
    return origin in (f"{request.scheme}://{request.host}", f"https://{request.host}")


async def login(request: web.Request) -> web.StreamResponse:
    """Keep the key in an HttpOnly, SameSite=Strict cookie and go to the page, which checks it (a wrong key gets
    the form back with a note): this handler itself never decides who is admin."""
    if not _same_origin(request):
        return _error(403, "sign-in from another site refused", "cross_origin")
    if (request.content_length or 0) > _MAX_FORM_BYTES:
        return _error(413, "sign-in form too large", "request_too_large")
    form = await request.post()
    key = form.get("key")
    if not isinstance(key, str) or not key.strip() or len(key) > _MAX_KEY_CHARS:
        return login_response(request, refused=True)
    response = web.HTTPSeeOther("/dashboard")
    response.headers.update(SECURITY_HEADERS)
    response.set_cookie(COOKIE, key.strip(), path="/dashboard", httponly=True, samesite="Strict",
                        secure=request.secure)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    response = web.HTTPSeeOther("/dashboard")
    response.headers.update(SECURITY_HEADERS)
    response.del_cookie(COOKIE, path="/dashboard")
    return response


# -- charts ------------------------------------------------------------------------------------------------


def _series(rows: list[dict[str, Any]], label: str, name: str, value: str) -> tuple[list[str], dict[str, list[float]]]:
    """Rows of (label, name, value) -> shared labels and one value list per name (0 where a name has no row)."""
    labels = sorted({str(row[label]) for row in rows})
    where = {day: i for i, day in enumerate(labels)}
    series: dict[str, list[float]] = {}
    for row in rows:
        series.setdefault(str(row[name]), [0.0] * len(labels))[where[str(row[label])]] += row.get(value) or 0.0
    return labels, series


def spend_chart(data: dict[str, Any], query: Mapping[str, str]) -> str:
    labels, series = _series(data.get("daily") or [], "day", "provider", "cost_usd")
    return charts.stacked_bars(labels, series, title="Spend per day, by provider")


def savings_chart(data: dict[str, Any], query: Mapping[str, str]) -> str:
    rows = data.get("cumulative") or []
    baseline = data.get("baseline") or "baseline"
    return charts.line_chart([row["day"] for row in rows], {
        "spent": [row.get("cost_usd") or 0.0 for row in rows],
        f"all on {baseline}": [row.get("baseline_usd") or 0.0 for row in rows],
    }, title="Cumulative spend against the baseline (the gap is the saving)")


def retained_chart(data: dict[str, Any], query: Mapping[str, str]) -> str:
    title = "Retained quality per day, with its 95% interval"
    rows = data.get("over_time") or []
    groups = sorted({str(row["group"]) for row in rows})
    group = query.get("group") or (max(groups, key=lambda g: sum(r.get("pairs") or 0 for r in rows
                                                                  if str(r["group"]) == g)) if groups else "")
    points = [charts.BandPoint(str(row["day"]), row.get("retained") or 0.0, row.get("ci_low") or 0.0,
                               row.get("ci_high") or 0.0)
              for row in rows if str(row["group"]) == group and row.get("retained") is not None]
    floor = (data.get("drift") or {}).get("alert_below")
    return charts.band_chart(points, title=f"{title}: {group}" if group else title, floor=floor)


def curve_chart(data: dict[str, Any], query: Mapping[str, str]) -> str:
    curve = ((data.get("report") or {}).get("curve") or {}).get("points") or []
    point = data.get("operating_point") or {}
    operating = ((point["reference_share"], point["retained"])
                 if point.get("reference_share") is not None and point.get("retained") is not None else None)
    return charts.curve_chart([(p["reference_share"], p["retained"]) for p in curve if p.get("retained") is not None],
                              operating, title="Your cost/quality curve (from your graded pairs)",
                              x_label="share of requests sent to the strong tier",
                              y_label="retained quality at each share")


def budget_chart(data: dict[str, Any], query: Mapping[str, str]) -> str:
    budgets = data.get("budgets") or []
    name = query.get("budget")
    budget = next((b for b in budgets if b.get("name") == name), budgets[0] if budgets else None)
    if budget is None:
        return charts.empty_chart("Budget pacing", "no budget configured")
    path = budget.get("path") or []
    labels = [time.strftime("%m-%d", time.gmtime(p.get("ts") or 0)) for p in path]
    return charts.line_chart(labels, {"pacing path": [p.get("target_usd") or 0.0 for p in path],
                                      "spent": [p.get("spent_usd") or 0.0 for p in path]},
                             title=f"{budget.get('name')}: spend against its pacing path")


CHARTS: dict[str, tuple[str, Callable[[dict[str, Any], Mapping[str, str]], str]]] = {
    "spend": ("overview", spend_chart),
    "savings": ("overview", savings_chart),
    "retained": ("quality", retained_chart),
    "curve": ("quality", curve_chart),
    "budget": ("budgets", budget_chart),
}
"""Chart name -> (the API view it draws, how)."""


async def chart(request: web.Request) -> web.StreamResponse:
    """A chart as SVG, drawn from the same view the API answers (cached there, so polling costs little). A bad
    period is the guard's 400, as for the API."""

    entry = CHARTS.get(request.match_info.get("name", ""))
    if entry is None:
        return _error(404, "no such chart", "not_found")
    view, draw = entry
    query = {key: request.query[key] for key in _QUERY_KEYS if key in request.query}
    return _answer(draw(await dashboard_of(request).view(view, query), request.query), "image/svg+xml")


def page_routes() -> list[tuple[str, str, Handler]]:
    """(method, path, handler) for the page, its files, its charts and sign-in/out."""
    return [
        ("GET", "/dashboard", index),
        ("GET", "/dashboard/static/{name}", static),
        ("GET", "/dashboard/chart/{name}.svg", chart),
        ("POST", "/dashboard/login", login),
        ("POST", "/dashboard/logout", logout),
    ]
