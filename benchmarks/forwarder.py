"""The floor of any Python hop: read the body, POST it upstream with a pooled client, return the answer.

    python benchmarks/forwarder.py UPSTREAM_BASE_URL PORT [WORKERS] [--stack aiohttp|uvicorn]

Both stacks use aiohttp's client (pool of 256) on uvloop:
  aiohttp   aiohttp's server, as the gateway uses
  uvicorn   a raw ASGI app on uvicorn with httptools: the fastest short-request hop found in about 20 lines
With WORKERS > 1, processes share the port with SO_REUSEPORT (aiohttp: forked; uvicorn: its own workers).
"""

import os
import sys

import aiohttp

STACK = sys.argv[sys.argv.index("--stack") + 1] if "--stack" in sys.argv else "aiohttp"
ARGS = [a for a in sys.argv[1:] if a not in ("--stack", STACK)]
UPSTREAM = (ARGS[0] if ARGS else os.environ.get("FORWARDER_UPSTREAM", "")).rstrip("/") + "/chat/completions"
HEADERS = {"content-type": "application/json"}
session: aiohttp.ClientSession | None = None


async def asgi_app(scope, receive, send):  # type: ignore[no-untyped-def]
    """The uvicorn forwarder."""
    global session
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    async with session.post(UPSTREAM, data=body, headers=HEADERS) as resp:
        data = await resp.read()
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})


def serve_aiohttp(port: int, workers: int) -> None:
    import uvloop
    from aiohttp import web

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with request.app["client"].post(UPSTREAM, data=body, headers=HEADERS) as resp:
            return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")

    async def client(app: web.Application):  # type: ignore[no-untyped-def]
        app["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        yield
        await app["client"].close()

    for _ in range(workers - 1):
        if os.fork() == 0:
            break
    app = web.Application()
    app.router.add_post("/v1/chat/completions", forward)
    app.cleanup_ctx.append(client)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, reuse_port=workers > 1,
                loop=uvloop.new_event_loop())


def serve_uvicorn(port: int, workers: int) -> None:
    import uvicorn

    os.environ["FORWARDER_UPSTREAM"] = ARGS[0]  # for the worker processes, which import this module afresh
    uvicorn.run("forwarder:asgi_app", host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", workers=workers, backlog=2048,
                app_dir=os.path.dirname(os.path.abspath(__file__)))


if __name__ == "__main__":
    {"aiohttp": serve_aiohttp, "uvicorn": serve_uvicorn}[STACK](int(ARGS[1]), int(ARGS[2]) if len(ARGS) > 2 else 1)
