"""The completion endpoints' own connection (``gateway.hotpath``), on a real server over loopback: requests of
the usual shape are answered there; anything else, and everything after it on the connection, by aiohttp, in
order, with no byte lost; the connection's limits hold on both."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httptools
import orjson
import pytest
from aiohttp import web

from llmroute.gateway.answer import Answer
from llmroute.gateway.hotpath import HotRequest, hot_connections
from llmroute.gateway.protocol import ConnectionLimits, GatewayRunner, GatewayServer

CHAT = b"/v1/chat/completions"


def post(body: bytes = b'{"n": 1}', *, path: bytes = CHAT, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (b"POST %s HTTP/%s\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
            % (path, version, len(body), extra, body))


GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"


class Served:
    def __init__(self, runner: GatewayRunner, port: int, seen: list[tuple[str, Any]]) -> None:
        self.runner, self.port, self.seen = runner, port, seen

    @property
    def server(self) -> GatewayServer:
        server = self.runner.server
        assert isinstance(server, GatewayServer)
        return server

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[Served]]]:
    runners: list[GatewayRunner] = []

    async def start(hot: Callable[[HotRequest], Awaitable[Any]] | None = None, **limits: Any) -> Served:
        seen: list[tuple[str, Any]] = []

        async def hot_chat(request: HotRequest) -> Answer:
            seen.append(("hot", request.body))
            return Answer(orjson.dumps({"by": "hot", "body": request.body.decode()}), "x-by: hot\r\n")

        async def aiohttp_chat(request: web.Request) -> web.Response:
            body = await request.read()
            seen.append(("aiohttp", body))
            return web.json_response({"by": "aiohttp", "body": body.decode("latin-1")})

        async def health(request: web.Request) -> web.Response:
            seen.append(("aiohttp", "health"))
            return web.json_response({"by": "aiohttp", "status": "ok"})

        app = web.Application(client_max_size=limits.get("max_body_bytes", 4 * 1024 * 1024))
        app.router.add_post("/v1/chat/completions", aiohttp_chat)
        app.router.add_get("/health", health)
        settings = {"header_timeout_s": 5.0, "body_timeout_s": 5.0, "max_connections": 64, **limits}
        runner = GatewayRunner(app, ConnectionLimits(**settings), shutdown_timeout=5, access_log=None,
                               keepalive_timeout=settings.get("keepalive_timeout_s", 75.0),
                               connection_factory=hot_connections({CHAT: hot or hot_chat}))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return Served(runner, runner.addresses[0][1], seen)

    yield start
    for runner in runners:
        await runner.cleanup()


class _Answers:
    def __init__(self) -> None:
        self.done: list[dict[str, Any]] = []
        self._headers: dict[str, str] = {}
        self._body = bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append({"headers": self._headers, "body": bytes(self._body)})
        self._headers, self._body = {}, bytearray()


async def answers(reader: asyncio.StreamReader, count: int) -> list[dict[str, Any]]:
    """Read ``count`` whole HTTP answers, with their status."""
    sink = _Answers()
    parser = httptools.HttpResponseParser(sink)
    statuses: list[int] = []
    while len(sink.done) < count:
        data = await asyncio.wait_for(reader.read(65536), 10)
        assert data, f"the connection closed after {len(sink.done)} of {count} answers"
        before = len(sink.done)
        parser.feed_data(data)
        statuses += [parser.get_status_code()] * (len(sink.done) - before)
    for answer, status in zip(sink.done, statuses):
        answer["status"] = status
        answer["json"] = orjson.loads(answer["body"]) if answer["body"][:1] == b"{" else None
    return sink.done


async def test_a_completion_is_answered_by_the_hot_path_and_another_request_hands_the_connection_over(
        serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    reader, writer = await served.connect()
    writer.write(post(b'{"first": 1}'))
    [first] = await answers(reader, 1)
    assert first["json"] == {"by": "hot", "body": '{"first": 1}'} and first["headers"]["x-by"] == "hot"
    assert len(served.server.own_connections) == 1 and served.server.open_connections == 1

    writer.write(GET_HEALTH)
    [health] = await answers(reader, 1)
    assert health["json"] == {"by": "aiohttp", "status": "ok"}
    # The connection is aiohttp's now, and still counted once against the cap.
    assert not served.server.own_connections and len(served.server.connections) == 1
    assert served.server.open_connections == 1
    writer.write(post(b'{"third": 3}'))
    [third] = await answers(reader, 1)
    assert third["json"] == {"by": "aiohttp", "body": '{"third": 3}'}
    writer.close()
    await writer.wait_closed()


async def test_pipelined_requests_of_both_kinds_are_answered_in_order_with_no_byte_lost(
        serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    reader, writer = await served.connect()
    chunked = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\n{\"c\":\r\n3\r\n 4}\r\n0\r\n\r\n")
    hot = [post(b'{"i": %d}' % i) for i in range(10)]  # more than are parsed ahead of the one answered
    writer.write(b"".join(hot) + GET_HEALTH + chunked + post(b'{"last": 1}'))
    got = await answers(reader, 13)
    assert [a["json"]["body"] for a in got[:10]] == [f'{{"i": {i}}}' for i in range(10)]
    assert all(a["json"]["by"] == "hot" for a in got[:10])
    assert got[10]["json"] == {"by": "aiohttp", "status": "ok"}
    assert got[11]["json"] == {"by": "aiohttp", "body": '{"c": 4}'}
    assert got[12]["json"] == {"by": "aiohttp", "body": '{"last": 1}'}
    assert [kind for kind, _ in served.seen] == ["hot"] * 10 + ["aiohttp"] * 3


@pytest.mark.parametrize("request_bytes, expected", [
    (post(extra=b"Expect: 100-continue\r\n"), "continue"),
    (post(gzip.compress(b'{"z": 1}'), extra=b"Content-Encoding: gzip\r\n"), "aiohttp"),
    (post(version=b"1.0"), "aiohttp"),
    (post(path=CHAT + b"?api-version=1"), "aiohttp"),
    (post(extra=b"X-Big: " + b"a" * 3000 + b"\r\n"), "aiohttp"),
    (post(b"x" * 2000), 413),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 400),
    (b"BREW /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", "aiohttp"),
])
async def test_requests_of_another_shape_are_answered_by_aiohttp(
        serve: Callable[..., Awaitable[Served]], request_bytes: bytes, expected: str | int) -> None:
    served = await serve(max_header_bytes=2048, max_body_bytes=1024)
    reader, writer = await served.connect()
    writer.write(request_bytes)
    if expected == "continue":  # aiohttp's interim answer, then the body, then its answer
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 100")
    [answer] = await answers(reader, 1)
    assert ("hot", b'{"n": 1}') not in served.seen
    if isinstance(expected, int):
        assert answer["status"] == expected
    elif answer["json"] is not None and "by" in answer["json"]:
        assert answer["json"]["by"] == "aiohttp"
    else:  # BREW: no route takes it; aiohttp's router answers
        assert answer["status"] in (404, 405, 501)
    assert not served.server.own_connections


async def test_an_idle_keep_alive_connection_is_closed(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve(keepalive_timeout_s=0.3)
    reader, writer = await served.connect()
    writer.write(post())
    await answers(reader, 1)
    assert await asyncio.wait_for(reader.read(), 10) == b""  # the gateway closed it: EOF
    assert served.server.open_connections == 0 and not served.server.own_connections


async def test_a_client_that_leaves_cancels_its_handler(serve: Callable[..., Awaitable[Served]]) -> None:
    entered, cancelled = asyncio.Event(), asyncio.Event()

    async def forever(request: HotRequest) -> Any:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    served = await serve(forever)
    reader, writer = await served.connect()
    writer.write(post())
    await asyncio.wait_for(entered.wait(), 10)
    writer.close()
    await asyncio.wait_for(cancelled.wait(), 10)


async def test_shutdown_lets_the_request_in_flight_finish(serve: Callable[..., Awaitable[Served]]) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow(request: HotRequest) -> Answer:
        entered.set()
        await release.wait()
        return Answer(b'{"done": true}', "")

    served = await serve(slow)
    reader, writer = await served.connect()
    idle_reader, _ = await served.connect()
    writer.write(post())
    await asyncio.wait_for(entered.wait(), 10)
    cleanup = asyncio.create_task(served.runner.cleanup())
    assert await asyncio.wait_for(idle_reader.read(), 10) == b""  # an idle connection is closed at once
    assert not cleanup.done()
    release.set()
    [answer] = await answers(reader, 1)
    assert answer["json"] == {"done": True} and answer["headers"]["connection"] == "close"
    await asyncio.wait_for(cleanup, 10)
    assert await reader.read() == b""


async def test_a_stream_is_framed_in_chunks_and_the_connection_kept(serve: Callable[..., Awaitable[Served]]) -> None:
    async def stream(request: HotRequest) -> Any:
        events = request.open_events({"Content-Type": "text/event-stream", "x-by": "hot"}, 5.0)
        assert events.write(b"data: {\"a\": 1}\n\n")
        await events.send_bounded(b"data: {\"b\": 2}\n\n")
        await events.close()
        return events.response

    served = await serve(stream)
    reader, writer = await served.connect()
    writer.write(post() + post())
    first, second = await answers(reader, 2)
    for answer in (first, second):
        assert answer["headers"]["transfer-encoding"] == "chunked" and answer["headers"]["x-by"] == "hot"
        assert answer["body"] == b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n'


async def test_the_connection_cap_counts_hot_connections(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve(max_connections=2)
    held = [await served.connect() for _ in range(2)]
    for reader, writer in held:
        writer.write(post())
        await answers(reader, 1)
    reader, _ = await served.connect()
    refused = await asyncio.wait_for(reader.read(), 10)
    assert refused.startswith(b"HTTP/1.1 503") and b"too_many_connections" in refused
