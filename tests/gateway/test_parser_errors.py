"""Requests aiohttp's own HTTP parser refuses: answered as OpenAI-shaped JSON with a fitting status, and logged
in one line each, never a traceback."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from .conftest import RunningGateway

CHAT = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"

CASES = {
    "header line too long": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 10_000 + b"\r\n\r\n", 431),
    "request line too long": (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431),
    "too many headers": (b"GET /health HTTP/1.1\r\nHost: x\r\n"
                         + b"".join(b"X-H%d: v\r\n" % i for i in range(200)) + b"\r\n", 431),
    "bad chunk size": (CHAT + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400),
    "Content-Length with Transfer-Encoding": (CHAT + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                                              400),
    "unknown method": (b"FROB /health HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    "invalid header name": (b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: v\r\n\r\n", 400),
}


def address(gateway: RunningGateway) -> tuple[str, int]:
    host, port = gateway.base_url.rsplit("/", 1)[-1].rsplit(":", 1)
    return host, int(port)


def exchange(gateway: RunningGateway, data: bytes) -> bytes:
    """Send ``data`` on a new connection, read until the gateway closes it."""
    with socket.create_connection(address(gateway), timeout=20) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, orjson.loads(body)


def assert_openai_error(body: Any, code: str | None = None) -> None:
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"].startswith("malformed HTTP")
    if code is not None:
        assert body["error"]["code"] == code


@pytest.fixture
def gateway(gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any]) -> RunningGateway:
    return gateway_factory(seed_config)


@pytest.mark.parametrize("case", list(CASES))
def test_parser_errors_are_openai_shaped_and_logged_in_one_line(gateway: RunningGateway, case: str) -> None:
    data, expected = CASES[case]
    status, headers, body = parse(exchange(gateway, data))
    assert status == expected
    assert headers["content-type"].startswith("application/json")
    assert_openai_error(body)
    log = gateway.log()
    assert "Traceback" not in log
    lines = [line for line in log.splitlines() if "malformed request" in line]
    assert len(lines) == 1 and f": {expected} " in lines[0]


def test_limits_are_configurable(gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any]) -> None:
    gateway = gateway_factory({**seed_config, "gateway": {"max_header_bytes": 2048, "max_headers": 10}})
    ok = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-A: " + b"a" * 1500 + b"\r\n\r\n"
    assert exchange(gateway, ok).startswith(b"HTTP/1.1 200")
    status, _, body = parse(exchange(gateway, b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 3000 + b"\r\n\r\n"))
    assert status == 431 and body["error"]["code"] == "header_too_large"
    many = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(12)) + b"\r\n"
    status, _, body = parse(exchange(gateway, many))
    assert status == 431 and body["error"]["code"] == "too_many_headers"


def test_a_bad_chunk_after_the_handler_started_reading(gateway: RunningGateway) -> None:
    """The body goes bad after its handler started: that request still gets a JSON 400, and nothing hangs."""
    head = CHAT + b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
    with socket.create_connection(address(gateway), timeout=20) as s:
        s.sendall(head)
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):  # 100 Continue: the handler is waiting for the body
            interim += s.recv(1)
        assert interim.startswith(b"HTTP/1.1 100")
        s.sendall(b"5\r\n{\"mes\r\nzz\r\nabc\r\n0\r\n\r\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    status, _, body = parse(raw)
    assert status == 400
    assert_openai_error(body, "bad_request")
    assert "chunk" in body["error"]["message"]
    assert "Traceback" not in gateway.log()


def test_a_brotli_body_gets_an_openai_shaped_4xx(gateway: RunningGateway) -> None:
    """``Content-Encoding: br`` is not a parser error (aiohttp does not inflate bodies here); whoever refuses it
    answers in JSON, without a traceback."""
    body = b"\x1b\x03\x00\xf8\xa5\x02"
    raw = exchange(gateway, CHAT + b"Content-Encoding: br\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                   % len(body) + body)
    status, headers, answer = parse(raw)
    assert 400 <= status < 500 and headers["content-type"].startswith("application/json")
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in gateway.log()


@pytest.mark.parametrize(("data", "status", "code"), [
    (b"GET /health HTTP/1.1\r\nHost: x\r\nExpect: \xff\r\nConnection: close\r\n\r\n", 417, "expectation_failed"),
    (b"GET /v1/models HTTP/1.1\r\nHost: x\r\nExpect: foo\r\nConnection: close\r\n\r\n", 417, "expectation_failed"),
    (b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 405, "method_not_allowed"),
    (b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 400, "bad_request"),
    (b"GET /v1/models/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 404, "not_found"),
])
def test_what_aiohttp_would_answer_in_text_is_json(gateway: RunningGateway, data: bytes, status: int,
                                                    code: str) -> None:
    """An Expect other than 100-continue (aiohttp answers in plain text, or fails on a value that is not UTF-8),
    a request for a tunnel or a target that is not a path (no route can take them)."""
    got, headers, body = parse(exchange(gateway, data))
    assert (got, body["error"]["code"]) == (status, code)
    assert headers["content-type"].startswith("application/json")
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in gateway.log() and "unexpected error" not in gateway.log()


def test_expect_100_continue_still_works(gateway: RunningGateway) -> None:
    body = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}'
    with socket.create_connection(address(gateway), timeout=20) as s:
        s.sendall(CHAT + b"Expect: 100-continue\r\nConnection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        assert s.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    assert out.startswith(b"HTTP/1.1 200")
