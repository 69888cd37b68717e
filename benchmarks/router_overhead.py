"""What the library adds per request: LLMRouter.chat against a bare pooled aiohttp POST.

    python benchmarks/router_overhead.py [--requests 3000] [--rounds 3]

Both send the same chat request, one at a time, to one ``llmroute emulate
--speed inf`` process; rounds alternate so machine noise hits both alike. The
difference of the medians is the router's own cost: strategy, cascade,
attempt records, usage and cost, result object.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
import orjson
from _util import CHAT_BODY, emulator_process, machine, print_rounds

from llmroute import LLMRouter

MESSAGES = orjson.loads(CHAT_BODY)["messages"]


async def bare(url: str, n: int) -> list[float]:
    async with aiohttp.ClientSession() as session:
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            async with session.post(url + "/chat/completions", data=CHAT_BODY.encode(),
                                    headers={"content-type": "application/json"}) as resp:
                orjson.loads(await resp.read())
            samples.append(time.perf_counter() - started)
        return samples


async def routed(url: str, n: int) -> list[float]:
    config = {"providers": {
        "a": {"base_url": url, "model": "m", "price_per_m": {"input": 0.02, "output": 0.02}},
        "b": {"base_url": url, "model": "m", "price_per_m": {"input": 0.10, "output": 0.10}},
    }}
    async with LLMRouter(config=config) as router:
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            await router.chat(MESSAGES, max_tokens=64)
            samples.append(time.perf_counter() - started)
        return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    medians: dict[str, list[float]] = {"bare aiohttp": [], "LLMRouter.chat": []}
    with emulator_process() as url:
        for _ in range(args.rounds):
            for name, fn in (("bare aiohttp", bare), ("LLMRouter.chat", routed)):
                samples = asyncio.run(fn(url, args.requests))
                medians[name].append(statistics.median(samples[100:]) * 1e6)
    print(f"machine: {machine()}")
    print(f"{args.requests} sequential requests x {args.rounds} rounds")
    print_rounds("client", "µs per request", medians)
    ratio = statistics.median(medians["LLMRouter.chat"]) / statistics.median(medians["bare aiohttp"])
    print(f"LLMRouter.chat / bare aiohttp POST: {ratio:.2f}x")


if __name__ == "__main__":
    main()
