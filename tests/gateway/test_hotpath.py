"""The completion endpoints' own connection (``gateway.hotpath``), on a real server over loopback: requests of
the usual shape are answered there; anything else, and everything after it on the connection, by aiohttp, in
order, with no byte lost; the connection's limits hold on both."""

from __future__ import annotations

import asyncio
import gzip
import socket
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
    def __init__(self, runner: GatewayRunner, port: int, seen: list[tuple[str, Any]], hold: asyncio.Event) -> None:
        self.runner, self.port, self.seen, self.hold = runner, port, seen, hold

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

        hold = asyncio.Event()

        async def held(request: web.Request) -> web.Response:  # aiohttp's answer waits for the test
            await hold.wait()
            return web.json_response({"by": "aiohttp", "held": True})

        app = web.Application(client_max_size=limits.get("max_body_bytes", 4 * 1024 * 1024))
        app.router.add_post("/v1/chat/completions", aiohttp_chat)
        app.router.add_get("/health", health)
        app.router.add_get("/hold", held)
        settings = {"header_timeout_s": 5.0, "body_timeout_s": 5.0, "max_connections": 64, **limits}
        runner = GatewayRunner(app, ConnectionLimits(**settings), shutdown_timeout=5, access_log=None,
                               keepalive_timeout=settings.get("keepalive_timeout_s", 75.0),
                               connection_factory=hot_connections({CHAT: hot or hot_chat}))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return Served(runner, runner.addresses[0][1], seen, hold)

    yield start
    for runner in runners:
        await runner.cleanup()


class Gate:
    """A hot handler that answers ``body`` once the test opens the gate; ``entered`` is set when it waits."""

    def __init__(self, body: bytes | None = None) -> None:
        self.entered, self.release, self.body, self.count = asyncio.Event(), asyncio.Event(), body, 0

    async def __call__(self, request: HotRequest) -> Answer:
        self.entered.set()
        await self.release.wait()
        self.count += 1
        return Answer(request.body if self.body is None else self.body, "")


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
    slow = Gate(b'{"done": true}')
    entered, release = slow.entered, slow.release
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


async def test_empty_lines_before_a_request_do_not_move_its_body(serve: Callable[..., Awaitable[Served]]) -> None:
    # The parser skips any CR and LF before a request line; so must the body's offset. Were it counted from an
    # empty line, this POST's head would become its body, and its body a request of the client's choosing.
    served = await serve()
    smuggled = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Smuggled: 1\r\n\r\n"
    reader, writer = await served.connect()
    writer.write(b"\n\r\n\r\n" + post(smuggled) + b"\r\n" + post(b'{"second": 2}'))
    first, second = await answers(reader, 2)
    assert first["json"] == {"by": "hot", "body": smuggled.decode()}
    assert second["json"] == {"by": "hot", "body": '{"second": 2}'}
    assert [kind for kind, _ in served.seen] == ["hot", "hot"]


async def test_an_empty_line_after_a_request_is_not_a_slow_request(serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve(header_timeout_s=0.2)
    reader, writer = await served.connect()
    writer.write(post() + b"\r\n")  # the CRLF some old clients send after a body
    await answers(reader, 1)
    await asyncio.sleep(0.5)  # past the header deadline: what is measured is that no timer fires
    writer.write(post(b'{"again": 1}'))
    [answer] = await answers(reader, 1)  # a 408 sent meanwhile would be read here instead
    assert answer["status"] == 200 and answer["json"]["body"] == '{"again": 1}'


async def test_pipelined_requests_are_parsed_only_a_few_ahead(serve: Callable[..., Awaitable[Served]]) -> None:
    gated = Gate()
    entered, release = gated.entered, gated.release
    served = await serve(gated)
    reader, writer = await served.connect()
    writer.write(b"".join(post(b'{"i": %d}' % i) for i in range(300)))  # about 30 KB: one or two reads
    await asyncio.wait_for(entered.wait(), 10)
    [connection] = served.server.own_connections
    assert 1 <= connection.queued <= 4  # the rest waits unparsed (and in the socket), not as parsed requests
    release.set()
    got = await answers(reader, 300)
    assert [a["body"] for a in got] == [b'{"i": %d}' % i for i in range(300)]
    assert gated.count == 300


async def test_requests_behind_a_hand_over_wait_for_the_answer_in_flight(
        serve: Callable[..., Awaitable[Served]]) -> None:
    slow = Gate(b'{"slow": true}')
    entered, release = slow.entered, slow.release

    served = await serve(slow, header_timeout_s=0.2)
    reader, writer = await served.connect()
    writer.write(post())
    await asyncio.wait_for(entered.wait(), 10)
    writer.write(b"GET /health HTTP/1.1\r\nHo")  # its headers come in two reads, while the POST is answered
    await writer.drain()
    await asyncio.sleep(0.05)  # no event says the server has read them: a moment for a read of their own
    writer.write(b"st: x\r\n\r\n" + GET_HEALTH * 40)
    await writer.drain()
    await asyncio.sleep(0.4)  # past the header deadline: waiting for the answer ahead is not the client's delay
    release.set()
    got = await answers(reader, 42)
    assert got[0]["json"] == {"slow": True} and "connection" not in got[0]["headers"]
    assert all(a["json"] == {"by": "aiohttp", "status": "ok"} for a in got[1:])


async def test_a_handler_cancelled_from_inside_closes_its_connection(
        serve: Callable[..., Awaitable[Served]]) -> None:
    async def cancelled(request: HotRequest) -> Any:
        raise asyncio.CancelledError  # e.g. awaiting a task something else cancelled

    served = await serve(cancelled)
    reader, writer = await served.connect()
    writer.write(post())
    assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, not left hanging with no answer
    assert served.server.open_connections == 0


async def test_a_closed_connection_counts_against_the_cap_until_it_is_gone(
        serve: Callable[..., Awaitable[Served]]) -> None:
    # A connection closed while its client reads nothing keeps its socket (and its unsent bytes) until the
    # bytes go: it must keep counting against max_connections until then, as aiohttp's connections do.
    async def large(request: HotRequest) -> Answer:
        return Answer(b'"' + b"x" * (32 * 1024 * 1024) + b'"', "")

    served = await serve(large, max_connections=1, body_timeout_s=0.2)
    reader, writer = await served.connect()
    writer.write(post() + post()[:-4])  # an answer it will not read, then a request whose body never ends
    await writer.drain()
    await asyncio.sleep(0.5)  # past the body deadline, which closes the first connection: it lingers, unread
    refused_reader, _ = await served.connect()
    refused = await asyncio.wait_for(refused_reader.read(), 5)
    assert refused.startswith(b"HTTP/1.1 503")
    assert served.server.open_connections == 1
    writer.transport.abort()


async def test_after_a_hand_over_aiohttp_pauses_reading_as_it_would(serve: Callable[..., Awaitable[Served]]) -> None:
    slow = Gate(b'{"slow": true}')
    entered, release = slow.entered, slow.release

    served = await serve(slow)
    reader, writer = await served.connect()
    writer.write(post())
    await asyncio.wait_for(entered.wait(), 10)
    # Behind it: a request aiohttp will hold, and more pipelined requests than aiohttp queues before it stops
    # reading. They reach aiohttp at the hand-over, all at once.
    writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n" + GET_HEALTH * 60)
    await writer.drain()
    release.set()
    [first] = await answers(reader, 1)
    assert first["json"] == {"slow": True}
    [aiohttp_connection] = served.server.connections
    assert not aiohttp_connection.transport.is_reading()  # aiohttp's pause held; the hand-over did not undo it
    served.hold.set()
    got = await answers(reader, 61)
    assert got[0]["json"] == {"by": "aiohttp", "held": True}
    assert all(a["json"]["status"] == "ok" for a in got[1:])


async def test_a_request_for_aiohttp_that_completes_during_shutdown_gets_a_503(
        serve: Callable[..., Awaitable[Served]]) -> None:
    served = await serve()
    reader, writer = await served.connect()
    writer.write(b"GET /health HTTP/1.1\r\nHo")  # its headers are not all here when the shutdown starts
    await writer.drain()
    await asyncio.sleep(0.05)  # no event says the server has read them: a moment for that read
    [connection] = served.server.own_connections
    served.server.pre_shutdown()
    assert connection.closing
    writer.write(b"st: x\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)
    assert answer.startswith(b"HTTP/1.1 503") and b"shutting_down" in answer
    assert not served.server.connections  # not handed to aiohttp, whose drain may have begun


async def test_a_closed_connection_whose_client_reads_nothing_is_let_go_after_the_write_deadline(
        serve: Callable[..., Awaitable[Served]]) -> None:
    async def endless(request: HotRequest) -> Any:
        events = request.open_events({"Content-Type": "text/event-stream"}, 30.0)
        while True:
            await events.send_bounded(b"data: " + b"x" * 16000 + b"\n\n")

    served = await serve(endless, body_timeout_s=0.3, write_timeout_s=0.5)
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing, and holds little
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", served.port))
        # A stream it never reads, then a request whose body never ends: the body deadline closes the connection
        # with the stream's bytes unsent. They can never go; the socket must not hold its slot for good.
        await loop.sock_sendall(sock, post() + b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 10"
                                             b"\r\n\r\nab")
        deadline = loop.time() + 10

        async def until(condition: Callable[[], bool]) -> None:
            while not condition() and loop.time() < deadline:
                await asyncio.sleep(0.02)  # no event says what the server did with the socket: its state is read

        await until(lambda: bool(served.server.own_connections))
        [connection] = served.server.own_connections
        await until(lambda: connection.transport is None or connection.transport.is_closing())
        assert connection.transport is not None and connection.transport.get_write_buffer_size() > 0  # closed, unsent
        await until(lambda: served.server.open_connections == 0)
        assert served.server.open_connections == 0 and not served.server.own_connections
    finally:
        sock.close()
