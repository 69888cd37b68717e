"""Load generator for benchmarks/streams.py: hold N concurrent SSE streams, time every event.

    python benchmarks/stream_loadgen.py URL --streams N --events E --interval S [--ramp S] [--header K:V]...

One process, uvloop, one raw asyncio protocol per stream (one connection each), httptools to undo HTTP/1.1
framing, no JSON parsed: an event is counted at each blank line of the SSE body and timed when the bytes that
end it arrive. Streams open at an even pace over ``--ramp`` seconds. At the end it prints one JSON object:
TTFT (request written -> first event), the gaps between a stream's first E+1 events (its cadence events and
the finish chunk, all sent one interval apart), events per 10 ms bucket (time.monotonic, which is
CLOCK_MONOTONIC and so comparable with the parent's clock), the window when every stream was open, errors
and its own CPU time. Nothing here waits on a response's content: a stalled stream is cut at its deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import sys
import time
import urllib.parse

import httptools
import uvloop

BUCKET_S = 0.01


class Stream(asyncio.Protocol):
    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.sent = 0.0
        self.status = 0
        self.times: list[float] = []  # arrival of the first E+1 events
        self.events = 0
        self.tail = b""
        self.error_body = b""
        self.done = False  # [DONE] seen
        self.complete = False
        self.error: str | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.sent = time.monotonic()
        self.transport.write(self.gen.request)

    def data_received(self, data: bytes) -> None:
        self.now = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(f"bad HTTP: {exc}")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_body(self, data: bytes) -> None:
        if self.status != 200:
            self.error_body = (self.error_body + data)[:300]
            return
        if b"\r" in data:
            data = data.replace(b"\r", b"")
        joined = self.tail + data
        n = joined.count(b"\n\n")
        self.tail = joined[-1:] if joined.endswith(b"\n") and not joined.endswith(b"\n\n") else b""
        if n:
            self.events += n
            gen = self.gen
            room = gen.timed - len(self.times)
            if room > 0:
                self.times.extend([self.now] * min(n, room))
            bucket = int((self.now - gen.origin) / BUCKET_S)
            gen.buckets[bucket] = gen.buckets.get(bucket, 0) + n
            if b"[DONE]" in joined:
                self.done = True

    def on_message_complete(self) -> None:
        self.complete = True
        if self.status != 200:
            self.fail(f"HTTP {self.status}: {self.error_body[:300].decode('utf-8', 'replace')}")
        elif not self.done:
            self.fail("stream ended without [DONE]")
        elif self.transport is not None:
            self.transport.close()
        if not self.finished.done():
            self.finished.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete:
            self.fail(f"connection closed mid-answer ({exc.__class__.__name__ if exc else 'EOF'})")
        if not self.finished.done():
            self.finished.set_result(None)

    def fail(self, why: str) -> None:
        if self.error is None:
            self.error = why
        if self.transport is not None:
            self.transport.abort()
        if not self.finished.done():
            self.finished.set_result(None)


class LoadGen:
    def __init__(self, url: str, events: int, headers: list[str], body: bytes) -> None:
        u = urllib.parse.urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        extra = "".join(f"{h.split(':', 1)[0].strip()}: {h.split(':', 1)[1].strip()}\r\n" for h in headers)
        self.request = (f"POST {u.path} HTTP/1.1\r\nhost: {u.netloc}\r\ncontent-type: application/json\r\n"
                        f"accept: text/event-stream\r\ncontent-length: {len(body)}\r\n{extra}\r\n").encode() + body
        self.timed = events + 1
        self.origin = time.monotonic()
        self.buckets: dict[int, int] = {}

    async def one(self, start: float, deadline_s: float) -> Stream:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        stream = Stream(self)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: stream, self.host, self.port), 10)
        except (OSError, TimeoutError) as exc:
            stream.fail(f"connect: {exc.__class__.__name__} {exc}")
            return stream
        try:
            await asyncio.wait_for(asyncio.shield(stream.finished), deadline_s)
        except TimeoutError:
            stream.fail(f"not finished within {deadline_s:.0f} s")
        return stream


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run(args: argparse.Namespace) -> dict[str, object]:
    body = json.dumps({"model": args.model, "stream": True, "stream_options": {"include_usage": True},
                       "max_tokens": 256, "messages": [{"role": "user", "content": "Qualify this lead: TechCorp, "
                                                                                  "500 employees, SaaS"}]}).encode()
    gen = LoadGen(args.url, args.events, args.header, body)
    t0 = time.monotonic() + 0.05
    deadline_s = args.events * args.interval + args.grace
    streams = await asyncio.gather(*(gen.one(t0 + i * args.ramp / args.streams, deadline_s)
                                     for i in range(args.streams)))
    ok = [s for s in streams if s.error is None]
    ttft = [(s.times[0] - s.sent) * 1000 for s in ok if s.times]
    gaps = [(b - a - args.interval) * 1000 for s in ok for a, b in zip(s.times, s.times[1:])]
    errors: dict[str, int] = {}
    for s in streams:
        if s.error is not None:
            why = re.sub(r"\d+", "N", s.error)  # "pool_exhausted (5004 ms)" and "(5001 ms)" are one error
            errors[why] = errors.get(why, 0) + 1
    # every stream open: from the last stream's first event to the first stream's finish chunk
    firsts = [s.times[0] for s in ok if s.times]
    lasts = [s.times[-1] for s in ok if len(s.times) == gen.timed]
    # The gaps while every stream is open: none is opening or closing, so what a proxy does per request is not in them.
    start, end = max(firsts, default=0.0), min(lasts, default=0.0)
    open_gaps = [(b - a - args.interval) * 1000 for s in ok for a, b in zip(s.times, s.times[1:])
                 if start <= a and b <= end]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "streams": args.streams, "ok": len(ok), "errors": errors,
        "events": sum(s.events for s in streams),
        "events_expected_per_stream": args.events + 3,  # cadence events, finish, usage, [DONE]
        "short_streams": sum(1 for s in ok if s.events < args.events + 3),
        "ttft_ms": {"p50": pct(ttft, 0.5), "p90": pct(ttft, 0.9), "p99": pct(ttft, 0.99), "max": max(ttft, default=None),
                    "over_1s": sum(1 for t in ttft if t > 1000)},
        "gap_added_ms": {"p50": pct(gaps, 0.5), "p90": pct(gaps, 0.9), "p99": pct(gaps, 0.99),
                         "p999": pct(gaps, 0.999), "max": max(gaps, default=None), "n": len(gaps)},
        "gap_open_ms": {"p50": pct(open_gaps, 0.5), "p99": pct(open_gaps, 0.99), "p999": pct(open_gaps, 0.999),
                        "n": len(open_gaps)},
        "window": [start, end],
        "origin": gen.origin, "bucket_s": BUCKET_S, "buckets": gen.buckets,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "max_rss_kb": usage.ru_maxrss,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--events", type=int, default=200, help="cadence events per stream (the upstream's)")
    parser.add_argument("--interval", type=float, default=0.05, help="the upstream's cadence, seconds")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which the streams open")
    parser.add_argument("--grace", type=float, default=30.0, help="a stream's deadline past its nominal length")
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--header", action="append", default=[], help="K:V, repeatable")
    parser.add_argument("--cpu", type=int, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = uvloop.run(run(args))
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
