"""Outbound HTTP through real proxies and TLS: CONNECT tunnels, absolute-form, the environment, CAs, verification.

``TinyProxy`` is a minimal forward proxy written for these tests: ``CONNECT``
tunnels and absolute-form forwarding (one request per connection), Basic
credentials, and a record of what it relayed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import trustme

from llmroute import LLMRouter
from llmroute.emulator import EmulatorThread
from llmroute.providers.http import ConnectionPool
from llmroute.providers.proxy import ProxyError

from ..conftest import free_port, provider
from ..gateway.conftest import gateway_factory  # noqa: F401 (a fixture)
from .test_http import read_request

PROXY_ENV = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy", "ALL_PROXY", "all_proxy")
USER, PASSWORD = "alice", "s3cret:p@ss"  # characters that must be percent-encoded in a URL
CHAT_ANSWER = orjson.dumps({
    "id": "chatcmpl-tls", "object": "chat.completion", "model": "lab-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "over TLS"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
})


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@dataclass
class TinyProxy:
    credentials: tuple[str, str] | None = None
    connects: list[str] = field(default_factory=list)
    """``host:port`` of each CONNECT tunnel opened."""
    forwarded: list[str] = field(default_factory=list)
    """Request line of each absolute-form request relayed."""
    authorizations: list[str | None] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
        self.authorizations.append(headers.get("proxy-authorization"))
        if self.credentials and headers.get("proxy-authorization") != basic(*self.credentials):
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nproxy-authenticate: Basic\r\n"
                         b"content-length: 0\r\nconnection: close\r\n\r\n")
            writer.close()
            return
        method, target, version = request_line.split(" ")
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self.connects.append(target)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            url = urllib.parse.urlsplit(target)
            assert url.scheme == "http" and url.hostname, f"not absolute-form: {request_line}"
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            up_reader, up_writer = await asyncio.open_connection(url.hostname, url.port or 80)
            self.forwarded.append(request_line)
            kept = "".join(f"{line}\r\n" for line in lines if line and not line.lower().startswith("proxy-"))
            up_writer.write(f"{method} {url.path} {version}\r\n{kept}connection: close\r\n\r\n".encode("latin-1") + body)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
async def tiny_proxy() -> AsyncIterator[TinyProxy]:
    proxy = TinyProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        yield proxy


def with_credentials(url: str) -> str:
    return url.replace("http://", f"http://{urllib.parse.quote(USER)}:{urllib.parse.quote(PASSWORD, safe='')}@")


@dataclass
class TLSUpstream:
    url: str
    ca_bundle: str
    requests: int = 0


def issue(tmp_path: Path, name: str) -> tuple[trustme.CA, ssl.SSLContext, str]:
    """A private CA, a server context with a certificate it signed for 127.0.0.1, and the CA's PEM file."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    bundle = tmp_path / f"{name}.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return ca, server_ctx, str(bundle)


async def tls_upstream(tmp_path: Path, name: str = "lab") -> AsyncIterator[TLSUpstream]:
    _, server_ctx, bundle = issue(tmp_path, name)
    upstream = TLSUpstream("", bundle)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await read_request(reader)
                upstream.requests += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(CHAT_ANSWER), CHAT_ANSWER))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    upstream.url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    async with server:
        yield upstream


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[TLSUpstream]:
    async for upstream in tls_upstream(tmp_path):
        yield upstream


@pytest.fixture(autouse=True)
def clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)
    yield


def lab_first(lab_url: str, emus: dict[str, EmulatorThread], **settings: Any) -> dict[str, Any]:
    return {
        "providers": {
            "lab": provider(lab_url, "cerebras", price_per_m={"input": 0.001, "output": 0.001}, **settings),
            "cerebras": provider(emus["cerebras"].base_url, "cerebras"),
        },
        "strategy": "cost_optimized",
    }


# -- proxies -------------------------------------------------------------------------------


async def test_http_upstream_through_a_configured_proxy_with_credentials(
        tiny_proxy: TinyProxy, emus: dict[str, EmulatorThread]) -> None:
    tiny_proxy.credentials = (USER, PASSWORD)
    upstream = emus["runpod"].base_url
    config = {"providers": {"runpod": provider(upstream, "runpod", proxy=with_credentials(tiny_proxy.url))}}
    async with LLMRouter(config=config) as router:
        for _ in range(2):
            result = await router.generate("hi", max_tokens=8)
            assert result.provider == "runpod" and not result.fallback
    target = f"POST {upstream}/chat/completions HTTP/1.1"
    assert tiny_proxy.forwarded == [target, target]  # absolute-form, every request through the proxy
    assert tiny_proxy.authorizations == [basic(USER, PASSWORD)] * 2


async def test_https_upstream_through_a_connect_tunnel_from_the_environment(
        tiny_proxy: TinyProxy, lab: TLSUpstream, emus: dict[str, EmulatorThread],
        monkeypatch: pytest.MonkeyPatch) -> None:
    tiny_proxy.credentials = (USER, PASSWORD)
    monkeypatch.setenv("HTTPS_PROXY", with_credentials(tiny_proxy.url))
    monkeypatch.setenv("NO_PROXY", "example.invalid")
    async with LLMRouter(config=lab_first(lab.url, emus, ca_bundle=lab.ca_bundle)) as router:
        for _ in range(3):
            result = await router.generate("hi", max_tokens=8)
            assert result.provider == "lab" and result.text == "over TLS"
    host_port = urllib.parse.urlsplit(lab.url).netloc
    assert tiny_proxy.connects == [host_port]  # one tunnel, kept alive for the three requests
    assert lab.requests == 3
    assert tiny_proxy.authorizations == [basic(USER, PASSWORD)]


@pytest.mark.parametrize("case", ["NO_PROXY matches", "proxy: null", "proxy: ''"])
async def test_direct_when_no_proxy_matches_or_the_config_says_none(
        case: str, tiny_proxy: TinyProxy, emus: dict[str, EmulatorThread], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", tiny_proxy.url)
    settings: dict[str, Any] = {}
    if case == "NO_PROXY matches":
        monkeypatch.setenv("no_proxy", "example.invalid,127.0.0.1")
    else:
        settings["proxy"] = None if case == "proxy: null" else ""
    config = {"providers": {"runpod": provider(emus["runpod"].base_url, "runpod", **settings)}}
    async with LLMRouter(config=config) as router:
        assert (await router.generate("hi", max_tokens=8)).provider == "runpod"
    assert tiny_proxy.forwarded == [] and tiny_proxy.authorizations == []


async def test_environment_proxy_is_used_when_the_config_does_not_say(
        tiny_proxy: TinyProxy, emus: dict[str, EmulatorThread], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", tiny_proxy.url)
    config = {"providers": {"runpod": provider(emus["runpod"].base_url, "runpod")}}
    async with LLMRouter(config=config) as router:
        assert (await router.generate("hi", max_tokens=8)).provider == "runpod"
    assert len(tiny_proxy.forwarded) == 1


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_refused_proxy_credentials_fall_back_and_stay_secret(
        scheme: str, tiny_proxy: TinyProxy, lab: TLSUpstream, emus: dict[str, EmulatorThread],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    tiny_proxy.credentials = (USER, "the right one")
    url = lab.url if scheme == "https" else emus["runpod"].base_url
    config = lab_first(url, emus, ca_bundle=lab.ca_bundle, proxy=with_credentials(tiny_proxy.url))
    async with LLMRouter(config=config) as router:
        result = await router.generate("hi", max_tokens=8)
    assert result.provider == "cerebras"
    first = result.attempts[0]
    assert (first.provider, first.kind) == ("lab", "connect")
    assert "407 Proxy Authentication Required" in (first.error or "")
    for text in (caplog.text, repr(result.attempts), repr(router.config)):
        assert PASSWORD not in text and urllib.parse.quote(PASSWORD, safe="") not in text
        assert basic(USER, PASSWORD).split()[1] not in text


def test_unsupported_proxy_urls_are_config_errors() -> None:
    from llmroute.config import load_config
    from llmroute.errors import ConfigError

    for url, problem in (("socks5://127.0.0.1:1080", "not supported"), ("http://host:port", "invalid port")):
        with pytest.raises(ConfigError, match=problem):
            load_config({"providers": {"p": provider("http://127.0.0.1:1/v1", "runpod", proxy=url)}})


async def test_unsupported_proxy_from_the_environment_is_a_provider_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://127.0.0.1:1080")
    pool = ConnectionPool("https://127.0.0.1:1/v1", trust_env=True)
    with pytest.raises(ProxyError, match="only http:// proxies"):
        await pool.post("/x", b"{}")


# -- TLS -----------------------------------------------------------------------------------


async def test_ca_bundle_adds_to_the_system_cas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    public_servers = tls_upstream(tmp_path, "public")
    private_servers = tls_upstream(tmp_path, "private")
    public, private = await anext(public_servers), await anext(private_servers)
    monkeypatch.setenv("SSL_CERT_FILE", public.ca_bundle)  # OpenSSL's system store, for this test
    try:
        for upstream in (public, private):  # trusted by the system, and by the bundle
            pool = ConnectionPool(upstream.url, ca_bundle=private.ca_bundle)
            assert (await pool.post("/chat/completions", b"{}")).body == CHAT_ANSWER
            await pool.aclose()
    finally:
        await private_servers.aclose()
        await public_servers.aclose()


async def test_tls_verify_false_accepts_an_unknown_certificate_and_says_so_loudly(
        lab: TLSUpstream, emus: dict[str, EmulatorThread], caplog: pytest.LogCaptureFixture) -> None:
    async with LLMRouter(config=lab_first(lab.url, emus, tls_verify=False)) as router:
        result = await router.generate("hi", max_tokens=8)
    assert result.provider == "lab"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("TLS VERIFICATION IS OFF for provider lab" in message for message in warnings)


async def test_tls_failure_is_named_in_the_attempt(lab: TLSUpstream, emus: dict[str, EmulatorThread]) -> None:
    async with LLMRouter(config=lab_first(lab.url, emus)) as router:  # no ca_bundle: the lab's CA is unknown
        result = await router.generate("hi", max_tokens=8)
    assert result.provider == "cerebras"
    first = result.attempts[0]
    assert (first.provider, first.kind) == ("lab", "tls")
    assert (first.error or "").startswith("TLS error: certificate verify failed: unable to get local issuer")


# -- through a real gateway (uvloop, environment inherited) ---------------------------------


async def test_gateway_reaches_https_upstream_through_environment_proxy(
        tiny_proxy: TinyProxy, lab: TLSUpstream, emus: dict[str, EmulatorThread], gateway_factory: Any) -> None:
    tiny_proxy.credentials = (USER, PASSWORD)
    gateway = gateway_factory(lab_first(lab.url, emus, ca_bundle=lab.ca_bundle),
                              env={"HTTPS_PROXY": with_credentials(tiny_proxy.url)})
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.base_url}/v1/chat/completions", json={
                "model": "cost_optimized", "messages": [{"role": "user", "content": "hi"}]}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert resp.headers["x-llmroute-provider"] == "lab"
    assert body["choices"][0]["message"]["content"] == "over TLS"
    assert tiny_proxy.connects == [urllib.parse.urlsplit(lab.url).netloc]
    assert PASSWORD not in gateway.log() and urllib.parse.quote(PASSWORD, safe="") not in gateway.log()


async def test_an_unreachable_proxy_is_named(emus: dict[str, EmulatorThread]) -> None:
    proxy_port = free_port()
    config = lab_first(emus["runpod"].base_url, emus, proxy=with_credentials(f"http://127.0.0.1:{proxy_port}"))
    async with LLMRouter(config=config) as router:
        result = await router.generate("hi", max_tokens=8)
    first = result.attempts[0]
    assert result.provider == "cerebras" and (first.provider, first.kind) == ("lab", "connect")
    assert (first.error or "").startswith(f"cannot connect: proxy 127.0.0.1:{proxy_port}: ")
    assert USER not in (first.error or "")
