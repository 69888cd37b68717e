"""A stream's SSE events, parsed and checked, delivered from the socket's read callback while the reader can
take them at once.

Pulled through an async generator, every event of a relayed stream costs a future, a task wake-up and a
resume of each generator layer between the socket and the client: about a third of the Python an event
cost. A reader that can take events at once (a relay whose client's socket has room) offers a ``deliver``
callable instead; ``EventPush`` is then the connection's ``sink``, and each network read's events go from
the read callback, through the checks, to ``deliver`` and the client's socket, with no task in between.

The reader's task waits meanwhile, and is woken only when it is needed: the stream ended (``done``), an
event was broken or the upstream failed (``failure``, raised in the task, after the events before it were
delivered), or ``deliver`` refused a batch (``pending``: the client's socket is full, so the batch is the
task's to send under its write deadline). Then pieces queue again, with their bound, until the task offers
``deliver`` once more.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

Batch = tuple[list[dict[str, Any]], list[bytes | None]]
"""A read's events and, beside each, its ``data`` payload as received if it is one line (else None)."""
Deliver = Callable[[list[dict[str, Any]], list[bytes | None]], bool]
"""Takes a batch at once and says True, or says False and takes nothing. Called from a read callback."""


class DeliverFailed(Exception):
    """``deliver`` raised (its exception is the cause): the consumer's failure, raised in its task as itself and
    never taken for the provider's."""


def offer(deliver: Deliver | None, batch: list[dict[str, Any]], payloads: list[bytes | None]) -> bool:
    """True if ``deliver`` (None: there is none) took the batch; its failure raised as ``DeliverFailed``."""
    if deliver is None:
        return False
    try:
        return deliver(batch, payloads)
    except Exception as exc:
        raise DeliverFailed(str(exc)) from exc


class EventParser:
    """SSE ``data`` payloads to checked event dicts, for one stream: ``feed`` the SSE decoder, ``parse`` one payload
    (raising the provider's error for a broken or error event)."""

    __slots__ = ("_feed", "_parse")

    def __init__(self, feed: Callable[[bytes], list[bytes]], parse: Callable[[bytes], dict[str, Any]]) -> None:
        self._feed = feed
        self._parse = parse

    def parse_into(self, piece: bytes, batch: list[dict[str, Any]], payloads: list[bytes | None]) -> bool:
        """Append ``piece``'s complete events to ``batch`` (and their payloads); True once ``[DONE]`` came, the
        rest of ``piece`` unread. What raises leaves the events before it in ``batch``."""
        parse = self._parse
        for data in self._feed(piece):
            if data[:1] != b"{" and data.strip() == b"[DONE]":  # an event is a JSON object: the test is rare
                return True
            batch.append(parse(data))
            payloads.append(data if 10 not in data and 13 not in data else None)
        return False


class EventPush:
    """A connection's ``sink`` while a reader waits on ``waiter``: each read's events to ``deliver``, until the
    reader is needed (see the module's docstring)."""

    __slots__ = ("_deliver", "_extend", "_parse_into", "_stop", "_waiter", "done", "failure", "pending")

    def __init__(self, parser: EventParser, deliver: Deliver, extend: Callable[[], None],
                 waiter: asyncio.Future[None], stop: Callable[[], None]) -> None:
        self._parse_into = parser.parse_into
        self._deliver = deliver
        self._extend = extend  # the silence watchdog: an event came
        self._waiter = waiter
        self._stop = stop  # takes this sink off the connection
        self.done = False
        self.failure: BaseException | None = None
        self.pending: Batch | None = None

    def __call__(self, pieces: list[bytes]) -> None:
        batch: list[dict[str, Any]] = []
        payloads: list[bytes | None] = []
        parse_into = self._parse_into
        try:
            for piece in pieces:
                if parse_into(piece, batch, payloads):
                    self.done = True
                    break
        except Exception as exc:  # a broken or error event: raised in the reader, after the events before it
            self.failure = exc
        if batch:
            self._extend()
            try:
                if not offer(self._deliver, batch, payloads):
                    self.pending = (batch, payloads)
            except DeliverFailed as exc:  # the consumer's own failure, raised in its task (over a broken event's)
                self.failure = exc
        if self.done or self.failure is not None or self.pending is not None:
            self._stop()
            if not self._waiter.done():
                self._waiter.set_result(None)
