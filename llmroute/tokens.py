"""A token-count approximation that needs no download.

Real tokenizers (tiktoken, Hugging Face) fetch their vocabularies at run time,
which llmroute must not do. This counter splits text into words, numbers (up
to three digits a token) and punctuation, and counts a word longer than four
characters as one token per four characters: the usual shape of BPE counts on
English text, but not any real tokenizer's exact count. It is used to estimate
a request's size before routing and by the emulator to fill ``usage``; the cost
of a real request always comes from the provider's own ``usage``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_PIECE = re.compile(r"[A-Za-z]+|\d{1,3}|[^\sA-Za-z\d]")

# Chat templates add a few tokens per message (role header, separators).
TOKENS_PER_MESSAGE = 4


def count_tokens(text: str) -> int:
    """Approximate number of tokens in ``text``."""
    total = 0
    for match in _PIECE.finditer(text):
        n = match.end() - match.start()
        total += 1 if n <= 4 else (n + 3) // 4
    return total


def message_text(content: Any) -> str:
    """The text of an OpenAI message ``content`` (a string or a list of parts).

    Parts whose ``text`` is not a string (an image part, or a malformed one) add nothing: this runs on
    whatever a caller sends, before any provider has judged it.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            text for part in content if isinstance(part, Mapping) and isinstance(text := part.get("text"), str)
        )
    return ""


def count_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    """Approximate prompt tokens of a chat request, template overhead included."""
    total = 0
    for message in messages:
        total += TOKENS_PER_MESSAGE + count_tokens(message_text(message.get("content")))
    return total


def estimate_tokens(text: str) -> int:
    """A cheaper estimate for routing decisions: about four characters per token.

    Routing needs the order of magnitude of a request, and this runs on every
    request, so it avoids the regex of ``count_tokens``.
    """
    return (len(text) + 3) // 4


def estimate_message_tokens(messages: Iterable[Mapping[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        total += TOKENS_PER_MESSAGE + estimate_tokens(content if isinstance(content, str) else message_text(content))
    return total


def prompt_estimate(body: Mapping[str, Any]) -> int:
    """The estimated prompt tokens of an OpenAI chat (``messages``) or completions (``prompt``) body.

    The gateway computes it once per request and hands the same number to a key's tpm, the budgets and
    routing, so the three never disagree about a request's size (and the body is walked once)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return estimate_message_tokens(messages)
    return estimate_tokens(str(body.get("prompt", "")))
