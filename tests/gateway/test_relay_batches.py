"""The events one upstream read brings go to the client in one write, not one write each."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from llmroute.gateway.sse_writer import EventWriter

from .test_stream_batches_gateway import BODY, Writes, one_read_gateway  # noqa: F401 (the fixture)


async def test_a_reads_events_go_to_the_client_in_one_write(one_read_gateway: tuple[Writes, str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _, url = one_read_gateway
    written: list[bytes] = []
    write = EventWriter.write

    def recording_write(self: EventWriter, data: bytes) -> Any:
        written.append(data)
        return write(self, data)

    monkeypatch.setattr(EventWriter, "write", recording_write)
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(url, json=BODY)
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")
    assert len(written) == 1, f"{len(written)} writes for the six events of one read"
    assert written[0].count(b"data: ") == 6 and written[0] in response.content
