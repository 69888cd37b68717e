"""Labelled mode: emulated providers answer known prompts right or wrong by a truth tests can read
(``Labels.is_correct``), and judge answers to them from that truth; over HTTP to emulators on loopback."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel

from llmroute.emulator import EmulatorSettings, EmulatorThread, Labels, get_profile

FACTS = [("Capital of France?", "Paris"), ("Capital of Italy?", "Rome"), ("2 + 2 =", "4"), ("Largest planet?", "Jupiter")]


class Lead(BaseModel):
    label: str
    score: int


def write_labels(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def many(n: int) -> list[dict[str, Any]]:
    return [{"prompt": f"Question {i}: what is {i} squared?", "answer": str(i * i)} for i in range(n)]


HTTP = httpx.Client(timeout=10)  # one keep-alive pool: hundreds of short requests


def ask(emu: EmulatorThread, prompt: str, system: str | None = None, **body: Any) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    resp = HTTP.post(emu.base_url + "/chat/completions", json={"model": "m", "messages": messages, **body})
    assert resp.status_code == 200, resp.text
    return resp.json()["choices"][0]["message"]["content"]


def ask_streamed(emu: EmulatorThread, prompt: str) -> str:
    c = openai.OpenAI(base_url=emu.base_url, api_key="unused", max_retries=0)
    stream = c.chat.completions.create(model="m", messages=[{"role": "user", "content": prompt}], stream=True)
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def labelled(profile: str, labels: Labels, **settings: Any) -> EmulatorThread:
    return EmulatorThread(EmulatorSettings(get_profile(profile), speed=math.inf, labels=labels, **settings))


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Labels, dict[str, EmulatorThread]]]:
    labels = Labels.load(write_labels(tmp_path / "labels.jsonl", many(300)), seed=3)
    with labelled("cerebras", labels) as strong, labelled("runpod", labels) as weak:
        yield labels, {"cerebras": strong, "runpod": weak}


def test_answers_follow_the_truth_at_each_profiles_accuracy(pair: tuple[Labels, dict[str, EmulatorThread]]) -> None:
    labels, emus = pair
    shares = {}
    for name, emu in emus.items():
        right = 0
        for label in labels:
            answer = ask(emu, label.prompt)
            truth = labels.is_correct(name, label.prompt)
            assert (answer == label.answer) is truth
            assert labels.grade(label.prompt, answer) is truth
            right += truth
        shares[name] = right / len(labels)
    # 300 seeded coins at 0.9 and 0.75 (the profiles' accuracy): the shares fall near them
    assert 0.84 < shares["cerebras"] < 0.96 and 0.67 < shares["runpod"] < 0.83


def test_the_same_seed_gives_the_same_answers_and_another_seed_others(tmp_path: Path) -> None:
    path = write_labels(tmp_path / "l.jsonl", many(100))
    first, same, other = (Labels.load(path, seed=s) for s in (1, 1, 2))
    prompts = [label.prompt for label in first]
    truth = [first.is_correct("runpod", p) for p in prompts]
    assert truth == [same.is_correct("runpod", p) for p in prompts]
    assert truth != [other.is_correct("runpod", p) for p in prompts]
    with labelled("runpod", first) as a, labelled("runpod", same, seed=9) as b:  # the emulator's seed: text only
        assert [ask(a, p) for p in prompts[:20]] == [ask(b, p) for p in prompts[:20]]


def test_explicit_truth_wrong_answers_and_streams(tmp_path: Path) -> None:
    records = [{"prompt": q, "answer": a, "wrong": "Lyon" if a == "Paris" else ["x", "y"],
                "correct": {"cerebras": i % 2 == 0, "runpod": i % 2 == 1}} for i, (q, a) in enumerate(FACTS)]
    labels = Labels.load(write_labels(tmp_path / "l.jsonl", records))
    with labelled("cerebras", labels) as emu:
        assert ask(emu, "Capital of France?") == "Paris" and ask_streamed(emu, "Capital of France?") == "Paris"
        assert ask(emu, "Capital of Italy?") in ("x", "y")
        assert ask(emu, "Capital of France?", system="Be brief.") == "Paris"  # the last user message is matched
        unlabelled = ask(emu, "Tell me about lead scoring")
        assert unlabelled and all(unlabelled != a for _, a in FACTS)  # today's made-up text
    with labelled("runpod", labels) as emu:
        assert ask(emu, "Capital of France?") == "Lyon"


def test_structured_gold_comes_as_json_and_wrong_differs_in_the_label(tmp_path: Path) -> None:
    records = [{"prompt": f"Qualify lead {i}", "answer": {"label": ["hot", "warm", "cold"][i % 3], "score": i % 10}}
               for i in range(60)]
    labels = Labels.load(write_labels(tmp_path / "l.jsonl", records), seed=0)
    schema = {"name": "Lead", "schema": Lead.model_json_schema()}
    with labelled("runpod", labels) as emu:
        c = openai.OpenAI(base_url=emu.base_url, api_key="unused", max_retries=0)
        wrong = 0
        for record in records:
            prompt = record["prompt"]
            text = ask(emu, prompt, response_format={"type": "json_schema", "json_schema": schema})
            value = json.loads(text)
            parsed = c.chat.completions.parse(model="m", messages=[{"role": "user", "content": prompt}],
                                              response_format=Lead).choices[0].message.parsed
            assert parsed.model_dump() == value
            if labels.is_correct("runpod", prompt):
                assert value == record["answer"]
            else:
                wrong += 1
                assert value["label"] != record["answer"]["label"] and value["label"] in ("hot", "warm", "cold")
                assert value["score"] == record["answer"]["score"]
            assert labels.grade(prompt, text) is labels.is_correct("runpod", prompt)
        assert wrong  # the weak profile gets some wrong


PAIRWISE = ("[User Question]\n{q}\n\n[The Start of Assistant A's Answer]\n{a}\n[The End of Assistant A's Answer]\n\n"
            "[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]\n\n"
            "Output your final verdict: \"[[A]]\", \"[[B]]\" or \"[[C]]\" for a tie.")
RATING = ("[Question]\n{q}\n\n[The Start of Assistant's Answer]\n{a}\n[The End of Assistant's Answer]\n\n"
          "Rate the response from 1 to 10 as \"Rating: [[5]]\".")


def verdict(text: str) -> str:
    return text.rsplit("[[", 1)[1].split("]]", 1)[0]


def test_the_judge_answers_from_the_truth(tmp_path: Path) -> None:
    labels = Labels.load(write_labels(tmp_path / "l.jsonl", [{"prompt": q, "answer": a} for q, a in FACTS]))
    with labelled("cerebras", labels) as judge:
        cases = [("Paris", "Lyon", "A"), ("Lyon", "paris.", "B"), ("Paris", "Paris", "C"), ("Lyon", "Nice", "C")]
        for a, b, expected in cases:
            assert verdict(ask(judge, PAIRWISE.format(q="Capital of France?", a=a, b=b))) == expected
        # the question as a grader sends it: the system prompt, then the user's message
        assert verdict(ask(judge, PAIRWISE.format(q="You are terse.\nCapital of Italy?", a="Milan", b="Rome"))) == "B"
        assert verdict(ask(judge, RATING.format(q="2 + 2 =", a="4"))) == "10"
        assert verdict(ask(judge, RATING.format(q="2 + 2 =", a="5"))) == "1"
        assert "[[" not in ask(judge, PAIRWISE.format(q="Unknown question?", a="x", b="y"))  # not labelled: as today


def test_a_noisy_judge_flips_about_that_share_of_verdicts(tmp_path: Path) -> None:
    records = many(200)
    labels = Labels.load(write_labels(tmp_path / "l.jsonl", records))
    with labelled("cerebras", labels, judge_noise=0.2) as judge:
        flipped = sum(verdict(ask(judge, RATING.format(q=r["prompt"], a=r["answer"]))) == "1" for r in records)
        again = sum(verdict(ask(judge, RATING.format(q=r["prompt"], a=r["answer"]))) == "1" for r in records)
    assert flipped == again and 0.12 < flipped / len(records) < 0.28


def test_bad_label_lines_are_named(tmp_path: Path) -> None:
    for line, message in [("{not json", "line 2"), ('{"prompt": "p"}', "'answer'"),
                          ('{"prompt": "p", "answer": "a", "wrong": "A."}', "same as 'answer'"),
                          ('{"prompt": "p", "answer": "a", "correct": {"x": 1}}', "'correct'"),
                          ('{"prompt": "Capital of France?", "answer": "a"}', "labelled twice")]:
        path = tmp_path / "bad.jsonl"
        path.write_text(json.dumps({"prompt": FACTS[0][0], "answer": FACTS[0][1]}) + "\n" + line + "\n")
        with pytest.raises(ValueError, match="bad.jsonl") as info:
            Labels.load(path)
        assert message in str(info.value)


def test_the_emulate_command_takes_labels_accuracy_and_seed(tmp_path: Path) -> None:
    path = write_labels(tmp_path / "labels.jsonl", many(80))
    proc = subprocess.Popen([sys.executable, "-m", "llmroute.cli", "emulate", "--profile", "runpod", "--port", "0",
                             "--speed", "inf", "--labels", str(path), "--accuracy", "0.5", "--seed", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base_url = line.rsplit(" at ", 1)[1].strip()
        truth = Labels.load(path, seed=4, accuracy={"runpod": 0.5})
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
        right = 0
        for label in truth:
            answer = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": label.prompt}]).choices[0].message.content
            assert (answer == label.answer) is truth.is_correct("runpod", label.prompt)
            right += answer == label.answer
        assert 0.3 < right / len(truth) < 0.7
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p"}\n')
    failed = subprocess.run([sys.executable, "-m", "llmroute.cli", "emulate", "--labels", str(bad), "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode != 0 and "bad.jsonl: line 1: 'answer' must be" in failed.stderr


def test_the_judge_grader_gets_the_truth_from_a_labelled_emulator(tmp_path: Path) -> None:
    """The graders' own Judge, in both modes, against a labelled emulator: grades are the truth."""
    from llmroute.graders.judge import Judge, JudgeReply

    facts = [*FACTS, ("Which list is [[1, 2]]? Answer [The End of Assistant A's Answer]", "the first")]
    labels = Labels.load(write_labels(tmp_path / "l.jsonl", [{"prompt": q, "answer": a} for q, a in facts]))

    async def grades(base_url: str) -> list[tuple[str, float | None, float | None]]:
        async with httpx.AsyncClient(base_url=base_url) as http:
            async def ask(messages: list[dict]) -> JudgeReply:
                resp = await http.post("/chat/completions", json={"model": "judge", "messages": messages})
                return JudgeReply(resp.json()["choices"][0]["message"]["content"], 0.0)

            out = []
            for mode in ("pairwise", "rating"):
                judge = Judge(ask, mode=mode)  # type: ignore[arg-type]
                for question, candidate, reference in [
                    ("Capital of France?", "Paris", "Lyon"), ("Capital of France?", "Nice", "paris"),
                    ("You are terse.\nCapital of Italy?", "Rome", "Rome"), ("2 + 2 =", "5", "3"),
                    (facts[-1][0], "The first.", "the second"),
                ]:
                    judged = await judge.judge(question, candidate, reference)
                    out.append((mode, judged.candidate.score, judged.reference.score))
            return out

    with labelled("cerebras", labels) as judge_emu:
        got = asyncio.run(grades(judge_emu.base_url))
    assert got == [("pairwise", 1.0, 0.0), ("pairwise", 0.0, 1.0), ("pairwise", 0.5, 0.5), ("pairwise", 0.5, 0.5),
                   ("pairwise", 1.0, 0.0),
                   ("rating", 1.0, 0.0), ("rating", 0.0, 1.0), ("rating", 1.0, 1.0), ("rating", 0.0, 0.0),
                   ("rating", 1.0, 0.0)]
