"""`llmroute router train --from-ledger`: a quality model trained on the graded pairs the ledger kept."""

from __future__ import annotations

import random
from pathlib import Path

from llmroute.ledger import GradedPair, Ledger, open_store
from llmroute.quality import QualityRouter

from ..test_cli import llmroute

HARD = ["Prove that the sum of the first {n} odd numbers is a perfect square.",
        "Solve for x: {n}x^2 - 3x + 7 = 0 and show every step of the derivation.",
        "Derive the closed form of the recurrence a(n) = 3a(n-1) + {n} with a(0) = 1."]
EASY = ["Say hello to customer number {n}.", "What colour is the sky on day {n}?",
        "Translate 'thank you' into French for ticket {n}."]


def record_pairs(path: Path, *, with_text: bool, n: int = 240) -> None:
    """Hard prompts where only the reference tier is right, easy ones where both are: what shadow evaluation logs."""
    rng = random.Random(7)
    ledger = Ledger(open_store(str(path)), flush_interval_s=0.01)
    for i in range(n):
        hard = i % 2 == 0
        prompt = rng.choice(HARD if hard else EASY).format(n=i)
        ledger.record_pair(GradedPair(
            ts=1_700_000_000.0 + i, request_id=f"req-{i}", route="chat", strategy="balanced", tags=[], key_id=None,
            quality_score=None, route_decision=None, served_provider="runpod", reference_provider="cerebras",
            candidate_provider="runpod", served_tier="candidate", grader="exact",
            reference_grade=1.0, candidate_grade=0.0 if hard else 1.0, note=None, shadow_cost_usd=1e-6,
            judge_cost_usd=0.0, prompt=prompt if with_text else None,
        ))
    ledger.close()


def test_trains_on_stored_pairs_and_ranks_hard_prompts_first(tmp_path: Path) -> None:
    ledger, out = tmp_path / "l.sqlite3", tmp_path / "model.json.gz"
    record_pairs(ledger, with_text=True)
    proc = llmroute("router", "train", "--from-ledger", "--ledger", str(ledger), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    model = QualityRouter.load(out)
    hard = model.score_many([HARD[0].format(n=999), HARD[2].format(n=5)])
    easy = model.score_many([EASY[0].format(n=999), EASY[1].format(n=5)])
    assert min(hard) > max(easy)


def test_pairs_without_text_say_how_to_keep_it(tmp_path: Path) -> None:
    ledger, out = tmp_path / "l.sqlite3", tmp_path / "model.json.gz"
    record_pairs(ledger, with_text=False, n=20)
    proc = llmroute("router", "train", "--from-ledger", "--ledger", str(ledger), "--out", str(out))
    assert proc.returncode != 0 and not out.exists()
    assert "20 graded pairs kept no prompt" in proc.stderr and "shadow.store_text: true" in proc.stderr


def test_data_and_from_ledger_are_exclusive(tmp_path: Path) -> None:
    proc = llmroute("router", "train", "--out", str(tmp_path / "m.json.gz"))
    assert proc.returncode != 0 and "exactly one of --data FILE and --from-ledger" in proc.stderr
