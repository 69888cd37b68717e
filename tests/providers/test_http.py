"""The upstream HTTP client against real sockets: keep-alive, framing, stale connections, TLS, cancellation."""

from __future__ import annotations

import asyncio
import ssl
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import trustme
from aiohttp import web

from llmroute.providers.http import ConnectionPool, InvalidResponse, UpstreamClosed, encode_headers

from ..conftest import emulator, free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1"


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    return head + await reader.readexactly(length)


async def test_keep_alive_reuses_one_connection() -> None:
    with emulator("runpod") as emu:
        pool = ConnectionPool(emu.base_url, headers={"content-type": "application/json"})
        for _ in range(25):
            resp = await pool.post("/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}')
            assert resp.status == 200 and b"chat.completion" in resp.body
        await pool.aclose()
        assert emu.emulator.stats["connections"] == 1


async def test_chunked_and_close_delimited_bodies() -> None:
    with emulator("cerebras") as emu:  # SSE answers are chunked
        pool = ConnectionPool(emu.base_url, headers={"content-type": "application/json"})
        resp = await pool.post("/chat/completions", b'{"stream": true, "messages": [{"role": "user", "content": "hi"}]}')
        assert resp.headers["transfer-encoding"] == "chunked"
        assert resp.body.rstrip().endswith(b"data: [DONE]")
        await pool.aclose()

    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"until\": \"close\"}")
        await writer.drain()
        writer.close()

    server, url = await raw_server(close_delimited)
    async with server:
        resp = await ConnectionPool(url).post("/x", b"{}")
    assert resp.body == b'{"until": "close"}'


async def test_stale_idle_connection_is_retried_once() -> None:
    connections = 0

    async def one_answer_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read(1)  # the next request arrives on this connection: hang up without answering
        writer.close()

    server, url = await raw_server(one_answer_per_connection)
    async with server:
        pool = ConnectionPool(url)
        assert (await pool.post("/a", b"1")).body == b"ok"
        assert (await pool.post("/b", b"2")).body == b"ok"  # sent on the stale one, retried on a fresh one
    assert connections == 2


async def test_closed_mid_answer_is_not_retried() -> None:
    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    server, url = await raw_server(truncate)
    async with server:
        with pytest.raises(UpstreamClosed):
            await ConnectionPool(url).post("/x", b"{}")


async def test_garbage_is_an_invalid_response() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()

    server, url = await raw_server(garbage)
    async with server:
        with pytest.raises(InvalidResponse):
            await ConnectionPool(url).post("/x", b"{}")


async def test_connection_refused() -> None:
    with pytest.raises(ConnectionRefusedError):
        await ConnectionPool(f"http://127.0.0.1:{free_port()}/v1").post("/x", b"{}")


async def test_cancelled_request_drops_its_connection() -> None:
    with emulator("runpod") as emu:
        pool = ConnectionPool(emu.base_url)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await pool.post("/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}',
                                {"x-emulator-fault": "hang"})
        assert pool._idle == []  # never handed to the next request mid-answer
        resp = await pool.post("/chat/completions", b'{"messages": [{"role": "user", "content": "hi"}]}')
        assert resp.status == 200


async def test_stream_with_a_slow_reader_keeps_order() -> None:
    pieces = [f"piece-{i:04d};".encode() for i in range(500)]

    async def many(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/many", many)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        pool = ConnectionPool(f"http://127.0.0.1:{port}/v1")
        stream = await pool.post_stream("/many", b"")
        received = b""
        async for chunk in stream:
            received += chunk
            await asyncio.sleep(0)  # slower than the server: exercises pause and resume
        await stream.aclose()
        assert received == b"".join(pieces)
        assert len(pool._idle) == 1  # read to the end, so the connection went back to the pool
    finally:
        await runner.cleanup()


async def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        await writer.drain()

    server = await asyncio.start_server(hello, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    async with server:
        resp = await ConnectionPool(f"https://127.0.0.1:{port}/v1", ca_bundle=str(bundle)).post("/x", b"{}")
        assert resp.body == b"hello"
        with pytest.raises(ssl.SSLCertVerificationError):
            await ConnectionPool(f"https://127.0.0.1:{port}/v1").post("/x", b"{}")  # system CAs do not know it


def test_header_injection_is_refused() -> None:
    assert encode_headers({"a": "b"}) == b"a: b\r\n"
    with pytest.raises(ValueError):
        encode_headers({"x-request-id": "abc\r\nx-evil: 1"})


def compress(data: bytes, encoding: str) -> bytes:
    wbits = {"gzip": 31, "deflate": 15, "raw deflate": -15}[encoding]
    z = zlib.compressobj(wbits=wbits)
    return z.compress(data) + z.flush()


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw deflate"])
async def test_compressed_answers_are_decoded(encoding: str) -> None:
    body = b'{"choices": [], "padding": "' + b"abc" * 10_000 + b'"}'
    header = encoding.split()[-1]

    async def compressed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:  # the client hung up
                return
            data = compress(body, encoding)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: %s\r\ntransfer-encoding: chunked\r\n\r\n" % header.encode()
                         + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (data[:7], data[7:100], data[100:]))
                         + b"0\r\n\r\n")
            await writer.drain()

    server, url = await raw_server(compressed)
    async with server:
        pool = ConnectionPool(url)
        assert (await pool.post("/x", b"{}")).body == body
        stream = await pool.post_stream("/x", b"{}")
        assert await stream.read() == body
        await stream.aclose()
        await pool.aclose()


async def test_a_compressed_stream_is_decoded_piece_by_piece() -> None:
    first_read = asyncio.Event()

    async def gzip_sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        z = zlib.compressobj(wbits=31)
        first = z.compress(b"data: one\n\n") + z.flush(zlib.Z_SYNC_FLUSH)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
                     + b"%x\r\n%s\r\n" % (len(first), first))
        await writer.drain()
        await first_read.wait()  # the rest only once the client decoded the first event
        rest = z.compress(b"data: two\n\n") + z.flush()
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(rest), rest))
        await writer.drain()

    server, url = await raw_server(gzip_sse)
    async with server:
        stream = await ConnectionPool(url).post_stream("/x", b"{}")
        pieces = []
        async for piece in stream:
            pieces.append(piece)
            first_read.set()
        await stream.aclose()
    assert pieces[0] == b"data: one\n\n" and b"".join(pieces) == b"data: one\n\ndata: two\n\n"


@pytest.mark.parametrize("header, body, problem", [
    (b"br", b"\x1b\x00", "unsupported Content-Encoding 'br'"),
    (b"gzip", b"not gzip at all", "invalid gzip body"),
])
async def test_undecodable_answers_are_invalid_responses(header: bytes, body: bytes, problem: str) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-encoding: %s\r\ncontent-length: %d\r\n\r\n%s" % (header, len(body), body))
        await writer.drain()

    server, url = await raw_server(bad)
    async with server:
        with pytest.raises(InvalidResponse, match=problem):
            await ConnectionPool(url).post("/x", b"{}")


@pytest.mark.parametrize("interim", [b"HTTP/1.1 100 Continue\r\n\r\n",
                                     b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n"])
async def test_interim_answers_are_skipped(interim: bytes) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(2):  # keep-alive: the plain request, then the streamed one
            await read_request(reader)
            writer.write(interim + b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n"
                         + b'{"ok": true')
            await writer.drain()
        writer.close()

    server, url = await raw_server(answer)
    async with server:
        pool = ConnectionPool(url)
        resp = await pool.post("/x", b"{}")
        assert (resp.status, resp.body) == (200, b'{"ok": true')
        assert "link" not in resp.headers  # the interim answer's headers are not the answer's
        stream = await pool.post_stream("/x", b"{}")
        assert stream.status == 200 and await stream.read() == b'{"ok": true'
        await stream.aclose()
        await pool.aclose()


async def test_a_query_in_base_url_goes_with_every_request() -> None:
    """``base_url: https://host/v1?key=${KEY}``: some providers take their key in the query."""
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await read_request(reader)).split(b"\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server, url = await raw_server(answer)
    async with server:
        pool = ConnectionPool(url + "?key=k-123&region=eu")
        assert (await pool.post("/chat/completions", b"{}")).status == 200
        await pool.aclose()
    assert seen == [b"POST /v1/chat/completions?key=k-123&region=eu HTTP/1.1"]
