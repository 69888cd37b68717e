"""quality_aware through the gateway: the score and the decision in headers (plain and streamed) and the ledger."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from llmroute.quality import QualityRouter

from ..test_quality_aware import EASY, HARD, fixed_threshold_config
from .conftest import RunningGateway, stop_gateway


@pytest.fixture(scope="module")
def model() -> QualityRouter:
    return QualityRouter.load()


def test_gateway_headers_and_ledger(gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any],
                                    model: QualityRouter, tmp_path: Path) -> None:
    config = fixed_threshold_config(seed_config)
    config["strategy"] = "balanced"  # the client picks quality_aware by model name
    config["ledger"] = {"path": str(tmp_path / "gw.sqlite3")}
    gw = gateway_factory(config)
    client = openai.OpenAI(base_url=gw.base_url + "/v1", api_key="unused", max_retries=0)
    hard = client.chat.completions.with_raw_response.create(
        model="quality_aware", messages=[{"role": "user", "content": HARD}], max_tokens=10)
    assert hard.headers["x-llmroute-route-decision"] == "strong"
    assert hard.headers["x-llmroute-provider"] == "cerebras"
    assert float(hard.headers["x-llmroute-quality-score"]) == pytest.approx(model.score(HARD), abs=1e-4)
    with client.chat.completions.with_streaming_response.create(
            model="quality_aware", messages=[{"role": "user", "content": EASY}], max_tokens=10, stream=True) as easy:
        assert easy.headers["x-llmroute-route-decision"] == "weak"
        assert easy.headers["x-llmroute-provider"] == "runpod"
        assert "".join(easy.iter_lines())
    plain = client.chat.completions.with_raw_response.create(
        model="balanced", messages=[{"role": "user", "content": HARD}], max_tokens=10)
    assert "x-llmroute-quality-score" not in plain.headers  # only a scoring strategy reports a score
    assert stop_gateway(gw) == 0
    db = sqlite3.connect(tmp_path / "gw.sqlite3")
    rows = db.execute("SELECT strategy, route, route_decision, quality_score IS NOT NULL FROM requests ORDER BY id")
    assert rows.fetchall() == [("quality_aware", "quality_aware", "strong", 1), ("quality_aware", "quality_aware", "weak", 1),
                               ("balanced", "balanced", None, 0)]
