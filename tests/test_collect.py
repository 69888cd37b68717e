"""``llmroute quality collect`` over real HTTP to emulators, and as a real subprocess for resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from typer.testing import CliRunner

from llmroute.cli import app
from llmroute.config import load_config
from llmroute.emulator import EmulatorThread
from llmroute.evaluation import call_once
from llmroute.evaluation.collect import Collector, calls_path, worst_cost_usd
from llmroute.evaluation.prompts import load_prompts
from llmroute.pricing import Pricer
from llmroute.providers import OpenAICompatProvider
from llmroute.quality.data import load_lines
from llmroute.quality.retained import routed_estimate, split_estimate
from llmroute.router import LLMRouter
from llmroute.state import InMemoryState

from .conftest import chat_upstream, emulator, provider

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def write_config(path: Path, providers: dict[str, Any], **extra: Any) -> Path:
    path.write_text(yaml.safe_dump({"providers": providers, **extra}))
    return path


def write_prompts(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def collect(*args: str) -> Any:
    return runner.invoke(app, ["quality", "collect", *args])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def fresh_pair() -> Iterator[dict[str, EmulatorThread]]:
    """Emulators of our own: their request counts belong to this test alone."""
    with emulator("cerebras", seed=3) as strong, emulator("runpod", seed=4) as weak:
        yield {"cerebras": strong, "runpod": weak}


def pair_providers(emus: dict[str, EmulatorThread]) -> dict[str, Any]:
    return {name: provider(emus[name].base_url, name) for name in ("cerebras", "runpod")}


def requests(emus: dict[str, EmulatorThread]) -> dict[str, int]:
    return {name: emu.emulator.stats["requests"] for name, emu in emus.items()}


# -- input --------------------------------------------------------------------------------

GOOD = {"prompt": "What is 2+2?", "reference": "4"}


@pytest.mark.parametrize("bad, says", [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    ('{"reference": "4"}', "give 'prompt' or 'messages'"),
    ('{"prompt": "x", "messages": [{"role": "user", "content": "x"}]}', "give 'prompt' or 'messages'"),
    ('{"prompt": "   "}', "'prompt' must be a non-empty string"),
    ('{"messages": [{"content": "no role"}]}', "messages[0] must be an object with a string 'role'"),
    ('{"prompt": "x", "reference": ["4"]}', "'reference' (the gold answer) must be a string or a number"),
    ('{"prompt": "x", "tags": 7}', "'tags' must be a list of strings"),
    ('{"prompt": "x", "params": {"model": "gpt-4"}}', "params.model is set by quality collect"),
    ('{"prompt": "x", "params": {"max_tokens": 0}}', "params.max_tokens must be an integer >= 1"),
    ('{"prompt": "What is 2+2?", "reference": "4"}', "the same request as line 1"),
])
def test_a_bad_line_is_an_error_naming_it_before_anything_is_sent(
        tmp_path: Path, fresh_pair: dict[str, EmulatorThread], bad: str, says: str) -> None:
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps(GOOD) + "\n" + bad + "\n")
    config = write_config(tmp_path / "c.yaml", pair_providers(fresh_pair))
    out = tmp_path / "labels.jsonl"
    result = collect("--data", str(data), "--out", str(out), "--config", str(config))
    assert result.exit_code == 2
    assert f"{data}, line 2: " in result.output and says in result.output
    assert requests(fresh_pair) == {"cerebras": 0, "runpod": 0}
    assert not out.exists() and not calls_path(out).exists()


def test_ids_numbers_and_tag_objects_are_read(tmp_path: Path) -> None:
    data = write_prompts(tmp_path / "p.jsonl", [
        {"id": 7, "prompt": "a", "reference": 12.5, "tags": {"task": "math", "hard": True}},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "b"}],
         "params": {"max_tokens": 9}},
    ])
    first, second = load_prompts(data)
    assert (first.id, first.key, first.gold, first.tags) == ("7", "id:7", "12.5", ["task=math", "hard=True"])
    assert first.benchmark == "task=math"
    assert second.key.startswith("sha256:") and second.prompt == "Be brief.\nb"
    assert second.body(512)["max_tokens"] == 9 and first.body(512)["max_tokens"] == 512


# -- labels against gold ----------------------------------------------------------------------


async def emulator_answers(seed_strong: int, seed_weak: int, bodies: list[dict[str, Any]]) -> dict[str, list[str]]:
    """What fresh emulators with these seeds answer to ``bodies``, in order (they answer by sequence and seed)."""
    answers: dict[str, list[str]] = {}
    with emulator("cerebras", seed=seed_strong) as strong, emulator("runpod", seed=seed_weak) as weak:
        config = load_config({"providers": pair_providers({"cerebras": strong, "runpod": weak})})
        for name in ("cerebras", "runpod"):
            p = OpenAICompatProvider(config.providers[name])
            state = InMemoryState({name: 100.0})
            answers[name] = []
            for body in bodies:
                outcome = await call_once(p, Pricer(config.providers[name]), state, body, timeout_s=5.0)
                assert outcome.text is not None
                answers[name].append(outcome.text)
            await p.aclose()
    return answers


def test_labels_grade_both_tiers_against_gold_and_are_routing_data(tmp_path: Path) -> None:
    prompts = [{"id": f"q{i}", "prompt": f"Question {i}: summarise the lead.", "tags": ["task=lead"] if i % 3 == 0 else []}
               for i in range(8)]
    bodies = [{"messages": [{"role": "user", "content": p["prompt"]}], "temperature": 0, "max_tokens": 64}
              for p in prompts]
    known = asyncio.run(emulator_answers(3, 4, bodies))
    # Gold: the weak tier's answer on even prompts, the strong tier's on odd ones.
    for i, p in enumerate(prompts):
        p["reference"] = known["runpod" if i % 2 == 0 else "cerebras"][i]
    data = write_prompts(tmp_path / "p.jsonl", prompts)
    out = tmp_path / "labels.jsonl"
    with emulator("cerebras", seed=3) as strong, emulator("runpod", seed=4) as weak:
        config = write_config(tmp_path / "c.yaml", pair_providers({"cerebras": strong, "runpod": weak}),
                              graders=[{"tag": "task=lead", "grader": "json", "fields": ["label"]}])
        result = collect("--data", str(data), "--out", str(out), "--config", str(config), "--concurrency", "1",
                         "--max-tokens", "64", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    rows = {r["id"]: r for r in read_jsonl(out)}
    for i, p in enumerate(prompts):
        row = rows[p["id"]]
        assert (row["reference_provider"], row["candidate_provider"]) == ("cerebras", "runpod")
        assert row["reference_answer"] == known["cerebras"][i] and row["candidate_answer"] == known["runpod"][i]
        if "task=lead" in p["tags"]:  # the rule by tag: the json grader, and these answers hold no JSON
            assert row["grader"] == "json" and "scores" not in row and "no JSON object" in row["ungraded"]
            continue
        assert row["grader"] == "exact"  # a gold answer and no --grader: exact
        assert row["scores"] == ({"weak": 1.0, "strong": 0.0} if i % 2 == 0 else {"weak": 0.0, "strong": 1.0})
        assert row["reference_cost_usd"] > 0 and row["candidate_cost_usd"] > 0
    # routing data as router train / eval read it: ungraded lines are left out and counted
    ungraded: list[str] = []
    examples = [e for e, _ in load_lines(out, ungraded)]
    assert len(examples) == report["labelled"] == 5 and report["ungraded"] == len(ungraded) == 3
    # The printed figures are the estimates on these pairs.
    weak_scores = [e.weak for e in examples]
    strong_scores = [e.strong for e in examples]
    by_name = {s["strategy"]: s for s in report["strategies"]}
    expected = split_estimate(weak_scores, strong_scores, 0.2)
    assert expected is not None
    assert by_name["balanced"]["reference_share"] == pytest.approx(0.2)
    assert (by_name["balanced"]["retained"], by_name["balanced"]["ci_low"], by_name["balanced"]["ci_high"]) == \
        pytest.approx((expected.value, expected.low, expected.high))
    assert by_name["all-candidate"]["retained"] == pytest.approx(split_estimate(weak_scores, strong_scores, 0.0).value)
    assert by_name["all-reference"]["retained"] == pytest.approx(1.0)
    router = LLMRouter(config=load_config(config), ledger=False)
    qa = router.strategy("quality_aware")
    scores = qa.model.score_many(e.prompt for e in examples)  # type: ignore[attr-defined]
    routed = routed_estimate(scores, weak_scores, strong_scores, qa.strong_share)  # type: ignore[attr-defined]
    assert routed is not None and by_name["quality_aware"]["retained"] == pytest.approx(routed.value)


# -- the cap ----------------------------------------------------------------------------------


def test_the_cap_is_never_passed_with_concurrency_and_a_rerun_goes_on(
        tmp_path: Path, fresh_pair: dict[str, EmulatorThread]) -> None:
    data = write_prompts(tmp_path / "p.jsonl", [{"prompt": f"Tell me about lead {i}."} for i in range(40)])
    config = load_config({"providers": pair_providers(fresh_pair)})
    lines = load_prompts(data)
    body = lines[0].body(64)
    pair_worst = sum(worst_cost_usd(config.providers[n], body, config.providers[n].timeout_s)
                     for n in ("cerebras", "runpod"))
    cap = 5.5 * pair_worst
    out = tmp_path / "labels.jsonl"

    async def run(max_usd: float) -> Any:
        router = LLMRouter(config=config, ledger=False)
        collector = Collector(config, router.providers, router.pricers, router.state, reference="cerebras",
                              candidate="runpod", out=out, max_usd=max_usd, concurrency=8, grader="exact",
                              max_tokens=64)
        try:
            return await collector.run(lines)
        finally:
            await router.aclose()

    first = asyncio.run(run(cap))
    rows = read_jsonl(out)
    billed = sum(r["reference_cost_usd"] + r["candidate_cost_usd"] for r in rows)
    assert first.total_spent_usd <= cap and billed == pytest.approx(first.spent_usd)
    assert first.left > 0 and len(rows) + first.left == 40
    assert requests(fresh_pair) == {"cerebras": len(rows), "runpod": len(rows)}  # nothing sent past the cap
    # A rerun with a higher cap finishes, and sends only what was not answered.
    second = asyncio.run(run(1.0))
    assert second.skipped == len(rows) and second.left == 0
    assert requests(fresh_pair) == {"cerebras": 40, "runpod": 40}
    assert sorted(r["id"] for r in read_jsonl(out)) == sorted(line.id for line in lines)


def test_a_zero_cap_sends_nothing_and_says_so(tmp_path: Path, fresh_pair: dict[str, EmulatorThread]) -> None:
    data = write_prompts(tmp_path / "p.jsonl", [GOOD])
    config = write_config(tmp_path / "c.yaml", pair_providers(fresh_pair))
    result = collect("--data", str(data), "--out", str(tmp_path / "l.jsonl"), "--config", str(config), "--max-usd", "0")
    assert result.exit_code == 0
    assert "1 prompts left" in result.output and "--max-usd" in result.output
    assert requests(fresh_pair) == {"cerebras": 0, "runpod": 0}


# -- failures and ungraded lines -----------------------------------------------------------


def test_a_failed_tier_is_ungraded_and_a_rerun_pays_only_for_it(
        tmp_path: Path, fresh_pair: dict[str, EmulatorThread]) -> None:
    data = write_prompts(tmp_path / "p.jsonl", [{"prompt": f"p{i}", "reference": "x"} for i in range(4)])
    config = write_config(tmp_path / "c.yaml", pair_providers(fresh_pair))
    out = tmp_path / "labels.jsonl"
    fresh_pair["runpod"].set_faults({"500": 1.0})
    result = collect("--data", str(data), "--out", str(out), "--config", str(config), "--concurrency", "1")
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out)
    assert len(rows) == 4
    for row in rows:
        assert "scores" not in row and row["ungraded"].startswith("candidate call failed: ")
        assert row["reference_answer"] and row["candidate_answer"] is None
    # router train leaves ungraded lines out; a file of nothing else is a clear error, not a crash
    train = runner.invoke(app, ["router", "train", "--data", str(out), "--out", str(tmp_path / "m.json.gz")])
    assert train.exit_code == 2 and "all 4 lines are ungraded" in train.output
    fresh_pair["runpod"].set_faults({})
    before = requests(fresh_pair)
    result = collect("--data", str(data), "--out", str(out), "--config", str(config))
    assert result.exit_code == 0, result.output
    assert all("scores" in row for row in read_jsonl(out)) and len(read_jsonl(out)) == 4
    after = requests(fresh_pair)
    assert after["cerebras"] == before["cerebras"]  # the reference answers were kept, not bought again
    assert after["runpod"] == before["runpod"] + 4


@pytest.fixture
async def judge_upstream() -> AsyncIterator[Any]:
    """A judge provider whose reply the test sets: a stand-in for a paid judge model."""
    state: dict[str, Any] = {"reply": "[[C]]", "calls": 0}

    async def handler(request: web.Request) -> web.Response:
        state["calls"] += 1
        return web.json_response({"id": "j", "object": "chat.completion", "created": 0, "model": "judge",
                                  "choices": [{"index": 0, "finish_reason": "stop",
                                               "message": {"role": "assistant", "content": state["reply"]}}],
                                  "usage": {"prompt_tokens": 100, "completion_tokens": 10}})

    async with chat_upstream(handler) as base_url:
        state["base_url"] = base_url
        yield state


@pytest.mark.parametrize("reply, graded", [("Both are equally good. [[C]]", True), ("I cannot decide.", False)])
async def test_the_judge_grades_through_its_provider_and_a_failed_verdict_is_ungraded(
        tmp_path: Path, fresh_pair: dict[str, EmulatorThread], judge_upstream: dict[str, Any], reply: str,
        graded: bool) -> None:
    judge_upstream["reply"] = reply
    providers = {**pair_providers(fresh_pair), "judge": provider(judge_upstream["base_url"], "cerebras")}
    config = load_config({"providers": providers, "judge": {"provider": "judge"},
                          "quality_aware": {"strong": "cerebras", "weak": "runpod"}})
    lines = load_prompts(write_prompts(tmp_path / "p.jsonl", [{"prompt": "Write a haiku."}]))
    out = tmp_path / "labels.jsonl"

    async def run() -> Any:
        router = LLMRouter(config=config, ledger=False)
        collector = Collector(config, router.providers, router.pricers, router.state, reference="cerebras",
                              candidate="runpod", out=out, max_usd=1.0, grader="judge")
        try:
            return await collector.run(lines)
        finally:
            await router.aclose()

    await run()
    (row,) = read_jsonl(out)
    assert row["grader"] == "judge"
    assert judge_upstream["calls"] == 2  # pairwise, in both orders
    assert row["judge_cost_usd"] > 0
    if graded:
        assert row["scores"] == {"weak": 0.5, "strong": 0.5}
    else:
        assert "scores" not in row and row["ungraded"]
    # A rerun asks the judge nothing new: its replies were kept with the answers.
    await run()
    assert judge_upstream["calls"] == 2


# -- resume after a kill ------------------------------------------------------------------


@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -signal.SIGKILL), (signal.SIGINT, 130)])
def test_an_interrupted_run_resumes_without_paying_twice_for_an_answered_call(
        tmp_path: Path, sig: signal.Signals, code: int) -> None:
    """Killed (nothing runs after) or Ctrl-C (asyncio cancels the calls in flight, the command says how to resume)."""
    prompts = 24
    data = write_prompts(tmp_path / "p.jsonl", [{"id": i, "prompt": f"Qualify lead {i}.", "reference": "hot"}
                                                for i in range(prompts)])
    out = tmp_path / "labels.jsonl"
    calls = calls_path(out)
    with emulator("cerebras", speed=1.0, latency_ms=150) as strong, emulator("runpod", speed=1.0, latency_ms=150) as weak:
        emus = {"cerebras": strong, "runpod": weak}
        config = write_config(tmp_path / "c.yaml", pair_providers(emus))
        command = [sys.executable, "-m", "llmroute.cli", "quality", "collect", "--data", str(data), "--out", str(out),
                   "--config", str(config), "--concurrency", "2", "--max-tokens", "32"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 60
            while (not calls.exists() or calls.read_text().count("\n") < 8) and proc.poll() is None:
                assert time.monotonic() < deadline, "no answers recorded"
                time.sleep(0.02)  # polling a file another process writes: there is no event to wait on
            proc.send_signal(sig)
        finally:
            proc.wait(timeout=30)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode == code, stderr
        if sig == signal.SIGINT:
            assert "re-run the same command to resume" in stderr
        kept = {"cerebras": 0, "runpod": 0}
        for line in calls.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut by the kill
            if row["error"] is None:
                kept[row["provider"]] += 1
        assert 0 < min(kept.values()) and max(kept.values()) < prompts
        labelled_before = out.read_text().count('"scores"') if out.exists() else 0
        before = requests(emus)
        finished = subprocess.run(command + ["--format", "json"], env=env, capture_output=True, text=True, timeout=120)
        assert finished.returncode == 0, finished.stderr
        report = json.loads(finished.stdout)
        sent = {name: requests(emus)[name] - before[name] for name in emus}
    # Every answer received before the kill was reused: only the others were asked for.
    assert sent == {name: prompts - kept[name] for name in kept}
    rows = read_jsonl(out)
    assert sorted(int(r["id"]) for r in rows) == list(range(prompts))
    assert all("scores" in r for r in rows)
    assert report["skipped"] == labelled_before and report["labelled"] == prompts


async def test_tool_calls_of_both_tiers_are_compared_by_the_json_grader(tmp_path: Path) -> None:
    """Tools in ``params`` reach both tiers; their calls differ in ids and spacing, and agree or not in arguments."""
    seen: list[Any] = []

    def tier(arguments: dict[str, str]) -> Any:
        async def handler(request: web.Request) -> web.Response:
            body = await request.json()
            seen.append(body.get("tools"))
            label = arguments[body["messages"][-1]["content"]]
            call = {"id": f"call_{len(seen)}", "type": "function",
                    "function": {"name": "qualify", "arguments": json.dumps({"label": label}, indent=len(seen) % 3)}}
            return web.json_response({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                      "choices": [{"index": 0, "finish_reason": "tool_calls",
                                                   "message": {"role": "assistant", "content": None, "tool_calls": [call]}}],
                                      "usage": {"prompt_tokens": 20, "completion_tokens": 8}})
        return handler

    upstreams = AsyncExitStack()
    urls = [await upstreams.enter_async_context(chat_upstream(tier(arguments)))
            for arguments in ({"lead A": "hot", "lead B": "cold"}, {"lead A": "hot", "lead B": "hot"})]
    tools = [{"type": "function", "function": {"name": "qualify", "parameters": {"type": "object"}}}]
    lines = load_prompts(write_prompts(tmp_path / "p.jsonl", [
        {"id": name, "prompt": name, "params": {"tools": tools}} for name in ("lead A", "lead B")]))
    config = load_config({"providers": {"strong": provider(urls[0], "cerebras"), "weak": provider(urls[1], "runpod")}})
    out = tmp_path / "labels.jsonl"
    router = LLMRouter(config=config, ledger=False)
    try:
        await Collector(config, router.providers, router.pricers, router.state, reference="strong", candidate="weak",
                        out=out, max_usd=1.0, grader="json").run(lines)
    finally:
        await router.aclose()
        await upstreams.aclose()
    assert seen == [tools] * 4
    rows = {r["id"]: r for r in read_jsonl(out)}
    assert rows["lead A"]["scores"] == {"weak": 1.0, "strong": 1.0}
    assert rows["lead B"]["scores"] == {"weak": 0.0, "strong": 1.0}
    assert json.loads(rows["lead B"]["candidate_answer"]) == {"tool_calls": [{"name": "qualify", "arguments": {"label": "hot"}}]}


def test_pairs_go_to_the_ledger_where_plan_measures_from(tmp_path: Path, fresh_pair: dict[str, EmulatorThread]) -> None:
    from llmroute.ledger import open_store
    from llmroute.quality_report import load_pairs, measured_quality

    data = write_prompts(tmp_path / "p.jsonl", [{"id": i, "prompt": f"Classify ticket {i}.", "reference": "x"}
                                                for i in range(5)])
    db = tmp_path / "ledger.sqlite3"
    config_path = write_config(tmp_path / "c.yaml", pair_providers(fresh_pair), ledger={"path": str(db)},
                               quality_aware={"strong": "cerebras", "weak": "runpod"})
    result = collect("--data", str(data), "--out", str(tmp_path / "l.jsonl"), "--config", str(config_path))
    assert result.exit_code == 0, result.output
    store = open_store(str(db), readonly=True)
    pairs = load_pairs(store)
    assert len(pairs) == 5
    assert {p.source for p in pairs} == {"collect"} and {p.request_id for p in pairs} == {f"collect:{i}" for i in range(5)}
    assert all(p.quality_score is not None and p.prompt is None for p in pairs)  # no text without store_text
    labels = {f"collect:{r['id']}": r for r in read_jsonl(tmp_path / "l.jsonl")}
    for p in pairs:
        row = labels[p.request_id]
        assert (p.candidate_grade, p.reference_grade) == (row["scores"]["weak"], row["scores"]["strong"])
        assert p.shadow_cost_usd == pytest.approx(row["reference_cost_usd"] + row["candidate_cost_usd"])
    measured = measured_quality(store, load_config(config_path))
    assert measured.pairs == 5
    # --no-ledger records nothing more
    collect("--data", str(data), "--out", str(tmp_path / "l2.jsonl"), "--config", str(config_path), "--no-ledger")
    assert len(load_pairs(open_store(str(db), readonly=True))) == 5
