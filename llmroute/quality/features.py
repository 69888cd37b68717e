"""What the quality model sees in a prompt: word n-grams (TF-IDF) and a few hand-built signals.

One implementation serves training and scoring, so a model scores a prompt exactly as it was
trained to. Pure Python on purpose: a prompt is scored in well under a millisecond without
numpy or scikit-learn on the request path. Cost is bounded by ``MAX_CHARS``: a 50,000-character
document is read by its head and tail, while the length signals still see its full size.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

MAX_CHARS = 4000
HEAD_CHARS = 3000

TOKEN = re.compile(r"\w+|[^\w\s]")
NUMBER = re.compile(r"\d+(?:[.,]\d+)?")
# A minus counts only between spaces or before a digit; the look-behind sits after the "-" so the
# engine can skip to candidate characters (3x faster than leading with it, same matches).
MATH = re.compile(r"[=+*/^<>%$\\]|-(?<=\s-)(?=\s|\d)")
OPTIONS = re.compile(r"(?m)^\s*\(?[A-D][.)]\s")
CODE_KEYWORD = re.compile(r"def |return|function")
CODE_LINE_END = re.compile(r"[{};]\s*$", re.M)

HAND_FEATURES = ("log_chars", "log_words", "log_numbers", "log_lines", "math_density", "has_options",
                 "questions", "digit_density", "mean_word_chars", "log_code_marks")


def prompt_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text a routing decision reads: the last user turn, after the system prompt if any.

    The system prompt is context (``"You are a tax lawyer"`` changes how hard a question is);
    earlier turns are not, and would make long chats look hard whatever is asked now.
    """
    system, last_user = "", ""
    for message in messages:
        role = message.get("role")
        if role == "user":
            last_user = _content_text(message.get("content"))
        elif role in ("system", "developer") and not system:
            system = _content_text(message.get("content"))
    return f"{system}\n{last_user}" if system else last_user


def _content_text(content: Any) -> str:
    """A message's text: a string, or its text parts joined; a part whose ``text`` is not a string adds nothing."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, {"type": "image_url", ...}]
        return "\n".join(
            text for part in content
            if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(text := part.get("text"), str)
        )
    return ""


def clip(text: str) -> str:
    """The head and the tail of a long text: the question is usually at one end."""
    if len(text) <= MAX_CHARS:
        return text
    return text[:HEAD_CHARS] + "\n" + text[-(MAX_CHARS - HEAD_CHARS):]


def terms(text: str) -> Counter[str]:
    """Lower-cased word and punctuation unigrams and bigrams of the clipped text, with counts."""
    tokens = TOKEN.findall(clip(text).lower())
    counts = Counter(tokens)
    counts.update(f"{a} {b}" for a, b in zip(tokens, tokens[1:]))
    return counts


def hand_features(text: str) -> list[float]:
    """Size, math, answer-format and code signals, in ``HAND_FEATURES`` order."""
    chars = len(text)
    sample = clip(text)
    words = sample.split()
    n = max(1, len(sample))
    return [
        math.log1p(chars),
        math.log1p(len(words) * chars / n),
        math.log1p(len(NUMBER.findall(sample))),
        math.log1p(text.count("\n")),
        100.0 * len(MATH.findall(sample)) / n,
        1.0 if len(OPTIONS.findall(sample)) >= 2 else 0.0,
        float(min(sample.count("?"), 5)),
        10.0 * sum(map(str.isdigit, sample)) / n,
        sum(map(len, words)) / len(words) if words else 0.0,
        math.log1p(_code_marks(sample)),
    ]


def _code_marks(text: str) -> int:
    """Fences, includes, ``def``/``return``/``function`` as whole words, and lines ending in ``{ } ;``.

    Counted one kind at a time: one regex with every alternative and word boundaries costs 6x more.
    """
    keywords = 0
    for match in CODE_KEYWORD.finditer(text):
        start, end = match.span()
        if start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
            continue
        if match.group() != "def " and end < len(text) and (text[end].isalnum() or text[end] == "_"):
            continue
        keywords += 1
    return text.count("```") + text.count("#include") + keywords + len(CODE_LINE_END.findall(text))


def tfidf(counts: Mapping[str, int], idf: Mapping[str, float]) -> dict[str, float]:
    """Sublinear TF-IDF over the known terms, L2-normalised (scikit-learn's TfidfVectorizer defaults)."""
    weights = {term: (1.0 + math.log(count)) * idf[term] for term, count in counts.items() if term in idf}
    norm = math.sqrt(sum(w * w for w in weights.values()))
    if norm == 0.0:
        return {}
    return {term: w / norm for term, w in weights.items()}
