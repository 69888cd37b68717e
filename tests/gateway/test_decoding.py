"""Compressed request bodies: inflated by the gateway a piece at a time, bounded by the body limit."""

from __future__ import annotations

import asyncio
import gzip
import random
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from .conftest import RunningGateway
from .test_errors import assert_openai_error

CHAT = "/v1/chat/completions"
BODY = orjson.dumps({"model": "cost_optimized", "messages": [{"role": "user", "content": "hi " * 50}]})


def deflate(data: bytes, wbits: int) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


def post(gw: RunningGateway, content: bytes, encoding: str) -> httpx.Response:
    return httpx.post(gw.base_url + CHAT, content=content,
                      headers={"content-type": "application/json", "content-encoding": encoding})


@pytest.mark.parametrize(("encoding", "content"), [
    ("gzip", gzip.compress(BODY)),
    ("x-gzip", gzip.compress(BODY)),
    ("GZIP", gzip.compress(BODY)),
    ("gzip", gzip.compress(BODY[:40]) + gzip.compress(BODY[40:])),  # two members, as the format allows
    ("deflate", zlib.compress(BODY)),  # zlib-wrapped, as the RFC says
    ("deflate", deflate(BODY, -zlib.MAX_WBITS)),  # raw, as some clients send it
    ("identity", BODY),
    ("gzip, identity", gzip.compress(BODY)),
])
def test_compressed_bodies_are_answered(gateway: RunningGateway, encoding: str, content: bytes) -> None:
    resp = post(gateway, content, encoding)
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(("encoding", "content", "fragment"), [
    ("gzip", BODY, "not valid gzip"),
    ("gzip", gzip.compress(BODY)[:-12], "truncated gzip"),
    ("gzip", gzip.compress(BODY) + b"trailing junk", "not valid gzip"),
    ("deflate", b"\x78\x9c" + BODY, "not valid deflate"),
    ("deflate", zlib.compress(BODY) + b"more", "after the end of its deflate stream"),
    ("gzip", b"", "truncated gzip"),
])
def test_bodies_that_are_not_what_they_claim_get_400(gateway: RunningGateway, encoding: str, content: bytes,
                                                     fragment: str) -> None:
    error = assert_openai_error(post(gateway, content, encoding), 400, fragment)
    assert error["code"] == "invalid_content_encoding" and error["param"] == "Content-Encoding"


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "rot13", "gzip, br", "deflate, gzip"])
def test_unsupported_encodings_get_415(gateway: RunningGateway, encoding: str) -> None:
    error = assert_openai_error(post(gateway, BODY, encoding), 415, "not supported")
    assert error["code"] == "unsupported_content_encoding"
    assert "gzip, deflate, identity" in error["message"]


def bomb(expanded_mib: int) -> bytes:
    """About 1 KiB of gzip per MiB of zeros, one member per MiB: ``expanded_mib`` MiB once inflated."""
    member = gzip.compress(bytes(1 << 20))
    return member * expanded_mib


def test_gzip_bomb_gets_413_and_the_gateway_keeps_answering(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
) -> None:
    """1 MB of gzip that would inflate to 1 GB: refused once past the limit, others answered meanwhile."""
    seed_config["gateway"] = {"max_body_bytes": 2 << 20}  # the compressed bomb fits; its inflated size does not
    gw = gateway_factory(seed_config)
    payload = bomb(1024)
    assert len(payload) < 2 << 20

    async def run() -> tuple[httpx.Response, list[int]]:
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as client:
            sent = asyncio.create_task(client.post(CHAT, content=payload, headers={"content-encoding": "gzip"}))
            health = []
            while not sent.done():
                health.append((await client.get("/health")).status_code)
            return await sent, health

    resp, health = asyncio.run(run())
    assert_openai_error(resp, 413, f"over the limit of {2 << 20} bytes")
    assert health and set(health) == {200}
    # Just under the limit once inflated is still answered; just over is refused.
    fits = gzip.compress(BODY + b" " * ((2 << 20) - len(BODY)))
    assert post(gw, fits, "gzip").status_code == 200
    assert_openai_error(post(gw, gzip.compress(BODY + b" " * ((2 << 20) - len(BODY) + 1)), "gzip"), 413, "limit")


def test_compressed_size_is_bounded_too(gateway_factory: Callable[..., RunningGateway],
                                        seed_config: dict[str, Any]) -> None:
    seed_config["gateway"] = {"max_body_bytes": 4096}
    gw = gateway_factory(seed_config)
    incompressible = gzip.compress(orjson.dumps({"messages": [{"role": "user", "content": "x"}],
                                                 "metadata": {"noise": random.Random(0).randbytes(6000).hex()}}))
    assert len(incompressible) > 4096
    assert_openai_error(post(gw, incompressible, "gzip"), 413, "limit")
    assert post(gw, gzip.compress(BODY), "gzip").status_code == 200


@pytest.mark.parametrize(("encoding", "content"), [
    ("gzip", gzip.compress(BODY)), ("deflate", zlib.compress(BODY)), ("deflate", deflate(BODY, -zlib.MAX_WBITS)),
])
def test_compressed_bodies_in_small_chunks(gateway: RunningGateway, encoding: str, content: bytes) -> None:
    """A chunked upload arrives in pieces of any size, down to one byte: decoding follows them."""
    def pieces():  # type: ignore[no-untyped-def]
        yield content[:1]
        yield content[1:2]
        for i in range(2, len(content), 5):
            yield content[i:i + 5]

    resp = httpx.post(gateway.base_url + CHAT, content=pieces(),
                      headers={"content-type": "application/json", "content-encoding": encoding})
    assert resp.status_code == 200, resp.text
