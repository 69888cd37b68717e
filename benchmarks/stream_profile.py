"""Summarise a py-spy profile (``py-spy record --format raw``: collapsed stacks) of a streaming proxy.

    python benchmarks/stream_profile.py PROFILE.txt [--top 25] [--group]

Prints the share of samples per function, by self time (the innermost frame) and inclusive time (anywhere
on the stack, counted once per sample), and with --group the share per hot-path stage (the stage names
match the llmroute modules a stream event passes through; a sample lands in the first stage, innermost
first, whose pattern matches a frame: its innermost recognisable frame decides).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

# A sample goes to the stage of its innermost frame that matches one of these (native frames need --native)
STAGES = [
    ("GC", (r"^(gc_collect|collect_generations|gc_collect_main|visit_reachable|subtract_refs|move_unreachable|"
           r"deduce_unreachable|update_refs|visit_decref)")),
    ("ledger writer thread", r"Ledger\._run|ledger/writer\.py|ledger/sqlite\.py"),
    ("socket write syscall (to the client)", r"^(write|writev|__libc_write|__write) \(libc"),
    ("socket read syscall (from the upstream)", r"^(read|__libc_read|__read|recv) \(libc"),
    ("epoll / accept / connect syscalls", r"^(epoll_wait|epoll_pwait|accept4?|connect|epoll_ctl) \(libc"),
    ("SSE decode", r"providers/sse\.py"),
    ("event JSON parse + shape check", (r"^(_parse_event|OpenAICompatProvider\._parse_event|shape_problem|usage_tokens|"
                                       r"Classifier\.in_body|error_fields|_text) \(|0x[0-9a-f]+ \(orjson")),
    ("per-event timeout (asyncio.timeout, timers)", (r"asyncio/timeouts\.py|TimerHandle|^timeout \(|uv_timer|"
                                                    r"heap_(insert|remove)|Loop__call_at|call_later|watchdog\.py")),
    ("upstream response reading (http client)", r"providers/(http|connection)\.py|httptools"),
    ("client write (re-encode, aiohttp StreamResponse/StreamWriter)", (r"^(_event|_relay|write_may_wait|_within) \(|"
                                                                       r"sse_writer\.py|web_response\.py|http_writer\.py")),
    ("RouteStream per-chunk bookkeeping", r"llmroute/stream\.py"),
    ("provider.stream generator", r"openai_compat\.py"),
    ("request setup (routing, cascade, headers, auth, ledger entry)", r"llmroute/"),
    ("aiohttp server (accept, request parse, handler)", r"aiohttp/"),
    ("asyncio/uvloop machinery", (r"asyncio/|uvloop|\((loop|handle|cbhandles|future|task|stream|tcp)\.c|"
                                 r"_asynciomodule\.c|\(core\.c|\(epoll\.c|linux\.c")),
]


def frames(line: str) -> tuple[list[str], int]:
    stack, _, count = line.rstrip().rpartition(" ")
    return stack.split(";"), int(count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--group", action="store_true")
    parser.add_argument("--main-thread", action="store_true",
                        help="only the event loop's thread (drop stacks under Thread._bootstrap: idle pools, ledger)")
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
            if args.main_thread and any(fr.startswith("Thread._bootstrap") for fr in stack):
                continue
            total += count
            names = [re.sub(r" \((.*?/)?(site-packages/|lib/python3\.\d+/)?", " (", fr) for fr in stack]
            names = [re.sub(r":\d+\)$", ")", n) for n in names]
            own[names[-1]] += count
            for n in set(names):
                inclusive[n] += count
            stage = next((name for fr in reversed(stack) for name, pattern in compiled if pattern.search(fr)), "other")
            stages[stage] += count
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
