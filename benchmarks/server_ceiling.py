"""What the HTTP server under the gateway costs: static answers and forwarders on each stack, and llmroute,
side by side in one run.

    python benchmarks/server_ceiling.py [--seconds 3] [--rounds 3] [--connections 32]

Targets (one process each, uvloop; wrk, one thread, POST /v1/chat/completions with the same body):
  static aiohttp          a bare aiohttp web handler: read the body, answer a static completion
  static aiohttp+gateway  the same handler behind llmroute's GatewayRunner and its serve options (deadlines,
                          connection cap, JSON parser errors): what llmroute's protocol adds to aiohttp's
  static httptools        a raw asyncio protocol with httptools answering the same bytes: the floor of a
                          Python HTTP/1.1 server, so static aiohttp minus this is the most a server change saves
  forwarder aiohttp / forwarder uvicorn   benchmarks/forwarder.py (aiohttp's client, pool of 256)
  forwarder httptools     the raw protocol forwarding with aiohttp's client
  llmroute                `llmroute serve` with nginx as its only provider (ledger off)
  --baseline DIR          adds `llmroute (baseline)`: the llmroute package in DIR, for a before/after
  --workers2              adds llmroute and the uvicorn forwarder with 2 worker processes (SO_REUSEPORT)
CPU per request is every process of a target (utime+stime from /proc) over its runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from _util import machine, wrk
from gateway import BODY, COMPLETION, cpu_s, free_port, nginx, process, wait_ready

HERE = Path(__file__).resolve().parent
ANSWER = COMPLETION.encode()
RAW_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n")


def serve_aiohttp(port: int, gateway: bool) -> None:
    import uvloop
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        if gateway:
            from llmroute.config.schema import GatewayConfig
            from llmroute.gateway.protocol import ConnectionLimits, GatewayRunner

            s = GatewayConfig()
            limits = ConnectionLimits(header_timeout_s=s.header_timeout_s, body_timeout_s=s.body_timeout_s,
                                      max_connections=1000, write_timeout_s=s.write_timeout_s)
            runner: web.AppRunner = GatewayRunner(
                app, limits, shutdown_timeout=1, handler_cancellation=True, access_log=None, auto_decompress=False,
                keepalive_timeout=s.keepalive_timeout_s, max_line_size=s.max_header_bytes,
                max_field_size=s.max_header_bytes, max_headers=s.max_headers)
        else:
            runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=2048).start()
        await asyncio.Event().wait()

    uvloop.run(main())


class _RawProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive with httptools; ``answer(body)`` returns the response body or an awaitable of it."""

    def __init__(self, answer) -> None:  # type: ignore[no-untyped-def]
        import httptools

        self.parser = httptools.HttpRequestParser(self)
        self.answer = answer
        self.chunks: list[bytes] = []

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        body, self.chunks = b"".join(self.chunks), []
        result = self.answer(body)
        if isinstance(result, bytes):
            self.transport.write(RAW_HEAD % len(result) + result)
        else:
            asyncio.ensure_future(self._send(result))

    async def _send(self, pending) -> None:  # type: ignore[no-untyped-def]
        result = await pending
        self.transport.write(RAW_HEAD % len(result) + result)


def serve_httptools(port: int, upstream: str | None) -> None:
    import uvloop

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if upstream is None:
            def answer(body: bytes) -> bytes:
                return ANSWER
        else:
            import aiohttp

            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
            url, headers = upstream + "/chat/completions", {"content-type": "application/json"}

            async def answer(body: bytes) -> bytes:
                async with session.post(url, data=body, headers=headers) as resp:
                    return await resp.read()
        server = await loop.create_server(lambda: _RawProtocol(answer), "127.0.0.1", port, backlog=2048)
        await server.serve_forever()

    uvloop.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--baseline", help="another llmroute source tree, served as `llmroute (baseline)`")
    parser.add_argument("--workers2", action="store_true",
                        help="also llmroute and the uvicorn forwarder with 2 worker processes")
    parser.add_argument("--only", help="comma-separated targets to run (direct always runs)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        {"aiohttp": lambda: serve_aiohttp(args.port, False), "aiohttp+gateway": lambda: serve_aiohttp(args.port, True),
         "httptools": lambda: serve_httptools(args.port, args.upstream)}[args.serve]()
        return
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian: apt-get install nginx-light wrk)")
    tmp = Path(tempfile.mkdtemp(prefix="llmroute-ceiling-"))
    names = ["static aiohttp", "static aiohttp+gateway", "static httptools", "forwarder aiohttp",
             "forwarder uvicorn", "forwarder httptools", "llmroute"]
    ports = {name: free_port() for name in ["direct", *names]}
    upstream = f"http://127.0.0.1:{ports['direct']}/v1"
    (tmp / "llmroute.yaml").write_text(
        f"providers:\n  upstream:\n    base_url: {upstream}\n    model: bench-model\n"
        "    price_per_m: {input: 0.02, output: 0.02}\n")
    me = [sys.executable, str(Path(__file__).resolve())]
    commands = {
        "static aiohttp": [*me, "--serve", "aiohttp"],
        "static aiohttp+gateway": [*me, "--serve", "aiohttp+gateway"],
        "static httptools": [*me, "--serve", "httptools"],
        "forwarder aiohttp": [sys.executable, str(HERE / "forwarder.py"), upstream, "", "1", "--stack", "aiohttp"],
        "forwarder uvicorn": [sys.executable, str(HERE / "forwarder.py"), upstream, "", "1", "--stack", "uvicorn"],
        "forwarder httptools": [*me, "--serve", "httptools", "--upstream", upstream],
        "llmroute": [sys.executable, "-m", "llmroute.cli", "serve", "--config", str(tmp / "llmroute.yaml")],
    }
    if args.baseline:  # its llmroute package first on the path (with -m, the current directory would come first)
        names.append("llmroute (baseline)")
        ports["llmroute (baseline)"] = free_port()
        commands["llmroute (baseline)"] = [
            sys.executable, "-c", f"import sys; sys.path.insert(0, {str(Path(args.baseline).resolve())!r}); "
            "sys.argv[0] = 'llmroute'; from llmroute.cli import main; main()",
            "serve", "--config", str(tmp / "llmroute.yaml")]
    if args.workers2:
        for name, base, count in (("llmroute 2 workers", "llmroute", "--workers"),
                                  ("forwarder uvicorn 2 workers", "forwarder uvicorn", None)):
            names.append(name)
            ports[name] = free_port()
            command = list(commands[base])
            if count is None:
                command[4] = "2"  # forwarder.py UPSTREAM PORT WORKERS
            else:
                command += [count, "2"]
            commands[name] = command
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    with ExitStack() as stack:
        stack.enter_context(process(nginx(tmp, ports["direct"])))
        wait_ready(upstream + "/chat/completions")
        pids = {}
        for name in names:
            command = list(commands[name])
            if name.startswith("forwarder ") and "forwarder.py" in command[1]:
                command[3] = str(ports[name])
            else:
                command += ["--port", str(ports[name])]
            pids[name] = stack.enter_context(process(command, env={"LLMROUTE_LEDGER": "off"},
                                                     log=tmp / f"{name.replace(' ', '-')}.log"))
        for name in names:
            wait_ready(f"http://127.0.0.1:{ports[name]}/v1/chat/completions")
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for name in ["direct", *names]:
                before = cpu_s(pids[name]) if name in pids else 0.0
                r = wrk(f"http://127.0.0.1:{ports[name]}/v1/chat/completions", BODY,
                        connections=args.connections, seconds=args.seconds)
                r["cpu_us"] = (cpu_s(pids[name]) - before) * 1e6 / max(1, r["requests"]) if name in pids else 0.0
                results.setdefault(name, []).append(r)
    print(f"machine: {machine()}; load before/after: see uptime")
    print(f"wrk, 1 thread, {args.connections} connections, {args.seconds} s per run, {args.rounds} rounds, medians")
    print()
    print("| target | requests/s | CPU µs/request | p50 ms | p99 ms | errors | rounds requests/s |")
    print("|---|---:|---:|---:|---:|---:|---|")
    med = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "cpu_us", "p50_ms", "p99_ms")}
           for n, rs in results.items()}
    for name, rs in results.items():
        m = med[name]
        print(f"| {name} | {m['rps']:,.0f} | {m['cpu_us']:.0f} | {m['p50_ms']:.3f} | {m['p99_ms']:.3f} | "
              f"{sum(r['errors'] for r in rs)} | {', '.join(format(r['rps'], ',.0f') for r in rs)} |")
    print()
    pairs = (("llmroute", "llmroute (baseline)"), ("static httptools", "static aiohttp"), ("static aiohttp", "static aiohttp+gateway"),
                 ("forwarder httptools", "forwarder aiohttp"), ("forwarder uvicorn", "forwarder aiohttp"),
                 ("llmroute", "forwarder aiohttp"), ("llmroute", "forwarder uvicorn"),
                 ("llmroute", "forwarder httptools"), ("llmroute 2 workers", "llmroute"),
                 ("forwarder uvicorn 2 workers", "forwarder uvicorn"), ("llmroute 2 workers", "forwarder uvicorn 2 workers"))
    for a, b in pairs:
        if a not in med or b not in med:
            continue
        print(f"{a} / {b}: throughput {med[a]['rps'] / med[b]['rps']:.2f}x, "
              f"CPU {med[a]['cpu_us']:.0f} - {med[b]['cpu_us']:.0f} = {med[a]['cpu_us'] - med[b]['cpu_us']:+.0f} µs/request")


if __name__ == "__main__":
    main()
