"""A completion's answer is framed by the gateway itself (one head, one write): keep-alive, ``Connection:
close``, HTTP/1.0 and pipelined requests must come out as an HTTP client expects, byte for byte."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import orjson

from .conftest import RunningGateway
from .test_parser_errors import address

BODY = orjson.dumps({"messages": [{"role": "user", "content": "hi"}]})


def request(version: str = "1.1", *extra: str, body: bytes = BODY) -> bytes:
    lines = [f"POST /v1/chat/completions HTTP/{version}", "Host: x", "Content-Type: application/json",
             f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answer(s: socket.socket, buffer: bytearray) -> tuple[str, dict[str, str], bytes]:
    """One answer off the connection (status line, headers, a Content-Length body); the rest stays in ``buffer``."""
    while b"\r\n\r\n" not in buffer:
        chunk = s.recv(65536)
        assert chunk, f"connection closed mid-head: {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        assert name.lower() not in headers, f"header {name} sent twice"
        headers[name.lower()] = value.strip()
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = s.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    buffer[:] = rest[length:]
    return status, headers, rest[:length]


def closed(s: socket.socket, buffer: bytearray) -> bool:
    return not buffer and s.recv(1) == b""


def test_keep_alive_answers_are_framed_and_the_connection_stays_open(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
) -> None:
    gateway = gateway_factory(seed_config)
    with socket.create_connection(address(gateway), timeout=20) as s:
        buffer = bytearray()
        s.sendall(request() + request("1.1", "x-request-id: pipelined-2"))  # two requests in one write
        for expected_id in (None, "pipelined-2"):
            status, headers, body = read_answer(s, buffer)
            assert status == "HTTP/1.1 200 OK"
            assert headers["content-type"] == "application/json"
            assert "connection" not in headers  # HTTP/1.1 keeps the connection by default
            assert headers["date"].endswith(" GMT")
            assert headers["x-llmroute-attempts"].endswith(":200")
            assert float(headers["x-llmroute-cost-usd"]) > 0
            if expected_id is not None:
                assert headers["x-request-id"] == expected_id
            assert orjson.loads(body)["choices"][0]["message"]["content"]
        s.sendall(request())
        assert read_answer(s, buffer)[0] == "HTTP/1.1 200 OK"  # still open after both


def test_connection_close_and_http_1_0_keep_alive_are_honoured(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
) -> None:
    gateway = gateway_factory(seed_config)
    with socket.create_connection(address(gateway), timeout=20) as closing, \
            socket.create_connection(address(gateway), timeout=20) as old:
        buffer = bytearray()
        closing.sendall(request("1.1", "Connection: close"))
        status, headers, body = read_answer(closing, buffer)
        assert status == "HTTP/1.1 200 OK" and headers["connection"] == "close"
        assert orjson.loads(body)["usage"]["total_tokens"] > 0
        assert closed(closing, buffer)

        old.sendall(request("1.0", "Connection: keep-alive"))
        status, headers, _ = read_answer(old, buffer)
        assert status == "HTTP/1.0 200 OK" and headers["connection"] == "keep-alive"
        old.sendall(request("1.0"))  # no keep-alive asked: answered, then closed
        status, headers, body = read_answer(old, buffer)
        assert status == "HTTP/1.0 200 OK" and "connection" not in headers
        assert orjson.loads(body)["choices"]
        assert closed(old, buffer)


def test_a_warning_header_from_a_hostile_model_name_cannot_inject_a_header(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
) -> None:
    gateway = gateway_factory(seed_config)
    body = orjson.dumps({"model": "balancd\r\n", "messages": [{"role": "user", "content": "hi"}]})
    with socket.create_connection(address(gateway), timeout=20) as s:
        buffer = bytearray()
        s.sendall(request(body=body))
        status, headers, _ = read_answer(s, buffer)
        assert status == "HTTP/1.1 200 OK"
        assert set(headers) <= {"content-type", "content-length", "date"} | {h for h in headers if h.startswith("x-")}
        assert "\\r\\n" in headers["x-llmroute-warning"]  # quoted, escaped
