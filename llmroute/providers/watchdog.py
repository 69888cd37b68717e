"""One timer per stream that bounds each silence, instead of a timeout armed and cancelled per event.

``asyncio.timeout()`` around every read costs a Timeout object, a timer pushed into and cancelled
from the loop's heap and a ``current_task()`` lookup: about 5 µs an event, the largest piece of Python
work a relayed event did. A ``SilenceWatchdog`` keeps a deadline (a float, moved on per event) and
one timer. When the timer fires early, because events kept coming, it re-arms itself at the current
deadline; it acts only when the deadline has really passed while the stream waits for its upstream.
So a flowing stream pays one timer every ``timeout_s``, not one per event.

Time the consumer spends with an event does not count: ``expire()`` is the reader's, and it fails the
read only while the reader waits on its upstream (it says False otherwise, and the watchdog looks again
``timeout_s`` later). Nothing wraps each read: the reader awaits its socket's future directly, and the
watchdog fails that future, so a cancellation from elsewhere (the client went away) stays a cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class SilenceWatchdog:
    """Calls ``expire()`` once ``deadline`` (``loop.time()``) passes while the reader waits.

    ``expire()`` fails the pending read with ``TimeoutError`` and returns True, or returns False if the reader
    is not waiting (it holds an event). Call ``extend()`` after each event and ``close()`` when the stream ends.
    """

    __slots__ = ("_expire", "_handle", "_loop", "_timeout_s", "deadline")

    def __init__(self, timeout_s: float, first_deadline: float, expire: Callable[[], bool]) -> None:
        self._loop = asyncio.get_running_loop()
        self._timeout_s = timeout_s
        self._expire = expire
        self.deadline = first_deadline
        """When the current silence becomes a timeout, in ``loop.time()``."""
        self._handle = self._loop.call_at(first_deadline, self._check)

    def extend(self) -> None:
        """An event came: the next one must come within ``timeout_s`` from now."""
        self.deadline = self._loop.time() + self._timeout_s

    def _check(self) -> None:
        now = self._loop.time()
        if now < self.deadline:  # events came meanwhile: wake again at the deadline as it stands
            self._handle = self._loop.call_at(self.deadline, self._check)
        elif not self._expire():  # the consumer holds an event; its time does not count, it extends when done
            self._handle = self._loop.call_at(now + self._timeout_s, self._check)

    def close(self) -> None:
        self._handle.cancel()
