"""What an open stream keeps of its text: about the text's size, not a string object per chunk."""

from __future__ import annotations

import tracemalloc

from llmroute.stream import TextParts


def test_the_text_so_far_costs_about_its_size() -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        parts = TextParts()
        for n in range(2_000):
            parts.append(f"w{n % 10:d}  ")  # a new 4-character string per chunk, as orjson makes them
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 2 * 2_000 * 4, f"{kept} bytes kept for 8,000 characters of text"
    assert parts.text() == "".join(f"w{n % 10:d}  " for n in range(2_000))


def test_segments_split_the_text_where_a_resume_began() -> None:
    parts = TextParts()
    for n in range(100):
        parts.append(f"a{n} ")
    first = parts.text()
    parts.new_segment()
    for n in range(5):
        parts.append(f"b{n} ")
    assert parts.segment() == "b0 b1 b2 b3 b4 "
    assert parts.text() == first + "b0 b1 b2 b3 b4 "
    assert TextParts().text() == TextParts().segment() == ""
