"""The open-file limit a gateway serving thousands of streams needs, checked at start-up.

Every client connection and every connection to a provider is a file descriptor. The default soft limit is
often 1,024 while the hard one is far higher, so the gateway raises the soft limit to the hard one (as Go's
runtime and nginx's ``worker_rlimit_nofile`` do; it needs no privilege) and warns when the result is still below
what it may open: ``gateway.max_connections`` clients plus every provider's ``max_connections`` (idle keep-alive
connections stay open in their pool) plus a few for the ledger, logs and listening sockets.

Past the limit nothing crashes: a new client connection waits in the listen backlog (the event loop retries
``accept`` a second later), and a call to a provider that cannot get a descriptor is ``pool_exhausted`` (local:
the next provider is tried, no breaker counts it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .protocol import default_max_connections

if TYPE_CHECKING:
    from ..config import RouterConfig

log = logging.getLogger("llmroute.gateway")

RESERVED_FILES = 64
"""Descriptors besides connections: the ledger's database, log files, listening sockets, a Redis client."""
_NO_LIMIT_TARGET = 1 << 20  # what to ask for when the hard limit is "unlimited" (Linux caps it at nr_open)


def raise_open_file_limit() -> tuple[int, int] | None:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one; the (soft, hard) limits after it, None where there is
    no such limit (Windows). A refusal (a platform cap below the hard limit) leaves the soft limit as it was."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _NO_LIMIT_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def open_files_needed(gateway_connections: int, pool_connections: Iterable[int]) -> int:
    """Descriptors a worker may hold at once: its clients, every provider's pool, and ``RESERVED_FILES``."""
    return gateway_connections + sum(pool_connections) + RESERVED_FILES


def check_open_files(soft_limit: int, gateway_connections: int, pools: dict[str, int]) -> str | None:
    """A warning (also logged) when ``soft_limit`` is below what the gateway may open; None when it fits."""
    needed = open_files_needed(gateway_connections, pools.values())
    if soft_limit >= needed:
        return None
    message = (f"open-file limit {soft_limit} is below the {needed} this gateway may open per worker "
               f"({gateway_connections} client connections, {sum(pools.values())} to providers "
               f"({', '.join(f'{n} {c}' for n, c in pools.items())}), {RESERVED_FILES} other). Past it, new clients "
               "wait in the listen backlog and provider calls fail over as pool_exhausted. Raise the limit "
               "(ulimit -n, LimitNOFILE=, docker --ulimit nofile=), or lower gateway.max_connections or "
               "providers.<name>.max_connections")
    log.warning(message)
    return message


def prepare_open_files(config: RouterConfig) -> str | None:
    """At start-up, before the workers start (they inherit the limit): raise it, then warn if it is still short."""
    limits = raise_open_file_limit()
    if limits is None:
        return None
    clients = config.gateway.max_connections or default_max_connections()  # after the raise: it reads the limit
    return check_open_files(limits[0], clients, {name: p.max_connections for name, p in config.providers.items()})
