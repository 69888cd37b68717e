"""Why providers are called through llmroute's own client: it beside aiohttp's and httpx's, in one run.

    python benchmarks/http_clients.py [--requests 4000] [--concurrency 32] [--rounds 3]

Each client POSTs the same chat request to one ``llmroute emulate --speed inf``
process over a pooled keep-alive connection set; rounds alternate clients so
machine noise hits them alike. Reports, per client, requests/s (bounded by the emulator on a small machine)
and the client's own CPU time per request (this process's CPU; the emulator runs in another), which is what
a gateway pays on its hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
import httpx
import orjson
from _util import CHAT_BODY, emulator_process, machine, print_rounds

from llmroute.providers.http import ConnectionPool

BODY = CHAT_BODY.encode()
HEADERS = {"content-type": "application/json"}


async def run_aiohttp(url: str, n: int, concurrency: int) -> tuple[float, float]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as resp:
                orjson.loads(await resp.read())
        return await _drive(one, n, concurrency)


async def run_httpx(url: str, n: int, concurrency: int) -> tuple[float, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:
        async def one() -> None:
            resp = await client.post(url, content=BODY, headers=HEADERS)
            orjson.loads(resp.content)
        return await _drive(one, n, concurrency)


async def run_llmroute(url: str, n: int, concurrency: int) -> tuple[float, float]:
    base, _, path = url.rpartition("/v1/")
    pool = ConnectionPool(base + "/v1", max_connections=concurrency, headers=HEADERS)

    async def one() -> None:
        orjson.loads((await pool.post("/" + path, BODY)).body)

    try:
        return await _drive(one, n, concurrency)
    finally:
        await pool.aclose()


async def _drive(one, n: int, concurrency: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm the pool
    left = n
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started), (time.process_time() - cpu_started) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"llmroute": [], "aiohttp": [], "httpx": []}
    cpu_us: dict[str, list[float]] = {name: [] for name in results}
    with emulator_process() as base:
        url = base + "/chat/completions"
        for _ in range(args.rounds):
            for name, fn in (("llmroute", run_llmroute), ("aiohttp", run_aiohttp), ("httpx", run_httpx)):
                rate, cpu = asyncio.run(fn(url, args.requests, args.concurrency))
                results[name].append(rate)
                cpu_us[name].append(cpu)
    print(f"machine: {machine()}")
    print(f"aiohttp {aiohttp.__version__}, httpx {httpx.__version__}; {args.requests} requests x {args.rounds} rounds, "
          f"concurrency {args.concurrency}")
    print_rounds("client", "requests/s", results)
    print()
    print_rounds("client", "CPU µs per request (client side)", cpu_us)
    cpu = {name: statistics.median(values) for name, values in cpu_us.items()}
    print(f"client CPU per request, llmroute / aiohttp: {cpu['llmroute'] / cpu['aiohttp']:.2f}x; "
          f"httpx / aiohttp: {cpu['httpx'] / cpu['aiohttp']:.2f}x")


if __name__ == "__main__":
    main()
