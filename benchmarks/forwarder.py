"""The floor of any Python hop: read the body, POST it upstream with a pooled client, return the answer.

    python benchmarks/forwarder.py UPSTREAM_BASE_URL PORT
"""

import sys

import aiohttp
import uvloop
from aiohttp import web

UPSTREAM, PORT = sys.argv[1].rstrip("/"), int(sys.argv[2])


async def forward(request: web.Request) -> web.Response:
    body = await request.read()
    async with request.app["client"].post(UPSTREAM + "/chat/completions", data=body,
                                          headers={"content-type": "application/json"}) as resp:
        return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")


async def client(app: web.Application):  # type: ignore[no-untyped-def]
    app["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    yield
    await app["client"].close()


app = web.Application()
app.router.add_post("/v1/chat/completions", forward)
app.cleanup_ctx.append(client)
web.run_app(app, host="127.0.0.1", port=PORT, access_log=None, print=lambda *_: print("ready", flush=True),
            loop=uvloop.new_event_loop())
