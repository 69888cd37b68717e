"""The gateway's dashboard views computed in a process of their own.

A view reads and sums the ledger rows written since its last refresh: at 5,000 requests a second, tens of
thousands of rows. In a thread of the gateway that work holds the interpreter lock, and the event loop serving
requests waits for it: measured at saturation, the gateway served about 0.91x its requests while a dashboard
polled. In a child process the event loop never waits on it; what crosses over is the live state captured on
the loop (a small dict) and the view's answer.

One child per gateway process, at a lower CPU priority, started the first time a view is asked for (``spawn``: the gateway runs
threads, and a forked copy of a lock held by one would never be released), and started again if it dies.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from ..ledger import LedgerError
from .data import DashboardData

if TYPE_CHECKING:
    from ..config import RouterConfig

NICENESS = 10
"""The child yields the CPU to the gateway's requests when both want it: a view can wait a little, a request not."""

_data: DashboardData | None = None  # the child's own: its day cache lives as long as the child


def _start(location: str, config: RouterConfig | None, source: str) -> None:
    global _data
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the gateway stops its child
    os.nice(NICENESS)
    _data = DashboardData(location, config, source=source)


def _compute(view: str, params: Mapping[str, str], snap: dict[str, Any] | None) -> dict[str, Any]:
    assert _data is not None, "the dashboard's process was not started"
    return _data.compute(view, params, snap)


class ViewProcess:
    """``compute`` as ``DashboardData.compute`` does it, in a child process that keeps its caches."""

    def __init__(self, location: str, config: RouterConfig | None, source: str) -> None:
        self._args = (location, config, source)
        self._pool: ProcessPoolExecutor | None = None

    async def compute(self, view: str, params: Mapping[str, str], snap: dict[str, Any] | None) -> dict[str, Any]:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start, initargs=self._args)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, _compute, view, dict(params), snap)
        except BrokenProcessPool:
            self.close()  # the next view starts a new one
            raise LedgerError("the dashboard's worker process stopped; it starts again on the next refresh") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
