"""Why the provider adapter uses aiohttp: the async HTTP clients side by side in one run.

    python benchmarks/http_clients.py [--requests 4000] [--concurrency 32] [--rounds 3]

Each client POSTs the same chat request to one ``llmroute emulate --speed inf``
process over a pooled keep-alive connection set; rounds alternate clients so
machine noise hits both alike. Reports requests/s per client and the ratio.
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

BODY = CHAT_BODY.encode()
HEADERS = {"content-type": "application/json"}


async def run_aiohttp(url: str, n: int, concurrency: int) -> float:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def one() -> None:
            async with session.post(url, data=BODY, headers=HEADERS) as resp:
                orjson.loads(await resp.read())
        return await _drive(one, n, concurrency)


async def run_httpx(url: str, n: int, concurrency: int) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:
        async def one() -> None:
            resp = await client.post(url, content=BODY, headers=HEADERS)
            orjson.loads(resp.content)
        return await _drive(one, n, concurrency)


async def _drive(one, n: int, concurrency: int) -> float:  # type: ignore[no-untyped-def]
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))  # warm the pool
    left = n
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"aiohttp": [], "httpx": []}
    with emulator_process() as base:
        url = base + "/chat/completions"
        for _ in range(args.rounds):
            for name, fn in (("aiohttp", run_aiohttp), ("httpx", run_httpx)):
                results[name].append(asyncio.run(fn(url, args.requests, args.concurrency)))
    print(f"machine: {machine()}")
    print(f"aiohttp {aiohttp.__version__}, httpx {httpx.__version__}; {args.requests} requests x {args.rounds} rounds, "
          f"concurrency {args.concurrency}")
    print_rounds("client", "requests/s", results)
    ratio = statistics.median(results["aiohttp"]) / statistics.median(results["httpx"])
    print(f"aiohttp / httpx: {ratio:.2f}x")


if __name__ == "__main__":
    main()
