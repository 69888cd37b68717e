"""Graders on hand-made answers: right, wrong, unparseable and hostile."""

from __future__ import annotations

import dataclasses

import pytest

from llmroute.graders import GRADERS, Grade, Grader, get_grader

MB = 1_000_000
VALID = {"exact": "A", "choice": "A", "number": "1", "json": '{"a": 1}'}


def score(name: str, candidate: object, reference: object, **options: object) -> float | None:
    return get_grader(name, **options).grade("prompt", candidate, reference).score  # type: ignore[arg-type]


# --- interface and registry ---------------------------------------------------------------------


def test_registry_holds_exactly_the_parsing_graders() -> None:
    assert sorted(GRADERS) == ["choice", "exact", "json", "number"]
    for name in GRADERS:
        grader = get_grader(name)
        assert isinstance(grader, Grader)
        assert grader.name == name


@pytest.mark.parametrize("bad", ["judge", "EXACT", "", None])
def test_unknown_grader_lists_the_valid_ones(bad: object) -> None:
    with pytest.raises(ValueError, match="valid graders: choice, exact, json, number"):
        get_grader(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("exact", {"fields": ["a"]}, "bad options"),
        ("number", {"rel_tol": -1}, "rel_tol"),
        ("number", {"abs_tol": float("nan")}, "abs_tol"),
        ("json", {"fields": "label"}, "list of names"),
        ("json", {"tolerances": {"score": float("inf")}}, "tolerance for 'score'"),
    ],
)
def test_bad_options_are_config_errors(name: str, options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        get_grader(name, **options)


def test_grade_is_frozen() -> None:
    grade = get_grader("exact").grade("p", "a", "a")
    assert grade == Grade(score=1.0, parsed=True, reason=None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        grade.score = 0.0  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(GRADERS))
@pytest.mark.parametrize("bad", [None, 42, 4.2, ["A"], {"a": 1}])
def test_non_text_is_unparsed_not_an_exception(name: str, bad: object) -> None:
    grader, valid = get_grader(name), VALID[name]
    assert grader.grade("p", valid, valid) == Grade(1.0, True, None)
    assert grader.grade("p", bad, valid) == Grade(None, False, "candidate is not text")  # type: ignore[arg-type]
    assert grader.grade("p", valid, bad) == Grade(None, False, "reference is not text")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(GRADERS))
@pytest.mark.parametrize(
    "hostile",
    [
        "",
        " \n\t ",
        "x" * MB,
        "(" * MB,
        "{" * MB,
        "[" * MB,
        "answer is " * (MB // 10),
        "#### " * (MB // 5),
        "```" * (MB // 3),
        "1," * (MB // 2),
        "9" * MB,
        "**" * (MB // 2),
        "\x00\ufffd\U0001f600" * 1000,
    ],
)
def test_hostile_answers_return_a_grade(name: str, hostile: str) -> None:
    """Each pattern is bounded; a quadratic one would not return on these 1 MB inputs."""
    grade = get_grader(name).grade(hostile, hostile, hostile)
    assert isinstance(grade, Grade)
    assert grade.parsed == (grade.score is not None)
    assert grade.score is None or 0.0 <= grade.score <= 1.0
    assert grade.parsed or grade.reason


# --- exact ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "reference", "expected"),
    [
        ("Paris", "Paris", 1.0),
        ("  paris.  ", "PARIS", 1.0),
        ("New   York\n City!", "new york city", 1.0),
        ("ﬁve", "five", 1.0),  # NFKC folds the ligature
        ("Ｐａｒｉｓ", "paris", 1.0),  # full-width letters
        ("Straße", "STRASSE", 1.0),  # case folding, not lower()
        ("Paris, France", "Paris", 0.0),
        ("Lyon", "Paris", 0.0),
        ("3.0", "3", 0.0),  # exact is text; numbers are the number grader's
        (b"Paris", "paris", 1.0),
    ],
)
def test_exact(candidate: str, reference: str, expected: float) -> None:
    assert score("exact", candidate, reference) == expected


def test_exact_empty_is_unparsed() -> None:
    grader = get_grader("exact")
    assert grader.grade("p", "  ...  ", "Paris") == Grade(None, False, "candidate: empty answer")
    assert grader.grade("p", "Paris", "") == Grade(None, False, "reference: empty answer")


# --- choice --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(b)", "B"),
        ("[C]", "C"),
        ("**B**", "B"),
        ("D.", "D"),
        ("  J) ", "J"),
        ("The answer is C.", "C"),
        ("Answer: D) because the others are wrong", "D"),
        ("Final answer: **B**", "B"),
        ("The correct option is (c).", "C"),
        ("The answer is option E", "E"),
        ("so the answer is B, I think", "B"),
        ("Working... \\boxed{F}", "F"),
        ("D) because the reaction is exothermic", "D"),
        ("A. Mitochondria", "A"),
        ("Looking at the options, **G** fits best.", "G"),
        ("Ｂ", "B"),  # full-width letter after NFKC
    ],
)
def test_choice_reads_the_letter(answer: str, letter: str) -> None:
    assert score("choice", answer, letter) == 1.0
    other = "A" if letter != "A" else "B"
    assert score("choice", answer, other) == 0.0


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "candidate: no choice letter found"),
        ("I think it depends.", "candidate: no choice letter found"),
        ("A good question with no answer.", "candidate: no choice letter found"),
        ("The answer is a bit subtle.", "candidate: no choice letter found"),
        ("K", "candidate: no choice letter found"),
        ("The answer is A or C.", "candidate: ambiguous: states A, C"),
        ("Answer: B/D", "candidate: ambiguous: states B, D"),
        ("The answer is B. No wait, the answer is D.", "candidate: ambiguous: states B, D"),
        ("Options (A) and (C) are both wrong.", "candidate: ambiguous: marks A, C"),
    ],
)
def test_choice_unparsed(answer: str, reason: str) -> None:
    assert get_grader("choice").grade("p", answer, "A") == Grade(None, False, reason)


def test_choice_reference_is_read_like_the_candidate() -> None:
    assert score("choice", "C", "The answer is (C) since ...") == 1.0
    grade = get_grader("choice").grade("p", "C", "no idea")
    assert grade == Grade(None, False, "reference: no choice letter found")


# --- number --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("#### 42", "42"),
        ("She has 3 + 4 = 7 apples, so 7 * 6 = 42.\n#### 42", "42"),
        ("The answer is $1,234.50", "1234.5"),
        ("The answer is 42 apples, 3 more than yesterday.", "42"),
        ("-3", "-3"),
        ("\u22125", "-5"),  # unicode minus
        ("3/4", "0.75"),
        ("1e3", "1000"),
        ("12,345,678 people", "12345678"),
        ("x = 2, y = 5, total 7", "7"),
        ("#### \uff14\uff12", "42"),  # full-width digits after NFKC
        ("Answer: .5", "0.5"),
        ("\\boxed{18} and then some 3 other words", "18"),
        ("It took 50% longer", "50"),
        ("Thus the answer is: 2. Check: 2 * 3 = 6", "2"),
    ],
)
def test_number_reads_the_final_number(answer: str, value: str) -> None:
    assert score("number", answer, value) == 1.0
    assert score("number", answer, "#### 999") == 0.0


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "candidate: no number found"),
        ("I cannot tell.", "candidate: no number found"),
        ("The answer is 1/0", "candidate: number out of range"),
        ("1e999", "candidate: number out of range"),
        ("9" * MB, "candidate: number out of range"),
    ],
)
def test_number_unparsed(answer: str, reason: str) -> None:
    assert get_grader("number").grade("p", answer, "1") == Grade(None, False, reason)


def test_number_tolerance() -> None:
    assert score("number", "0.333", "1/3") == 0.0
    assert score("number", "0.333", "1/3", rel_tol=1e-2) == 1.0
    assert score("number", "101", "100", rel_tol=0.01) == 1.0
    assert score("number", "102", "100", rel_tol=0.01) == 0.0
    assert score("number", "0.1", "0", abs_tol=0.2) == 1.0
    assert score("number", str(0.1 + 0.2), "0.3") == 1.0  # float noise is not a wrong answer


# --- json ----------------------------------------------------------------------------------------

LEAD = '{"label": "hot", "score": 0.8, "company": "Acme Inc", "employees": 120}'


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (LEAD, 1.0),
        ('{"employees": 120, "company": "ACME inc.", "score": 0.8, "label": " Hot "}', 1.0),
        ('Here it is:\n```json\n{"label": "hot", "score": 0.8, "company": "Acme Inc", "employees": 121}\n```', 0.75),
        ('```\n{"label": "cold", "score": 0.8, "company": "Acme Inc", "employees": 120}\n```', 0.75),
        ('Sure! {"label": "hot", "score": "0.8", "company": "Acme", "employees": 120} Hope it helps.', 0.75),
        ('{"label": "hot"}', 0.25),
        ('{"label": "hot", "score": 0.8, "company": "Acme Inc", "employees": 120, "extra": 1}', 1.0),
        ('{"label": null, "score": true, "company": ["Acme Inc"], "employees": "many"}', 0.0),
    ],
)
def test_json_share_of_fields(candidate: str, expected: float) -> None:
    assert score("json", candidate, LEAD) == expected


def test_json_fields_and_tolerances() -> None:
    candidate = '{"label": "hot", "score": 0.84, "company": "Other", "employees": 130}'
    assert score("json", candidate, LEAD) == 0.25
    assert score("json", candidate, LEAD, fields=["label", "score"]) == 0.5
    assert score("json", candidate, LEAD, fields=["label", "score"], tolerances={"score": 0.1}) == 1.0
    assert score("json", candidate, LEAD, tolerances={"score": 0.1, "employees": 0.1}) == 0.75
    # A requested field missing from both answers agrees; from one only, it does not.
    assert score("json", candidate, LEAD, fields=["label", "notes"]) == 1.0
    assert score("json", '{"notes": "x"}', LEAD, fields=["notes"]) == 0.0


def test_json_nested_and_arrays_compare_whole() -> None:
    ref = '{"contact": {"name": "Ann", "tags": ["a", 1.0]}, "ids": [1, 2]}'
    assert score("json", '{"contact": {"name": "ANN", "tags": ["A", 1]}, "ids": [1, 2]}', ref) == 1.0
    assert score("json", '{"contact": {"name": "Ann", "tags": ["a"]}, "ids": [2, 1]}', ref) == 0.0
    assert score("json", '{"contact": {"name": "Ann", "tags": ["a", 1], "x": 0}, "ids": [1, 2]}', ref) == 0.5


def test_json_nan_agrees_with_nothing_and_infinity_with_itself() -> None:
    assert score("json", '{"a": NaN, "b": 1}', '{"a": NaN, "b": 1}') == 0.5
    assert score("json", '{"a": Infinity}', '{"a": Infinity}') == 1.0
    assert score("json", '{"a": Infinity}', '{"a": 1e308}') == 0.0


@pytest.mark.parametrize(
    ("candidate", "reference", "reason"),
    [
        ("", LEAD, "candidate: no JSON object found"),
        ("label: hot", LEAD, "candidate: no JSON object found"),
        ('{"label": "hot",', LEAD, "candidate: no JSON object found"),
        ("[1, 2, 3]", LEAD, "candidate: expected a JSON object, got list"),
        ('"hot"', LEAD, "candidate: expected a JSON object, got str"),
        ("[" * 100 + "]" * 100, LEAD, "candidate: expected a JSON object, got list"),
        ("[" * 100_000 + "]" * 100_000, LEAD, "candidate: no JSON object found"),
        ("[" * MB, LEAD, "candidate: no JSON object found"),
        ('{"a": ' * 100_000 + "1" + "}" * 100_000, LEAD, "candidate: no JSON object found"),
        ('{"n": ' + "1" * 10_000 + "}", LEAD, "candidate: no JSON object found"),
        (LEAD, "not json", "reference: no JSON object found"),
        (LEAD, "{}", "reference: no fields to compare"),
    ],
)
def test_json_unparsed(candidate: str, reference: str, reason: str) -> None:
    assert get_grader("json").grade("p", candidate, reference) == Grade(None, False, reason)
