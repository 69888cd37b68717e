"""Gateway API keys, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class KeyStore:
    """Holds SHA-256 digests only, and checks every key on every call.

    Comparing fixed-length digests with ``hmac.compare_digest`` and never
    stopping early means the time taken says nothing about which key, or how
    much of one, matched.
    """

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        self._digests = [(key_id, hashlib.sha256(key.encode()).digest()) for key_id, key in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def check(self, authorization: str | None) -> str | None:
        """The key id for an ``Authorization: Bearer`` header value, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        # aiohttp keeps a header's invalid UTF-8 as surrogates: hash the bytes as sent rather than fail.
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        found = None
        for key_id, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                found = key_id
        return found
