"""What skipping a provider with an open breaker costs a request.

    python benchmarks/breaker_skip.py --requests 3000 --rounds 3

Two routers send the same sequential requests to one emulated provider: one
knows only that provider; the other has a dead provider first in its order,
with its breaker open. The difference of the medians is the cost of the skip.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from _util import emulator_process, machine, print_rounds

from llmroute import LLMRouter


def config(url: str, with_dead: bool) -> dict:
    providers = {"live": {"base_url": url, "model": "m", "price_per_m": {"input": 0.1, "output": 0.1}}}
    if with_dead:  # cheaper, so cost_optimized tries it first
        providers = {"dead": {"base_url": "http://127.0.0.1:9/v1", "model": "m",
                              "price_per_m": {"input": 0.01, "output": 0.01}}, **providers}
    return {"providers": providers, "strategy": "cost_optimized", "ledger": {"enabled": False}}


async def per_request_us(router: LLMRouter, requests: int) -> float:
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        await router.chat([{"role": "user", "content": "hi"}], max_tokens=5)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


async def run(url: str, requests: int, rounds: int) -> None:
    plain = LLMRouter(config=config(url, False), ledger=False)
    skipping = LLMRouter(config=config(url, True), ledger=False)
    skipping.state.breaker("dead").force(False, "benchmark: held open")
    skipping.state.breaker("dead").open_until = float("inf")
    medians: dict[str, list[float]] = {"one provider": [], "dead provider skipped first": []}
    for _ in range(rounds):
        medians["one provider"].append(await per_request_us(plain, requests))
        medians["dead provider skipped first"].append(await per_request_us(skipping, requests))
    result = await skipping.chat([{"role": "user", "content": "hi"}], max_tokens=5)
    assert [a.kind for a in result.attempts] == ["circuit_open", "ok"]
    await plain.aclose()
    await skipping.aclose()
    print(f"machine: {machine()}\n")
    print_rounds("router", "µs per request", medians)
    skip = statistics.median(medians["dead provider skipped first"]) - statistics.median(medians["one provider"])
    print(f"\ncost of skipping the open provider: {skip:,.0f} µs per request")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with emulator_process("cerebras") as url:
        asyncio.run(run(url, args.requests, args.rounds))


if __name__ == "__main__":
    main()
