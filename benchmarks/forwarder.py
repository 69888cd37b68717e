"""The floor of any Python hop: read the body, POST it upstream with a pooled client, return the answer.

    python benchmarks/forwarder.py UPSTREAM_BASE_URL PORT [WORKERS]

Same stack as the gateway (aiohttp server and client on uvloop) and, with
WORKERS > 1, the same model: processes sharing the port with SO_REUSEPORT.
"""

import os
import sys

import aiohttp
import uvloop
from aiohttp import web

UPSTREAM, PORT = sys.argv[1].rstrip("/") + "/chat/completions", int(sys.argv[2])
WORKERS = int(sys.argv[3]) if len(sys.argv) > 3 else 1


async def forward(request: web.Request) -> web.Response:
    body = await request.read()
    async with request.app["client"].post(UPSTREAM, data=body, headers={"content-type": "application/json"}) as resp:
        return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")


async def client(app: web.Application):  # type: ignore[no-untyped-def]
    app["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    yield
    await app["client"].close()


for _ in range(WORKERS - 1):
    if os.fork() == 0:
        break
app = web.Application()
app.router.add_post("/v1/chat/completions", forward)
app.cleanup_ctx.append(client)
web.run_app(app, host="127.0.0.1", port=PORT, access_log=None, print=None, reuse_port=WORKERS > 1,
            loop=uvloop.new_event_loop())
