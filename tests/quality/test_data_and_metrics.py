"""Routing data loading (clear errors naming the line) and the RouteLLM metrics, checked by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmroute.quality import DataError, curve, load_examples, random_curve

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "routing" / "train.jsonl"


def test_perfect_router_curve_by_hand() -> None:
    weak, strong = [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]
    perfect = curve([0.9, 0.8, 0.1, 0.2], weak, strong)
    assert perfect.at(0.0) == 0.5 and perfect.at(0.25) == 0.75 and perfect.at(0.5) == 1.0 and perfect.at(1.0) == 1.0
    assert perfect.calls_for(0.95) == 0.38  # round(0.38 x 4) = 2 prompts: the first grid point with both fixed
    backwards = curve([0.1, 0.2, 0.9, 0.8], weak, strong)
    assert backwards.at(0.5) == 0.5 and backwards.calls_for(0.95) == 0.88
    assert random_curve(weak, strong).apgr() == pytest.approx(0.5)
    assert backwards.apgr() < 0.5 < perfect.apgr()


def test_random_routing_needs_the_linear_share() -> None:
    weak, strong = [0.6] * 10, [0.8] * 10
    line = random_curve(weak, strong)
    # q(f) = 0.6 + 0.2 f reaches 0.95 x 0.8 = 0.76 at f = 0.8
    assert line.calls_for(0.95) == pytest.approx(0.8) and line.at(0.2) == pytest.approx(0.64)


@pytest.mark.parametrize(("line", "problem"), [
    ('{"prompt": "x"}', "missing field 'scores'"),
    ('{"scores": {"weak": 1, "strong": 0}}', "missing field 'prompt'"),
    ('{"prompt": "x", "scores": {"weak": "high", "strong": 0}}', "scores.weak must be a number, got 'high'"),
    ('{"prompt": "x", "scores": {"weak": 1.5, "strong": 0}}', "scores.weak must be in [0, 1]"),
    ('{"prompt": "x", "scores": {"weak": 1}}', "'scores' must be an object with 'weak' and 'strong'"),
    ('{"prompt": "", "scores": {"weak": 1, "strong": 0}}', "'prompt' must be a non-empty string"),
    ("not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_bad_lines_are_named(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "fine", "scores": {"weak": 0, "strong": 1}}\n\n' + line + "\n")
    with pytest.raises(DataError) as info:
        load_examples(path)
    assert f"{path}, line 3: " in str(info.value) and problem in str(info.value)


def test_a_prompt_with_a_unicode_line_separator_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    # A raw U+2028 inside the JSON string, as JSON allows.
    path.write_text('{"prompt": "a\u2028b", "scores": {"weak": 0, "strong": 1}}\n', encoding="utf-8")
    [example] = load_examples(path)
    assert example.prompt == "a\u2028b"


def test_empty_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no examples"):
        load_examples(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="file not found"):
        load_examples(tmp_path / "nope.jsonl")


@pytest.mark.skipif(not SHARED.exists(), reason="the shared routing data is not beside this checkout")
def test_the_shared_training_split_loads() -> None:
    examples = load_examples(SHARED)
    assert len(examples) == 11_892 and {e.benchmark for e in examples} == {"mmlu", "gsm8k"}
    weak, strong = [e.weak for e in examples], [e.strong for e in examples]
    assert random_curve(weak, strong).apgr() == pytest.approx(0.5)
    assert sum(strong) > sum(weak)  # the strong model is better on average
