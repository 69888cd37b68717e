"""Which HTTP server should the gateway run on? Each candidate reads a JSON body and answers a static completion.

    pip install uvicorn granian          # candidates only; llmroute does not depend on them
    python benchmarks/servers.py --seconds 5 --rounds 3

One worker process each, on uvloop where the server allows it; wrk (one thread)
posts the same body at 1 and 32 connections, candidates alternating within a round.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _util import CHAT_BODY, machine, wrk

ANSWER = (b'{"id":"chatcmpl-static","object":"chat.completion","created":1700000000,"model":"m",'
          b'"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
          b'"usage":{"prompt_tokens":12,"completion_tokens":1,"total_tokens":13}}')
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]


async def asgi_app(scope, receive, send):  # type: ignore[no-untyped-def]
    import orjson

    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    orjson.loads(body)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": ANSWER})


def serve_aiohttp(port: int) -> None:
    import orjson
    import uvloop
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        orjson.loads(await request.read())
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    uvloop.install()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_uvicorn(port: int) -> None:
    import uvicorn

    uvicorn.run("servers:asgi_app", host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                access_log=False, log_level="warning", app_dir=str(Path(__file__).parent))


def serve_granian(port: int) -> None:
    os.execv(sys.executable, [sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
                    "--workers", "1", "--runtime-threads", "1", "--loop", "uvloop", "--no-access-log",
                    "--log-level", "warning", "--working-dir", str(Path(__file__).parent), "servers:asgi_app"])


SERVERS = {"aiohttp": serve_aiohttp, "uvicorn": serve_uvicorn, "granian": serve_granian}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", choices=SERVERS)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.serve:
        SERVERS[args.serve](args.port)
        return
    procs, ports = {}, {}
    for name in SERVERS:
        ports[name] = free_port()
        procs[name] = subprocess.Popen([sys.executable, __file__, "--serve", name, "--port", str(ports[name])])
    try:
        for port in ports.values():
            wait_listening(port)
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for connections in (1, 32):
                for name, port in ports.items():
                    r = wrk(f"http://127.0.0.1:{port}/v1/chat/completions", CHAT_BODY,
                            connections=connections, seconds=args.seconds)
                    results.setdefault((name, connections), []).append(r)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(timeout=10)
    print(f"machine: {machine()}\n")
    print("| server | conns | requests/s (median) | p50 ms | p99 ms | rounds requests/s |")
    print("|---|---:|---:|---:|---:|---|")
    for (name, connections), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        med = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50_ms", "p99_ms")}
        rounds = ", ".join(f"{r['rps']:,.0f}" for r in runs)
        print(f"| {name} | {connections} | {med['rps']:,.0f} | {med['p50_ms']:.3f} | {med['p99_ms']:.3f} | {rounds} |")


if __name__ == "__main__":
    main()
