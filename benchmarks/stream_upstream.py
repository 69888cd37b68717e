"""A small fast SSE upstream for benchmarks/streams.py, outside the project's emulator.

    python benchmarks/stream_upstream.py PORT [--rate 20] [--duration 10]

Each POST with ``"stream": true`` gets OpenAI ``chat.completion.chunk`` events at a fixed cadence: event k
at start + k/rate, for ``rate * duration`` events; one cadence after the last, a finish chunk, a usage chunk
and ``[DONE]`` in one write. The cadence is kept per stream with the loop's timers (``call_at`` on the
stream's own schedule, so a late timer does not shift the rest). A POST without streaming gets a whole
completion; any GET gets an empty model list (health checks). Raw asyncio protocol + httptools on uvloop:
one ``transport.write`` per event, no JSON built per event. Prints ``READY`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import httptools
import uvloop

HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n")
PREFIX = (b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,"model":"bench-model",'
          b'"system_fingerprint":null,"choices":[{"index":0,')
FIRST = PREFIX + b'"delta":{"role":"assistant","content":"Lead"},"logprobs":null,"finish_reason":null}]}'
WORDS = [b"the", b"lead", b"is", b"qualified", b"with", b"budget", b"and", b"a", b"clear", b"need", b"next", b"call"]
FINISH = PREFIX + b'"delta":{},"logprobs":null,"finish_reason":"stop"}]}'
COMPLETION = (b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-model",'
              b'"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
              b'"usage":{"prompt_tokens":24,"completion_tokens":1,"total_tokens":25}}')
MODELS = b'{"object":"list","data":[{"id":"bench-model","object":"model"}]}'


def chunk(*events: bytes) -> bytes:
    """SSE events as one HTTP/1.1 chunk."""
    data = b"".join(b"data: " + e + b"\n\n" for e in events)
    return b"%x\r\n%s\r\n" % (len(data), data)


def whole(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


class Script:
    """Every stream's bytes, built once: the head and first event, one chunk per position, the end."""

    def __init__(self, interval_s: float, events: int) -> None:
        self.interval_s = interval_s
        self.events = events
        self.first = HEAD + chunk(FIRST)
        # each position's chunk differs: LiteLLM ends a stream that repeats one chunk 100 times
        self.tokens = [chunk(PREFIX + b'"delta":{"content":" %s %d"},"logprobs":null,"finish_reason":null}]}'
                             % (WORDS[k % len(WORDS)], k)) for k in range(events)]
        usage = (b'{"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
                 b'"model":"bench-model","choices":[],"usage":{"prompt_tokens":24,"completion_tokens":%d,'
                 b'"total_tokens":%d}}' % (events, events + 24))
        self.last = chunk(FINISH, usage, b"[DONE]") + b"0\r\n\r\n"


class Upstream(asyncio.Protocol):
    def __init__(self, script: Script) -> None:
        self.loop = asyncio.get_running_loop()
        self.script = script
        self.interval_s = script.interval_s
        self.events = script.events
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None
        self.start = 0.0
        self.sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.parser.get_method() != b"POST":
            self.transport.write(whole(b"200 OK", MODELS))
            return
        body = b"".join(self.body).replace(b" ", b"")
        if b'"stream":true' not in body:
            self.transport.write(whole(b"200 OK", COMPLETION))
            return
        self.start = self.loop.time()
        self.sent = 1
        self.transport.write(self.script.first)
        self.timer = self.loop.call_at(self.start + self.interval_s, self.tick)

    def tick(self) -> None:
        if self.transport is None:
            return
        if self.sent < self.events:
            self.transport.write(self.script.tokens[self.sent])
            self.sent += 1
            self.timer = self.loop.call_at(self.start + self.sent * self.interval_s, self.tick)
        else:
            self.transport.write(self.script.last)
            self.timer = None


async def serve(port: int, rate: float, duration_s: float) -> None:
    loop = asyncio.get_running_loop()
    events = max(1, round(rate * duration_s))
    script = Script(1 / rate, events)
    server = await loop.create_server(lambda: Upstream(script), "127.0.0.1", port, backlog=4096)
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
    print("READY", flush=True)
    await stop
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second per stream")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per stream")
    parser.add_argument("--cpu", type=int, help="pin to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    uvloop.run(serve(args.port, args.rate, args.duration))


if __name__ == "__main__":
    main()
