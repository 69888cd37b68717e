"""A blocking wrapper for scripts and notebooks that do not run an event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

from .result import RouteResult
from .router import LLMRouter, RouteStream

T = TypeVar("T")


class SyncRouter:
    """``LLMRouter`` with blocking methods.

    It owns one event loop on a background thread, so the provider connection
    pools live across calls (a fresh ``asyncio.run`` per call would throw them away).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.router = LLMRouter(*args, **kwargs)
        self.last_result: RouteResult | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llmroute-sync", daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def generate(self, prompt: str, max_tokens: int = 500, **params: Any) -> RouteResult:
        return self._run(self.router.generate(prompt, max_tokens=max_tokens, **params))

    def chat(self, messages: Any, **params: Any) -> RouteResult:
        return self._run(self.router.chat(messages, **params))

    def stream(self, messages: Any = None, **params: Any) -> Generator[dict[str, Any], None, RouteResult | None]:
        """Yield chunks; the finished ``RouteResult`` is the generator's return value and ``last_result``."""
        stream: RouteStream = self.router.stream(messages, **params)
        iterator = stream.__aiter__()

        async def step() -> dict[str, Any] | None:
            return await anext(iterator, None)

        try:
            while (chunk := self._run(step())) is not None:
                yield chunk
        finally:
            self._run(iterator.aclose())  # type: ignore[attr-defined]
        self.last_result = stream.result
        return stream.result

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self.router.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncRouter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
