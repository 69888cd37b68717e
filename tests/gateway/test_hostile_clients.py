"""Slow and hostile clients: headers or a body that never finish, idle connections, and more connections than
the gateway should hold. Each is closed on a deadline, with a 408/503 JSON answer where one can be sent, while
ordinary requests keep being served."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from .conftest import RunningGateway, stop_gateway
from .test_parser_errors import address, parse

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def read_to_eof(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


@pytest.fixture
def sockets() -> Iterator[Callable[[RunningGateway], socket.socket]]:
    with ExitStack() as stack:
        def connect(gateway: RunningGateway) -> socket.socket:
            return stack.enter_context(socket.create_connection(address(gateway), timeout=20))

        yield connect


def served(gateway: RunningGateway) -> None:
    with httpx.Client(base_url=gateway.base_url, timeout=20) as client:
        r = client.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and r.json()["choices"]


def test_slowloris_headers_are_cut_off_while_others_are_served(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
    sockets: Callable[[RunningGateway], socket.socket],
) -> None:
    gateway = gateway_factory({**seed_config, "gateway": {"header_timeout_s": 1}})
    slow = [sockets(gateway) for _ in range(20)]
    for s in slow:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Trickle: a")  # never finished
    served(gateway)
    for s in slow:
        s.sendall(b"b")  # still trickling: it does not reset the deadline
    for s in slow:
        status, headers, body = parse(read_to_eof(s))  # the gateway answers, then closes
        assert status == 408 and headers["connection"] == "close"
        assert body["error"]["code"] == "header_timeout" and set(body["error"]) == {"message", "type", "param", "code"}
    served(gateway)
    log = gateway.log()
    assert "whose headers took longer than gateway.header_timeout_s (1 s)" in log and "Traceback" not in log
    assert log.count("headers took longer") == 1  # one line per interval, not one per connection
    # The rest of the burst is reported at the end of the interval, whole: not left at its first connection.
    deadline = time.monotonic() + 30
    while "closed 20 connections so far" not in gateway.log() and time.monotonic() < deadline:
        time.sleep(0.1)  # waiting for the gateway's own log line, bounded
    assert "closed 20 connections so far whose headers took longer" in gateway.log()


def test_a_body_that_stops_half_way_is_cut_off(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
    sockets: Callable[[RunningGateway], socket.socket],
) -> None:
    gateway = gateway_factory({**seed_config, "gateway": {"body_timeout_s": 1}})
    body = orjson.dumps(CHAT)
    s = sockets(gateway)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
    status, _, answer = parse(read_to_eof(s))
    assert status == 408 and answer["error"]["code"] == "body_timeout"
    served(gateway)
    assert "Traceback" not in gateway.log()


def test_idle_keep_alive_connections_are_closed(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
    sockets: Callable[[RunningGateway], socket.socket],
) -> None:
    gateway = gateway_factory({**seed_config, "gateway": {"keepalive_timeout_s": 1}})
    never_spoke = sockets(gateway)
    after_one = sockets(gateway)
    after_one.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_to_eof(never_spoke) == b""
    answer = read_to_eof(after_one)  # its answer, then the close once it sat idle
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status": "ok"}')


def test_connections_past_the_cap_get_a_503_and_existing_ones_keep_working(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
    sockets: Callable[[RunningGateway], socket.socket],
) -> None:
    gateway = gateway_factory({**seed_config, "gateway": {"max_connections": 5}})
    held = [sockets(gateway) for _ in range(5)]
    for _ in range(3):  # the excess is refused at once, with a JSON 503
        status, headers, body = parse(read_to_eof(sockets(gateway)))
        assert status == 503 and body["error"]["code"] == "too_many_connections"
    # A connection the gateway holds still gets answers.
    held[0].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert held[0].recv(65536).startswith(b"HTTP/1.1 200")
    with pytest.raises(httpx.HTTPError):  # so does a normal client: it is refused while the cap is reached
        with httpx.Client(base_url=gateway.base_url, timeout=20) as client:
            client.post("/v1/chat/completions", json=CHAT).raise_for_status()
    for s in held[1:]:  # close some: the gateway sees each go before the client sees its end
        s.shutdown(socket.SHUT_WR)
        assert read_to_eof(s) == b""
    served(gateway)
    log = gateway.log()
    lines = [line for line in log.splitlines() if "gateway.max_connections reached" in line]
    assert len(lines) == 1 and "(limit 5)" in lines[0]


def test_with_a_low_open_file_limit_idle_floods_are_refused_not_silent(
    tmp_path: Path, seed_config: dict[str, Any], sockets: Callable[[RunningGateway], socket.socket],
) -> None:
    """``ulimit -n 256``: the default cap (half of it) leaves descriptors for providers and the ledger, so an
    idle flood gets 503s and a log line, and the gateway serves again as soon as some of it goes."""
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(seed_config))
    log_path = tmp_path / "gateway.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            ["sh", "-c", 'ulimit -n 256 && exec "$0" -m llmroute.cli serve --config "$1" --port 0 --log-level info',
             sys.executable, str(config)],
            stdout=subprocess.PIPE, stderr=log, text=True,
        )
    try:
        line = process.stdout.readline() if process.stdout else ""
        match = re.search(r"listening on (http://\S+) ", line)
        assert match, log_path.read_text()
        gateway = RunningGateway(match.group(1), process, log_path)
        held = [sockets(gateway) for _ in range(128)]
        refused = 0
        for _ in range(172):
            status, _, body = parse(read_to_eof(sockets(gateway)))
            assert status == 503 and body["error"]["code"] == "too_many_connections"
            refused += 1
        for s in held[:10]:
            s.shutdown(socket.SHUT_WR)
            assert read_to_eof(s) == b""
        served(gateway)  # the providers still get connections: descriptors were kept for them
        assert refused == 172
        assert "gateway.max_connections reached" in log_path.read_text()
    finally:
        stop_gateway(RunningGateway("", process, log_path))
