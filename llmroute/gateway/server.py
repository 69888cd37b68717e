"""``llmroute serve``: bind, check it is safe to, and run one or more worker processes."""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from ..config import RouterConfig, load_config
from ..errors import ConfigError, LLMRouteError
from ..ledger import ledger_location
from ..router import LLMRouter
from ..spend import seed_from_ledger
from .app import Gateway
from .auth import KeyStore, LedgerKeySource, is_loopback
from .hotpath import hot_connections
from .metrics import Metrics, multiprocess_registry
from .openfiles import prepare_open_files
from .protocol import ConnectionLimits, GatewayRunner, default_max_connections

log = logging.getLogger("llmroute.gateway")


def check_binding(host: str, keys: KeyStore, insecure: bool) -> None:
    """Refuse to serve without keys on an address other machines can reach."""
    if not keys and not is_loopback(host) and not insecure:
        raise ConfigError(
            f"refusing to listen on {host} without API keys: anyone who can reach it could spend your provider "
            "credits. Set gateway.api_keys in the config or LLMROUTE_API_KEYS, make one with `llmroute keys create`, "
            "bind to 127.0.0.1, or pass --insecure",
        )


def binding_keys(config: RouterConfig) -> KeyStore:
    """The keys that will guard the gateway: the config's, else the ledger's (made with ``llmroute keys``)."""
    keys = KeyStore(config.gateway.keys())
    location = ledger_location(config)
    if keys or location is None:
        return keys
    source = LedgerKeySource(keys, location, refresh_s=config.gateway.keys_refresh_s,
                             busy_timeout_s=config.ledger.busy_timeout_s)
    try:
        source.refresh()
    except LLMRouteError:
        pass  # no ledger yet, or one that cannot be read: no keys; the worker's own start-up read reports it
    finally:
        source.close()
    return keys


GC_THRESHOLDS = (50_000, 20, 100)
"""The cyclic collector's thresholds while serving (Python's defaults are 700, 10, 10)."""


def tune_collector() -> None:
    """Make the cyclic garbage collector rare while serving: freeze what start-up built and raise its thresholds.

    Every open stream holds container objects (its task, suspended generators and frames, futures, aiohttp's
    request and response). With Python's defaults, at 1,000 open streams a full collection came every few
    seconds and scanned all of them, stalling the event loop 30-80 ms each time: the periodic stall in the
    inter-event p99. Reference counting frees what the stream path makes (it makes no reference cycles per
    event, only a few dozen objects per request), so the collector has little to find, and collecting after
    50,000 net allocations instead of 700 keeps memory bounded while it scans far less often.
    Everything built before serving lives as long as the process: frozen, it is never rescanned.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _run(main: Callable[[], Any]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


async def run_gateway(config: RouterConfig, host: str, port: int, *, reuse_port: bool = False,
                      ready: Callable[[int], None] | None = None, workers: int = 1) -> None:
    """Serve until SIGTERM or SIGINT, then let requests in flight finish (up to ``gateway.shutdown_grace_s``),
    commit the ledger and return. ``workers``: how many processes serve the port (each gets that share of
    the daily shadow budget)."""
    router = LLMRouter(config=config)
    shared = config.state.backend != "memory"
    if router.shadow is not None and not shared:  # a shared state keeps one total for every process
        router.shadow.split_budget(workers)
    metrics = Metrics(collect_registry=multiprocess_registry())
    if shared:
        metrics.watch_state_backend(router.state)
    gateway = Gateway(router, metrics=metrics)
    await router.state.start()  # take what the other replicas know before serving (bounded; never fails)
    if router.spend is not None and router.ledger is not None and config.spend.seed_from_ledger:
        await seed_from_ledger(router.spend, router.ledger.store)  # after the state: a shared total wins
    settings = config.gateway
    limits = ConnectionLimits(header_timeout_s=settings.header_timeout_s, body_timeout_s=settings.body_timeout_s,
                              max_connections=settings.max_connections or default_max_connections(),
                              write_timeout_s=settings.write_timeout_s, keepalive_timeout_s=settings.keepalive_timeout_s,
                              max_header_bytes=settings.max_header_bytes, max_headers=settings.max_headers,
                              max_body_bytes=settings.max_body_bytes)
    # Request bodies are inflated by the app, a piece at a time up to the body limit, not by aiohttp in one go.
    runner = GatewayRunner(
        gateway.app(), limits, shutdown_timeout=settings.shutdown_grace_s, handler_cancellation=True,
        connection_factory=hot_connections(gateway.hot_routes()),
        access_log=None, auto_decompress=False, keepalive_timeout=settings.keepalive_timeout_s,
        max_line_size=settings.max_header_bytes, max_field_size=settings.max_header_bytes,
        max_headers=settings.max_headers,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_port=reuse_port or None)
    await site.start()
    bound = runner.addresses[0][1]
    tune_collector()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before announcing: a SIGTERM right after must shut down cleanly
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready(bound)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _announce(host: str, workers: int) -> Callable[[int], None]:
    def ready(port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"llmroute gateway listening on http://{shown}:{port} ({workers} worker{'s' if workers > 1 else ''})",
              flush=True)

    return ready


def _worker(config_path: str | None, host: str, port: int, ready: Any, workers: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    try:
        config = load_config(config_path)
        _run(lambda: run_gateway(config, host, port, reuse_port=True, ready=ready.put, workers=workers))
    except LLMRouteError as exc:  # a ledger that cannot be written, say: one line, as the parent would print it
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def serve(config_path: str | os.PathLike[str] | None, host: str, port: int, workers: int = 1,
          insecure: bool = False) -> None:
    """Validate, check the binding, then serve in this process or in ``workers`` processes."""
    config = load_config(config_path)
    check_binding(host, binding_keys(config), insecure)
    prepare_open_files(config)
    if workers <= 1:
        _run(lambda: run_gateway(config, host, port, ready=_announce(host, 1)))
        return
    if port == 0:
        raise ConfigError("--workers above 1 needs an explicit --port: each worker binds the same one")
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("--workers above 1 needs SO_REUSEPORT, which this platform lacks")
    # Every worker counts into files here; /metrics on any worker adds them all up.
    metrics_dir = tempfile.mkdtemp(prefix="llmroute-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    context = multiprocessing.get_context("spawn")
    path = str(config.source) if config.source else None
    ready = context.Queue()
    processes = [context.Process(target=_worker, args=(path, host, port, ready, workers), daemon=False) for _ in range(workers)]
    for process in processes:
        process.start()
    for _ in processes:  # announce only once every worker is listening
        while True:
            try:
                ready.get(timeout=0.5)
                break
            except queue.Empty:
                if not all(p.is_alive() for p in processes):
                    for p in processes:
                        p.terminate()
                    raise ConfigError("a gateway worker exited while starting; see its error above") from None
    _announce(host, workers)(port)

    def forward(signum: int, frame: Any) -> None:
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for process in processes:
        process.join()
        code = code or (process.exitcode or 0)
    for file in Path(metrics_dir).glob("*.db"):
        file.unlink()
    os.rmdir(metrics_dir)
    if code:
        sys.exit(code)
