"""quality_aware end to end: decisions from the model, targets, fallback, headers and the ledger."""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from llmroute import LLMRouter, load_config
from llmroute.emulator import EmulatorThread
from llmroute.quality import QualityRouter
from llmroute.state import InMemoryState
from llmroute.strategies import QualityAware, RouteRequest
from llmroute.strategies.quality_aware import MIN_ADAPT_SAMPLES, ScoreWindow

from .test_cli import llmroute

HARD = ("Janet has 3 boxes with 48 pencils each. She gives 17% of them to her class, then buys twice as many as "
        "she has left and sells 25 at $0.40 each. How many pencils does she have now, and how much money did she make?")
EASY = "Write a haiku about autumn."


@pytest.fixture(scope="module")
def model() -> QualityRouter:
    return QualityRouter.load()


def fixed_threshold_config(seed_config: dict[str, Any], share: float = 0.5) -> dict[str, Any]:
    """quality_aware with the model's own threshold (no adaptation), so a test can predict each decision."""
    seed_config["strategy"] = "quality_aware"
    seed_config["quality_aware"] = {"target": {"strong_share": share}, "adapt_window": 0}
    return seed_config


def expected_tier(model: QualityRouter, text: str, share: float = 0.5) -> str:
    return "strong" if model.score(text) >= model.threshold_for_share(share) else "weak"


def test_the_two_test_prompts_fall_on_either_side(model: QualityRouter) -> None:
    # Guards the tests below: they exercise both branches only if these differ.
    assert expected_tier(model, HARD) == "strong" and expected_tier(model, EASY) == "weak"


async def test_library_routes_by_score_and_reports_it(seed_config: dict[str, Any], model: QualityRouter,
                                                      tmp_path: Path) -> None:
    config = fixed_threshold_config(seed_config)
    config["ledger"] = {"path": str(tmp_path / "ledger.sqlite3")}
    async with LLMRouter(config=config) as router:
        hard = await router.generate(HARD, max_tokens=20)
        easy = await router.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": EASY}],
                                 max_tokens=20)
    assert (hard.route_decision, hard.provider) == ("strong", "cerebras")
    assert (easy.route_decision, easy.provider) == ("weak", "runpod")
    assert hard.quality_score == pytest.approx(model.score(HARD))
    assert easy.quality_score == pytest.approx(model.score("Be brief.\n" + EASY))  # system prompt is context
    assert hard.strategy == "quality_aware" and not hard.fallback
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    rows = db.execute("SELECT provider, quality_score, route_decision FROM requests ORDER BY id").fetchall()
    assert rows == [("cerebras", pytest.approx(hard.quality_score), "strong"),
                    ("runpod", pytest.approx(easy.quality_score), "weak")]


async def test_fallback_still_applies(seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
                                      tmp_path: Path) -> None:
    config = fixed_threshold_config(seed_config)
    config["ledger"] = {"path": str(tmp_path / "ledger.sqlite3")}
    emus["runpod"].set_faults({"503": 1.0})
    async with LLMRouter(config=config) as router:
        result = await router.generate(EASY, max_tokens=10)
    assert result.route_decision == "weak" and result.provider == "cerebras" and result.fallback
    assert [a.provider for a in result.attempts] == ["runpod", "cerebras"]
    db = sqlite3.connect(tmp_path / "ledger.sqlite3")
    assert db.execute("SELECT route_decision, fallback FROM requests").fetchall() == [("weak", 1)]


def test_the_share_of_strong_calls_holds_on_live_traffic(seed_config: dict[str, Any]) -> None:
    """The model's quantiles come from benchmark prompts; the window makes the share hold on other traffic."""
    seed_config["quality_aware"] = {"target": {"strong_share": 0.25}, "adapt_window": 200}
    strategy = QualityAware(load_config(seed_config), InMemoryState({"cerebras": 900.0, "runpod": 1200.0}))
    rng = random.Random(3)
    words = ["invoice", "lead", "contract", "summary", "meeting", "customer", "risk", "revenue", "budget", "team"]
    decisions = []
    for i in range(800):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(3, 40)))
        if i % 7 == 0:
            prompt += f" If {rng.randint(2, 90)} units cost ${rng.randint(3, 500)}, what do {rng.randint(2, 50)} cost?"
        decisions.append(strategy.route(RouteRequest(100, 100, prompt=prompt)).decision)
    late = decisions[200:]
    assert 0.20 <= late.count("strong") / len(late) <= 0.30


def test_score_window_quantile() -> None:
    window = ScoreWindow(size=100)
    assert window.threshold(0.2) is None
    for i in range(300):
        window.add(i / 1000)  # the window keeps 0.200 .. 0.299
    assert window.threshold(0.2) == pytest.approx(0.28)  # 20 of the 100 kept scores are >= 0.28
    assert window.threshold(0.0) is None and window.threshold(1.0) is None
    assert MIN_ADAPT_SAMPLES <= 100


def test_price_and_quality_targets_set_the_share(seed_config: dict[str, Any], model: QualityRouter) -> None:
    state = InMemoryState({"cerebras": 900.0, "runpod": 1200.0})
    seed_config["quality_aware"] = {"target": {"max_price_per_m": 0.036}}
    by_price = QualityAware(load_config(seed_config), state)
    assert by_price.strong_share == pytest.approx(0.2)  # (0.036 - 0.02) / (0.10 - 0.02)
    assert (by_price.strong, by_price.weak) == ("cerebras", "runpod")
    seed_config["quality_aware"] = {"target": {"min_quality": 0.95}}
    by_quality = QualityAware(load_config(seed_config), state)
    assert by_quality.strong_share == model.share_for_quality(0.95)
    assert model.expected_quality(by_quality.strong_share) >= 0.95


def test_plan_shows_quality_aware_with_expected_quality(model: QualityRouter) -> None:
    proc = llmroute("plan", "--monthly-tokens", "10B", "--json", "--benchmark-quality")
    assert proc.returncode == 0, proc.stderr
    rows = {r["strategy"]: r for r in json.loads(proc.stdout)["strategies"]}
    qa, balanced = rows["quality_aware"], rows["balanced"]
    assert qa["share"] == pytest.approx({"runpod": 0.8, "cerebras": 0.2})  # the default target: 20% strong
    assert qa["total_usd"] == pytest.approx(balanced["total_usd"])  # the seed's $360 at 10B tokens
    assert qa["benchmark_quality"]["value"] == pytest.approx(model.expected_quality(0.2))
    # same spend, chosen prompts vs a random fifth
    assert qa["benchmark_quality"]["value"] > balanced["benchmark_quality"]["value"]
    assert rows["quality_optimized"]["benchmark_quality"]["value"] == pytest.approx(1.0)
    proc = llmroute("plan", "--monthly-tokens", "10B", "--min-quality", "0.95", "--benchmark-quality")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("quality_aware"))
    assert "cerebras" in line and "benchmark quality 9" in line
    bad = llmroute("plan", "--monthly-tokens", "10B", "--min-quality", "0.95", "--strong-share", "0.2")
    assert bad.returncode == 2 and "set exactly one" in bad.stderr


def test_a_bad_model_file_stops_the_gateway_at_start_with_its_name(tmp_path: Path, seed_config: dict[str, Any]) -> None:
    import yaml

    seed_config["strategy"] = "quality_aware"
    seed_config["quality_aware"] = {"model": "missing.json.gz"}
    path = tmp_path / "llmroute.yaml"
    path.write_text(yaml.safe_dump(seed_config))
    proc = llmroute("serve", "--config", str(path), "--port", "0")
    assert proc.returncode == 2 and "key 'quality_aware.model'" in proc.stderr
    assert str(tmp_path / "missing.json.gz") in proc.stderr  # relative to the config file
    (tmp_path / "missing.json.gz").write_bytes(b"\x1f\x8bnot gzip")
    proc = llmroute("serve", "--config", str(path), "--port", "0")
    assert proc.returncode == 2 and "not a readable model file" in proc.stderr and "Traceback" not in proc.stderr


async def test_replay_re_decides_logged_scores_under_another_target(seed_config: dict[str, Any], tmp_path: Path) -> None:
    config = fixed_threshold_config(seed_config)
    path = tmp_path / "ledger.sqlite3"
    config["ledger"] = {"path": str(path)}
    async with LLMRouter(config=config) as router:
        for prompt in (HARD, EASY, HARD, EASY):
            await router.generate(prompt, max_tokens=10)
        await router.generate(HARD, max_tokens=10, strategy="balanced")  # no score: left out of the replay

    def replay(*args: str) -> dict[str, Any]:
        proc = llmroute("replay", "--ledger", str(path), "--json", "--strategy", "quality_aware", *args)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    everything = replay("--strong-share", "1")
    assert everything["estimate"]["split"] == {"cerebras": 4} and everything["skipped_without_score"] == 1
    assert everything["actual"]["split"] == {"cerebras": 2, "runpod": 2}
    nothing = replay("--strong-share", "0")
    assert nothing["estimate"]["split"] == {"runpod": 4}
    assert nothing["estimate"]["cost_usd"] < everything["estimate"]["cost_usd"]
    bad = llmroute("replay", "--ledger", str(path), "--strategy", "balanced", "--strong-share", "0.5")
    assert bad.returncode == 2 and "only applies to --strategy quality_aware" in bad.stderr


async def test_replay_without_scores_says_why(seed_config: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    seed_config["ledger"] = {"path": str(path)}
    async with LLMRouter(config=seed_config) as router:
        await router.generate(EASY, max_tokens=10)
    proc = llmroute("replay", "--ledger", str(path), "--strategy", "quality_aware")
    assert proc.returncode == 2 and "none of the 1 requests in this period has one" in " ".join(proc.stderr.split())


async def test_report_by_decision(seed_config: dict[str, Any], tmp_path: Path) -> None:
    config = fixed_threshold_config(seed_config)
    path = tmp_path / "ledger.sqlite3"
    config["ledger"] = {"path": str(path)}
    async with LLMRouter(config=config) as router:
        hard = [await router.generate(HARD, max_tokens=10) for _ in range(2)]
        easy = await router.generate(EASY, max_tokens=10)
    proc = llmroute("report", "--ledger", str(path), "--by", "decision", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    groups = {g["group"]: g for g in json.loads(proc.stdout)["groups"]}
    assert groups["strong"]["requests"] == 2 and groups["weak"]["requests"] == 1
    assert groups["strong"]["cost_usd"] == pytest.approx(sum(r.cost_usd for r in hard), abs=1e-12)
    assert groups["weak"]["cost_usd"] == pytest.approx(easy.cost_usd, abs=1e-12)
