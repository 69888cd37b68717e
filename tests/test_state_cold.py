"""Cold-start detection logs once per warming window: under load every slow answer looks cold, and a log line
per answer (tens of thousands a minute) would cost the gateway more than the requests."""

from __future__ import annotations

import logging

import pytest

from llmroute.state import ColdStartSettings, InMemoryState


def test_a_burst_of_cold_looking_answers_logs_once_and_counts_each(caplog: pytest.LogCaptureFixture) -> None:
    state = InMemoryState({"p": 100.0}, cold_starts={"p": ColdStartSettings(factor=3.0, warm_s=30.0)})
    for _ in range(30):
        state.record_success("p", 100.0)
    with caplog.at_level(logging.WARNING, logger="llmroute"):
        for _ in range(50):
            state.record_success("p", 1000.0)
    assert [r.getMessage() for r in caplog.records].count("p looks cold: 1000 ms, over 3.0x its recent p95") == 1
    assert state.snapshot()["p"].cold_starts == 50
    assert state.warming("p")
