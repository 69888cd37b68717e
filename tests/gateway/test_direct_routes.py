"""Exact-path POST routes reach their handler without aiohttp's router, and look to it as if they had not:
the same match info, the same app, the same response hooks; everything else is dispatched by aiohttp."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from llmroute.config import RouterConfig
from llmroute.gateway.app import Gateway
from llmroute.gateway.direct import direct_routes
from llmroute.gateway.protocol import ConnectionLimits, GatewayRunner
from llmroute.router import LLMRouter

LIMITS = ConnectionLimits(header_timeout_s=5, body_timeout_s=5, max_connections=64)


def _app(seen: list[tuple[str, Any]], *, middleware: bool = False) -> web.Application:
    async def chat(request: web.Request) -> web.Response:
        seen.append(("chat", (request.match_info.route.resource.canonical, request.app is app, await request.read())))
        return web.json_response({"ok": True})

    async def other(request: web.Request) -> web.Response:
        seen.append(("other", request.match_info.get("tail")))
        return web.json_response({"error": "no route"}, status=404)

    async def expect(request: web.Request) -> None:
        seen.append(("expect", request.headers["Expect"]))
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    async def prepared(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["x-prepared"] = "yes"

    @web.middleware
    async def tag(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        seen.append(("middleware", request.path))
        return await handler(request)

    app = web.Application(middlewares=[tag] if middleware else [])
    app.router.add_route("POST", "/v1/chat/completions", chat, expect_handler=expect)
    app.router.add_route("*", "/{tail:[\\s\\S]*}", other)
    app.on_response_prepare.append(prepared)
    return app


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[web.Application], Awaitable[str]]]:
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = GatewayRunner(app, LIMITS, shutdown_timeout=1, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


def test_the_gateway_dispatches_its_completion_endpoints_directly(seed_config: dict[str, Any]) -> None:
    gateway = Gateway(LLMRouter(config=RouterConfig.model_validate(seed_config)))
    app = gateway.app()
    app.freeze()
    table = direct_routes(app)
    assert {"/v1/chat/completions", "/v1/completions"} <= set(table)
    assert all(match.route.method == "POST" for _, match in table.values())


async def test_a_direct_route_sees_what_aiohttp_dispatch_gives(serve: Callable[..., Awaitable[str]]) -> None:
    seen: list[tuple[str, Any]] = []
    app = _app(seen)
    base = await serve(app)
    assert set(direct_routes(app)) == {"/v1/chat/completions"}
    async with aiohttp.ClientSession() as client:
        async with client.post(base + "/v1/chat/completions", data=b'{"a":1}') as response:
            assert response.status == 200
            assert response.headers["x-prepared"] == "yes"  # the app's response hooks ran
        async with client.get(base + "/v1/chat/completions") as response:  # another method: aiohttp's router
            assert response.status == 404
        async with client.post(base + "/v1/chat/completions/more") as response:
            assert response.status == 404
        async with client.post(base + "/v1/chat/completions", data=b"{}",
                               headers={"Expect": "100-continue"}) as response:
            assert response.status == 200
    assert seen == [
        ("chat", ("/v1/chat/completions", True, b'{"a":1}')),
        ("other", "v1/chat/completions"),
        ("other", "v1/chat/completions/more"),
        ("expect", "100-continue"),  # an Expect header takes aiohttp's dispatch, which runs the expect handler
        ("chat", ("/v1/chat/completions", True, b"{}")),
    ]


async def test_an_app_with_middleware_is_dispatched_by_aiohttp(serve: Callable[..., Awaitable[str]]) -> None:
    seen: list[tuple[str, Any]] = []
    app = _app(seen, middleware=True)
    base = await serve(app)
    assert direct_routes(app) == {}
    async with aiohttp.ClientSession() as client:
        async with client.post(base + "/v1/chat/completions", data=b"{}") as response:
            assert response.status == 200
    assert seen == [("middleware", "/v1/chat/completions"), ("chat", ("/v1/chat/completions", True, b"{}"))]
