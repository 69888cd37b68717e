"""Summarise a py-spy profile (``py-spy record --format raw``: collapsed stacks) of a streaming proxy.

    python benchmarks/stream_profile.py PROFILE.txt [--top 25] [--group]

Prints the share of samples per function, by self time (the innermost frame) and inclusive time (anywhere
on the stack, counted once per sample), and with --group the share per hot-path stage (the stage names
match the llmroute modules a stream event passes through; a sample lands in the first stage, innermost
first, that matches its stack).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

# innermost first: a sample is charged to the first of these whose pattern one of its frames matches
STAGES = [
    ("GC (native frames, --native)", r"gc_collect|collect_generations|gc_collect_main|visit_reachable|subtract_refs"),
    ("ledger writer thread", r"llmroute-ledger|ledger/writer\.py|ledger/sqlite\.py"),
    ("SSE decode", r"providers/sse\.py"),
    ("event JSON parse + shape check", r"_parse_event|shape_problem|usage_tokens|in_body"),
    ("per-event timeout (asyncio.timeout)", r"asyncio/timeouts\.py"),
    ("upstream socket read (http client)", r"providers/http\.py"),
    ("event re-encode + client write", r"streaming\.py:(_event|_relay)|web_response\.py|http_writer\.py|write_may_wait"),
    ("RouteStream per-chunk bookkeeping", r"llmroute/stream\.py"),
    ("provider.stream generator", r"openai_compat\.py"),
    ("request setup (routing, headers, auth, validation)", r"gateway/app\.py|gateway/auth\.py|validate\.py|router\.py|cascade\.py|strategies/"),
    ("aiohttp server (request parse, handler)", r"aiohttp/"),
    ("asyncio/uvloop machinery", r"asyncio/|uvloop"),
]


def frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip().rpartition(" ")
    return stack.split(";"), int(count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--group", action="store_true")
    args = parser.parse_args()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = 0
    compiled = [(name, re.compile(p)) for name, p in STAGES]
    with open(args.profile) as f:
        for line in f:
            if not line.strip():
                continue
            stack, count = frames(line)
            total += count
            names = [re.sub(r" \((.*?/)?(site-packages/|lib/python3\.\d+/)?", " (", fr) for fr in stack]
            names = [re.sub(r":\d+\)$", ")", n) for n in names]
            own[names[-1]] += count
            for n in set(names):
                inclusive[n] += count
            for stage, pattern in compiled:
                if any(pattern.search(fr) for fr in reversed(stack)):
                    stages[stage] += count
                    break
            else:
                stages["other"] += count
    print(f"{total} samples\n")
    print("| self % | function |\n|---:|---|")
    for name, n in own.most_common(args.top):
        print(f"| {100 * n / total:.1f} | {name} |")
    print("\n| inclusive % | function |\n|---:|---|")
    for name, n in inclusive.most_common(args.top):
        print(f"| {100 * n / total:.1f} | {name} |")
    if args.group:
        print("\n| stage | % of samples |\n|---|---:|")
        for name, n in stages.most_common():
            print(f"| {name} | {100 * n / total:.1f} |")


if __name__ == "__main__":
    main()
