"""One timer per stream that bounds each silence, instead of a timeout armed and cancelled per event.

``asyncio.timeout()`` around every read costs a Timeout object, a timer pushed into and cancelled
from the loop's heap and a ``current_task()`` lookup: about 5 µs an event, the largest piece of Python
work a relayed event did. A ``SilenceWatchdog`` keeps a deadline (a float, moved on per event) and
one timer. When the timer fires early, because events kept coming, it re-arms itself at the current
deadline; it acts only when the deadline has really passed while the stream waits for its upstream.
So a flowing stream pays one timer every ``timeout_s``, not one per event.

Time the consumer spends with an event does not count: the task is cancelled only while it waits
inside ``wait()``. The cancellation it makes becomes ``TimeoutError``; a cancellation from elsewhere
(the client went away) stays a ``CancelledError``, as with ``asyncio.timeout()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class SilenceWatchdog:
    """``await watchdog.wait(step)`` raises ``TimeoutError`` once ``deadline`` (``loop.time()``) passes.

    Call ``extend()`` after each event and ``close()`` when the stream ends.
    """

    __slots__ = ("_cancelling", "_fired", "_handle", "_loop", "_task", "_timeout_s", "deadline")

    def __init__(self, timeout_s: float, first_deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout_s = timeout_s
        self.deadline = first_deadline
        """When the current silence becomes a timeout, in ``loop.time()``."""
        self._task: asyncio.Task[object] | None = None  # the task waiting for the upstream; None while it is not
        self._cancelling = 0
        self._fired = False
        self._handle = self._loop.call_at(first_deadline, self._check)

    def extend(self) -> None:
        """An event came: the next one must come within ``timeout_s`` from now."""
        self.deadline = self._loop.time() + self._timeout_s

    async def wait(self, step: Awaitable[T]) -> T:
        """Await ``step`` (a read from the upstream); ``TimeoutError`` if the deadline passes meanwhile."""
        task = asyncio.current_task(self._loop)  # given the loop: no getpid() syscall to find it
        assert task is not None
        self._task, self._cancelling = task, task.cancelling()
        try:
            return await step
        except asyncio.CancelledError:
            if self._fired:
                self._fired = False
                if task.uncancel() <= self._cancelling:  # ours alone; someone else's cancel stays a cancel
                    raise TimeoutError from None
            raise
        finally:
            self._task = None

    def _check(self) -> None:
        now = self._loop.time()
        if now < self.deadline:  # events came meanwhile: wake again at the deadline as it stands
            self._handle = self._loop.call_at(self.deadline, self._check)
        elif self._task is not None:
            self._fired = True
            self._task.cancel()
        else:  # the consumer holds an event; its time does not count, and it extends the deadline when done
            self._handle = self._loop.call_at(now + self._timeout_s, self._check)

    def close(self) -> None:
        self._handle.cancel()
