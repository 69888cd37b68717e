"""Local stand-ins for paid providers: ``llmroute emulate``.

``EmulatorThread`` runs one on a background thread (for the demo and tests);
``serve`` runs one in the foreground (for the CLI).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass

from aiohttp import web

from .faults import FAULTS, FaultPlan, parse_fault_rate
from .labels import Label, Labels
from .profiles import Profile, get_profile, profiles
from .server import Emulator, EmulatorSettings


@dataclass
class RunningEmulator:
    emulator: Emulator
    runner: web.AppRunner
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """What a provider's ``base_url`` should be set to."""
        return f"http://{self.host}:{self.port}/v1"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start(settings: EmulatorSettings, host: str = "127.0.0.1", port: int = 0) -> RunningEmulator:
    """Start serving on ``host:port`` (0 picks a free port) in the running loop."""
    emulator = Emulator(settings)
    # handler_cancellation: a client that gives up on a hung request frees its handler.
    runner = web.AppRunner(emulator.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    await site.start()
    bound = runner.addresses[0][1]
    return RunningEmulator(emulator, runner, host, bound)


class EmulatorThread:
    """An emulator on its own event loop thread, so synchronous code and other loops can use it."""

    def __init__(self, settings: EmulatorSettings, host: str = "127.0.0.1", port: int = 0) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"emulator-{settings.profile.name}", daemon=True)
        self._thread.start()
        self.running = asyncio.run_coroutine_threadsafe(start(settings, host, port), self._loop).result()

    @property
    def base_url(self) -> str:
        return self.running.base_url

    @property
    def emulator(self) -> Emulator:
        return self.running.emulator

    def set_faults(self, rates: dict[str, float], times: int | None = None) -> None:
        """Switch faults on (``{"503": 1.0}``, optionally for ``times`` requests) or off (``{}``).

        Applied before this returns.
        """

        async def apply() -> None:
            self.emulator.settings.faults.set(rates, times)

        asyncio.run_coroutine_threadsafe(apply(), self._loop).result()

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.running.stop(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> EmulatorThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(settings: EmulatorSettings, host: str, port: int) -> None:
    """Run in the foreground until interrupted."""

    async def main() -> None:
        running = await start(settings, host, port)
        print(f"emulating {settings.profile.name} ({settings.profile.model}) at {running.base_url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await running.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass


__all__ = [
    "FAULTS",
    "Emulator",
    "EmulatorSettings",
    "EmulatorThread",
    "FaultPlan",
    "Label",
    "Labels",
    "Profile",
    "RunningEmulator",
    "get_profile",
    "parse_fault_rate",
    "profiles",
    "serve",
    "start",
]
