"""The quality model: the shipped file, training (reproducible, learns a real signal), evaluation and the CLI."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import orjson
import pytest

from llmroute.quality import QualityRouter, curve, load_examples
from llmroute.quality.data import Example
from llmroute.quality.features import MAX_CHARS, prompt_text, terms
from llmroute.quality.model import ModelError
from llmroute.quality.train import TrainSettings, fold_ids, split_holdout, train

from ..test_cli import llmroute
from .test_data_and_metrics import SHARED

PACKAGED = Path(__file__).resolve().parents[2] / "llmroute" / "quality" / "default_model.json.gz"

TOPICS = ["history", "biology", "law", "geography", "music", "cooking", "sports", "art"]


def synthetic(n: int, seed: int) -> list[dict[str, object]]:
    """Prompts where only 'integral' questions need the strong model; the rest both models answer."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        hard = rng.random() < 0.3
        if hard:
            prompt = f"Compute the integral of x^{rng.randint(2, 9)} times sin({rng.randint(1, 5)}x) dx, about {topic}."
        else:
            prompt = f"Name a famous person from {topic} number {rng.randint(1, 999)}."
        rows.append({"id": f"syn/{i}", "benchmark": "calc" if hard and i % 2 else "mixed", "subject": topic,
                     "prompt": prompt, "scores": {"weak": 0.0 if hard else 1.0, "strong": 1.0}})
    return rows


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def shipped() -> QualityRouter:
    return QualityRouter.load()


def test_the_shipped_model_loads_from_the_package_and_scores(shipped: QualityRouter) -> None:
    assert shipped.source.endswith("default_model.json.gz") and PACKAGED.stat().st_size < 1_000_000
    prompts = ["hi", "Write a haiku about autumn.", "x" * 50_000, "Solve: 3x + 7 = 22. Show each step."]
    scores = shipped.score_many(prompts)
    assert scores == [shipped.score(p) for p in prompts]
    assert all(0.0 < s < 1.0 for s in scores)
    q = shipped.quantiles
    assert len(q) == 101 and q == sorted(q)
    # The stored validation is held out, not training fit: between random (0.5) and perfect.
    assert 0.5 < shipped.validation["apgr"] < 0.8 and shipped.meta["examples"] > 0


def test_long_prompts_are_read_by_head_and_tail() -> None:
    text = "question: " + "word " * 20_000 + " final ask"
    grams = terms(text)
    assert "question" in grams and "ask" in grams
    assert sum(grams.values()) < 2 * MAX_CHARS  # bounded work whatever the size


def test_prompt_text_reads_the_system_prompt_and_last_user_turn() -> None:
    messages = [
        {"role": "system", "content": "You are a tax lawyer."},
        {"role": "user", "content": "old question"},
        {"role": "assistant", "content": "old answer"},
        {"role": "user", "content": [{"type": "text", "text": "What is a"}, {"type": "image_url", "image_url": {}},
                                     {"type": "text", "text": "1031 exchange?"}]},
    ]
    assert prompt_text(messages) == "You are a tax lawyer.\nWhat is a\n1031 exchange?"
    assert prompt_text([{"role": "user", "content": None}]) == ""


def test_training_learns_a_signal_it_was_not_shown(tmp_path: Path) -> None:
    model = train([_example(r) for r in synthetic(400, seed=1)], TrainSettings())
    unseen = [_example(r) for r in synthetic(300, seed=2)]
    held = curve(model.score_many(e.prompt for e in unseen), [e.weak for e in unseen], [e.strong for e in unseen])
    weak, strong = [e.weak for e in unseen], [e.strong for e in unseen]
    perfect = curve([s - w for w, s in zip(weak, strong)], weak, strong)
    assert held.calls_for(0.95) == perfect.calls_for(0.95)  # the hard prompts first, every one of them
    assert held.apgr() == pytest.approx(perfect.apgr(), abs=0.005)
    assert model.validation["apgr"] > 0.8  # the cross-validated figure says the same (perfect is about 0.85)


def test_training_is_reproducible_byte_for_byte(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "data.jsonl", synthetic(200, seed=3))
    outputs = []
    for name in ("a.json.gz", "b.json.gz"):
        proc = llmroute("router", "train", "--data", str(data), "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
        assert "APGR" in proc.stdout
        outputs.append((tmp_path / name).read_bytes())
    assert outputs[0] == outputs[1]
    assert QualityRouter.load(tmp_path / "a.json.gz").meta["examples"] == 200


@pytest.mark.skipif(not SHARED.exists(), reason="the shared routing data is not beside this checkout")
def test_training_on_the_shared_data_reproduces_the_shipped_model(tmp_path: Path) -> None:
    out = tmp_path / "model.json.gz"
    proc = llmroute("router", "train", "--data", str(SHARED), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == PACKAGED.read_bytes()


@pytest.mark.parametrize(("line", "problem"), [
    ('{"prompt": "x", "scores": {"weak": "n/a", "strong": 1}}', "line 2: scores.weak must be a number"),
    ('{"prompt": "x"}', "line 2: missing field 'scores'"),
])
def test_bad_training_data_names_the_line(tmp_path: Path, line: str, problem: str) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "fine", "scores": {"weak": 0, "strong": 1}}\n' + line + "\n")
    proc = llmroute("router", "train", "--data", str(data), "--out", str(tmp_path / "m.json.gz"))
    assert proc.returncode == 2 and f"{data}, {problem}" in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr and not (tmp_path / "m.json.gz").exists()


def test_empty_and_tiny_training_data_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc = llmroute("router", "train", "--data", str(empty), "--out", str(tmp_path / "m.json.gz"))
    assert proc.returncode == 2 and "no examples" in proc.stderr
    tiny = write_jsonl(tmp_path / "tiny.jsonl", synthetic(12, seed=4))
    proc = llmroute("router", "train", "--data", str(tiny), "--out", str(tmp_path / "m.json.gz"))
    assert proc.returncode == 2 and "at least 50 examples" in proc.stderr


@pytest.mark.parametrize(("content", "problem"), [
    (b"not a model", "not a readable model file"),
    (gzip.compress(b'{"format": "something-else"}'), "not an llmroute quality model"),
    (orjson.dumps({"format": "llmroute-quality-router", "version": 99}), "format version 99"),
])
def test_bad_model_files_are_named(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "model.json.gz"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=problem) as info:
        QualityRouter.load(path)
    assert str(path) in str(info.value)
    with pytest.raises(ModelError, match="file not found"):
        QualityRouter.load(tmp_path / "missing.json.gz")


def test_eval_prints_every_benchmark_and_overall_with_random(tmp_path: Path, shipped: QualityRouter) -> None:
    rows = synthetic(300, seed=5)
    data = write_jsonl(tmp_path / "eval.jsonl", rows)
    plot = tmp_path / "curve.png"
    proc = llmroute("router", "eval", "--data", str(data), "--plot", str(plot), "--json")
    assert proc.returncode == 0, proc.stderr
    results = {r["benchmark"]: r for r in json.loads(proc.stdout)["results"]}
    assert list(results) == ["overall", "calc", "mixed"]
    examples = load_examples(data)
    mixed = [e for e in examples if e.benchmark == "mixed"]
    expected = curve(shipped.score_many(e.prompt for e in mixed), [e.weak for e in mixed], [e.strong for e in mixed])
    assert results["mixed"]["apgr"] == pytest.approx(expected.apgr())
    assert results["mixed"]["calls_for_95"] == expected.calls_for(0.95)
    assert results["mixed"]["quality_at_20"] == pytest.approx(expected.at(0.2))
    assert results["overall"]["random_apgr"] == pytest.approx(0.5)
    assert results["overall"]["prompts"] == 300
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = llmroute("router", "eval", "--data", str(data))
    for word in ("overall", "calc", "mixed", "calls for 95%", "APGR", "quality @20%", "random"):
        assert word in table.stdout


def test_split_holds_out_whole_subjects(tmp_path: Path) -> None:
    rows = synthetic(400, seed=6)
    data = write_jsonl(tmp_path / "all.jsonl", rows)
    proc = llmroute("router", "split", "--data", str(data), "--train-out", str(tmp_path / "t.jsonl"),
                    "--valid-out", str(tmp_path / "v.jsonl"))
    assert proc.returncode == 0, proc.stderr
    kept, held = load_examples(tmp_path / "t.jsonl"), load_examples(tmp_path / "v.jsonl")
    assert len(kept) + len(held) == 400 and {e.id for e in kept}.isdisjoint({e.id for e in held})
    for benchmark in ("mixed", "calc"):
        assert {e.subject for e in kept if e.benchmark == benchmark}.isdisjoint(
            {e.subject for e in held if e.benchmark == benchmark})


def test_folds_group_subjects_only_where_a_benchmark_has_several() -> None:
    examples = [Example(f"m{i}", "mmlu", "p", 1.0, 1.0, subject=f"s{i % 10}") for i in range(200)]
    examples += [Example(f"g{i}", "gsm8k", "p", 1.0, 1.0, subject="math") for i in range(100)]
    ids = fold_ids(examples, 5, seed=7)
    by_subject: dict[str, set[int]] = {}
    for e, fold in zip(examples, ids):
        by_subject.setdefault(e.subject or "", set()).add(fold)
    assert all(len(folds) == 1 for s, folds in by_subject.items() if s != "math")
    assert by_subject["math"] == {0, 1, 2, 3, 4}  # one subject: split by prompt
    kept, held = split_holdout(examples, 0.2, seed=7)
    assert 0 < len(held) < len(kept)


def test_targets_turn_into_thresholds(shipped: QualityRouter) -> None:
    assert shipped.threshold_for_share(0.0) == float("inf") and shipped.threshold_for_share(1.0) == float("-inf")
    t10, t20, t50 = (shipped.threshold_for_share(s) for s in (0.1, 0.2, 0.5))
    assert t10 > t20 > t50
    share = shipped.share_for_quality(0.95)
    assert shipped.expected_quality(share) >= 0.95 - 1e-9
    assert shipped.expected_quality(max(0.0, share - 0.01)) < 0.95
    assert shipped.expected_quality(1.0) == pytest.approx(1.0)


def _example(row: dict[str, object]) -> Example:
    scores = row["scores"]
    assert isinstance(scores, dict)
    return Example(str(row["id"]), str(row["benchmark"]), str(row["prompt"]), float(scores["weak"]),
                   float(scores["strong"]), subject=str(row["subject"]))


def test_judge_ratings_train_and_evaluate(tmp_path: Path) -> None:
    """Chat data rated by a judge: fractional scores, one benchmark, no subjects."""
    rng = random.Random(8)
    rows = []
    for i in range(240):
        math_task = rng.random() < 0.3
        prompt = (f"Prove that the sum of the first {rng.randint(3, 99)} odd numbers is a perfect square." if math_task
                  else f"Write a friendly note to a colleague about the {rng.choice(TOPICS)} meetup #{i}.")
        weak = round(rng.uniform(0.2, 0.5) if math_task else rng.uniform(0.7, 0.9), 2)
        strong = round(rng.uniform(0.8, 1.0) if math_task else weak + rng.uniform(-0.05, 0.05), 2)
        rows.append({"id": f"chat/{i}", "benchmark": "mt-bench", "prompt": prompt,
                     "scores": {"weak": weak, "strong": min(1.0, max(0.0, strong))}})
    data = write_jsonl(tmp_path / "chat.jsonl", rows)
    model = tmp_path / "chat.json.gz"
    assert llmroute("router", "train", "--data", str(data), "--out", str(model)).returncode == 0
    proc = llmroute("router", "eval", "--data", str(data), "--model", str(model), "--json")
    assert proc.returncode == 0, proc.stderr
    [overall] = json.loads(proc.stdout)["results"]  # one benchmark: the overall row says it all
    assert overall["benchmark"] == "overall" and overall["prompts"] == 240
    assert overall["apgr"] > 0.8 and overall["calls_for_95"] <= 0.35
