"""Outbound HTTP proxies: which one an upstream goes through, and the ``CONNECT`` tunnel for HTTPS.

Precedence, per provider: a ``proxy`` URL in its config; else, when the config
leaves ``proxy`` unset, ``HTTPS_PROXY`` or ``HTTP_PROXY`` (by the upstream's
scheme; lower-case names win) unless ``NO_PROXY`` matches the upstream, with
the rules of ``urllib.request``. Only ``http://`` proxies are supported: an
HTTP upstream is sent the absolute-form request, an HTTPS one goes through a
``CONNECT`` tunnel and TLS runs end to end inside it. Credentials in the proxy
URL become ``Proxy-Authorization: Basic`` and are kept out of every message.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

_MAX_CONNECT_HEAD_BYTES = 16 * 1024

P = TypeVar("P", bound=asyncio.Protocol)


class ProxyError(ConnectionError):
    """The proxy could not be used, or refused the tunnel; the message never holds its credentials."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)  # as strerror: what "cannot connect: ..." shows

    def __str__(self) -> str:
        return str(self.strerror)


@dataclass(frozen=True, slots=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = field(default=None, repr=False)
    """``Basic ...`` from the URL's user and password, if any."""

    @classmethod
    def from_url(cls, url: str) -> Proxy:
        """``http://[user:password@]host[:port]`` (a bare ``host:port`` is taken as http)."""
        parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme != "http":
            raise ProxyError(f"proxy scheme {parts.scheme!r} is not supported (only http:// proxies)")
        try:
            port = parts.port or 80
        except ValueError:
            raise ProxyError("proxy URL has an invalid port") from None
        if not parts.hostname:
            raise ProxyError("proxy URL has no host")
        authorization = None
        if parts.username is not None or parts.password is not None:
            user = urllib.parse.unquote(parts.username or "")
            password = urllib.parse.unquote(parts.password or "")
            authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return cls(parts.hostname, port, authorization)

    @property
    def authority(self) -> str:
        return authority(self.host, self.port)


def authority(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def proxy_from_environment(scheme: str, netloc: str) -> str | None:
    """The proxy URL the environment gives for an upstream, or None (none set, or ``NO_PROXY`` matches)."""
    import urllib.request  # once per pool: not worth its 3 ms on every import of llmroute

    proxies = urllib.request.getproxies_environment()
    url = proxies.get(scheme)
    if not url or urllib.request.proxy_bypass_environment(netloc, proxies):
        return None
    return url


async def open_tunnel(loop: asyncio.AbstractEventLoop, factory: Callable[[], P], proxy: Proxy,
                      host: str, port: int, ssl_context: ssl.SSLContext) -> P:
    """A TLS connection to ``host:port`` through ``CONNECT``; returns the protocol ``factory`` made, connected."""
    target = authority(host, port)
    head = f"CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n"
    if proxy.authorization:
        head += f"proxy-authorization: {proxy.authorization}\r\n"
    transport, handshake = await loop.create_connection(_ConnectHandshake, proxy.host, proxy.port)
    try:
        transport.write((head + "\r\n").encode("latin-1"))
        await handshake.done
        tls_transport = await loop.start_tls(transport, handshake, ssl_context, server_hostname=host)
    except BaseException:
        transport.abort()
        raise
    assert tls_transport is not None
    protocol = factory()
    tls_transport.set_protocol(protocol)
    protocol.connection_made(tls_transport)
    return protocol


class _ConnectHandshake(asyncio.Protocol):
    """Reads the proxy's answer to ``CONNECT``: only its status line matters."""

    def __init__(self) -> None:
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._head = b""

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _MAX_CONNECT_HEAD_BYTES:
                self.done.set_exception(ProxyError("proxy answered CONNECT with an oversized head"))
            return
        status_line = self._head.split(b"\r\n", 1)[0].decode("latin-1")[:100]
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            self.done.set_exception(ProxyError("proxy answered CONNECT with something that is not HTTP"))
        elif not 200 <= int(parts[1]) < 300:
            self.done.set_exception(ProxyError(f"proxy refused CONNECT: {status_line[len(parts[0]) + 1:]}"))
        elif end + 4 != len(self._head):
            self.done.set_exception(ProxyError("proxy sent data after its CONNECT answer"))
        else:
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(ProxyError("proxy closed the connection during CONNECT"))
