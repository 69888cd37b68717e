"""Emulator throughput at zero latency: it serves tests and benchmarks, so it must not be the bottleneck.

    python benchmarks/emulator.py [--seconds 5]

Runs ``llmroute emulate --speed inf`` in its own process and loads it with wrk
(one wrk thread) at 1 and 32 connections, JSON and streaming.
"""

from __future__ import annotations

import argparse

from _util import CHAT_BODY, emulator_process, machine, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    stream_body = CHAT_BODY[:-1] + ',"stream":true}'
    print(f"machine: {machine()}")
    print("| body | connections | requests/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    with emulator_process() as base:
        url = base + "/chat/completions"
        for label, body in (("JSON", CHAT_BODY), ("SSE stream", stream_body)):
            for connections in (1, 32):
                r = wrk(url, body, connections=connections, seconds=args.seconds)
                print(f"| {label} | {connections} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")


if __name__ == "__main__":
    main()
