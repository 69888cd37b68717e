"""The floor of a Python streaming hop: a raw ASGI app that POSTs the body upstream with aiohttp's client
and passes the answer's bytes through as they arrive (no SSE parsing, no JSON).

    python benchmarks/stream_forwarder.py uvicorn UPSTREAM_BASE_URL PORT    # uvicorn + uvloop + httptools
    python benchmarks/stream_forwarder.py granian UPSTREAM_BASE_URL PORT    # granian ASGI, uvloop

One worker. aiohttp's pool is unbounded (limit=0): no stream waits for a connection.
"""

import os
import sys

import aiohttp

UPSTREAM = os.environ.get("STREAM_FORWARDER_UPSTREAM", "").rstrip("/") + "/chat/completions"
session: aiohttp.ClientSession | None = None


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    global session
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if session is None:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
    async with session.post(UPSTREAM, data=body, headers={"content-type": "application/json"}) as resp:
        await send({"type": "http.response.start", "status": resp.status,
                    "headers": [(b"content-type", resp.headers.get("content-type", "application/json").encode())]})
        async for piece in resp.content.iter_any():
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    stack, upstream, port = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ["STREAM_FORWARDER_UPSTREAM"] = upstream
    here = os.path.dirname(os.path.abspath(__file__))
    if stack == "uvicorn":
        import uvicorn

        sys.path.insert(0, here)
        uvicorn.run("stream_forwarder:app", host="127.0.0.1", port=int(port), loop="uvloop", http="httptools",
                    access_log=False, log_level="warning", backlog=4096, lifespan="on")
    else:
        os.execv(sys.executable, [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                                  "--port", port, "--workers", "1", "--runtime-threads", "1", "--loop", "uvloop",
                                  "--no-access-log", "--log-level", "warning", "--backlog", "4096",
                                  "--working-dir", here, "stream_forwarder:app"])
