"""``quality collect``: both tiers answer your own prompts, a grader scores each pair, labels come out.

The labels are routing data (``quality/data.py``: ``prompt``, ``scores.weak``, ``scores.strong``), so
``router train`` and ``router eval`` read them as they are. Three promises shape this module:

- **Never over the cap.** Before a prompt is sent, its worst case is reserved: for a token-priced
  provider the request's JSON bytes as prompt tokens (a byte-level tokenizer never makes more tokens
  than bytes) plus ``max_tokens``; for a GPU-second provider its whole timeout. What was not spent is
  given back when the answer is priced. Reservations are taken on the event loop, so concurrent
  prompts cannot overdraw. The cap counts every run on the same ``--out``, resumes included.
- **Never pay twice.** Every call's outcome is appended to ``OUT.calls`` (flushed per line) as it
  arrives, keyed by provider, model and request. A re-run answers from there first, so an
  interruption loses at most the calls in flight.
- **Never a made-up score.** A pair that cannot be graded (a call failed, an answer did not parse, the
  judge failed) is written with ``ungraded`` and the reason, and no ``scores``; a re-run tries it again
  from the stored answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from ..config import ProviderConfig, RouterConfig, grader_for
from ..errors import LLMRouteError
from ..graders import Grader, Judge, JudgeReply, PairGrade, get_grader, grade_pair
from ..ledger import Ledger
from ..ledger.pairs import GradedPair
from ..pricing import Pricer, cost_usd
from ..providers import OpenAICompatProvider
from ..quality.data import DataError
from ..state import RouterState
from .calls import CallOutcome, call_once
from .prompts import DEFAULT_MAX_TOKENS, PromptLine

__all__ = ["Budget", "CallLog", "Collector", "RunSummary", "StrategyEstimate", "calls_path", "load_labels",
           "strategy_estimates", "worst_cost_usd"]

GPU_SLACK_S = 1.0
"""A GPU-second call is billed its share of the time between the pricer's begin and end: at most the
timeout plus this."""


# -- money -------------------------------------------------------------------------------


def worst_cost_usd(config: ProviderConfig, body: Mapping[str, Any], timeout_s: float) -> float:
    """The most one call with ``body`` can be billed (see the module docstring)."""
    if config.gpu_priced:
        assert config.price_per_gpu_second is not None
        return (timeout_s + GPU_SLACK_S) * config.price_per_gpu_second / (1 - config.idle_share)
    assert config.price_per_m is not None
    output = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    return cost_usd(config.price_per_m, len(orjson.dumps(body)), int(output))


class Budget:
    """A spending cap shared by concurrent calls: reserve the worst case first, settle to the bill after."""

    def __init__(self, max_usd: float, spent_usd: float = 0.0) -> None:
        self.max_usd = max_usd
        self.spent_usd = spent_usd
        self.reserved_usd = 0.0

    def reserve(self, usd: float) -> bool:
        """Hold ``usd`` if the cap allows it (synchronous: no other task runs in between)."""
        if self.spent_usd + self.reserved_usd + usd > self.max_usd:
            return False
        self.reserved_usd += usd
        return True

    def settle(self, reserved_usd: float, cost_usd: float) -> None:
        self.reserved_usd = max(0.0, self.reserved_usd - reserved_usd)
        self.spent_usd += cost_usd


# -- the sidecar of calls ----------------------------------------------------------------


def calls_path(out: Path) -> Path:
    return out.with_name(out.name + ".calls")


def _call_key(provider: OpenAICompatProvider, body: Mapping[str, Any]) -> str:
    data = orjson.dumps({"p": provider.name, "m": provider.model, "b": body}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(data).hexdigest()


class CallLog:
    """Every call's outcome, one JSON line each, appended and flushed as it arrives.

    Answers found here are not asked for again; failed calls are (only their cost is kept). A line
    cut short by a kill is ignored.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.answers: dict[str, CallOutcome] = {}
        self.spent_usd = 0.0
        text = path.read_bytes() if path.exists() else b""
        for raw in text.split(b"\n"):
            try:
                row = orjson.loads(raw)
                outcome = CallOutcome(row["provider"], row["text"], float(row["cost_usd"]), row["error"],
                                      float(row["latency_ms"]), row.get("usage"))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            self.spent_usd += outcome.cost_usd
            if outcome.error is None and isinstance(outcome.text, str):
                self.answers[row["key"]] = outcome
        self._file = path.open("ab")
        if text and not text.endswith(b"\n"):
            self._file.write(b"\n")  # the torn line stays alone, and ignored

    def add(self, key: str, outcome: CallOutcome) -> None:
        row = {"key": key, "provider": outcome.provider, "text": outcome.text, "cost_usd": outcome.cost_usd,
               "error": outcome.error, "latency_ms": round(outcome.latency_ms, 3), "usage": outcome.usage}
        self._file.write(orjson.dumps(row) + b"\n")
        self._file.flush()
        if outcome.error is None:
            self.answers[key] = outcome

    def close(self) -> None:
        self._file.close()


# -- labels ------------------------------------------------------------------------------


def load_labels(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(graded rows, ungraded rows, torn lines dropped) of an existing labels file.

    A line this command did not write is an error naming it; only the last line may be torn (a kill
    while it was written).
    """
    if not path.exists():
        return [], [], 0
    graded: list[dict[str, Any]] = []
    ungraded: list[dict[str, Any]] = []
    raw_lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    torn = 0
    for number, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("key"), str):
            if number == len(raw_lines):  # the last line, with no newline after it: cut short by a kill
                torn += 1
                continue
            raise DataError(f"{path}, line {number}: not a line written by quality collect; use another --out")
        (graded if isinstance(row.get("scores"), dict) else ungraded).append(row)
    return graded, ungraded, torn


def _label(line: PromptLine, reference: CallOutcome, candidate: CallOutcome, grade: PairGrade | None,
           note: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"id": line.id, "key": line.key, "benchmark": line.benchmark, "prompt": line.prompt}
    if line.given_messages:
        row["messages"] = line.messages
    if grade is not None and grade.graded:
        row["scores"] = {"weak": grade.candidate.score, "strong": grade.reference.score}
    else:
        row["ungraded"] = note or (grade.note if grade is not None else None) or "not graded"
    row.update({
        "grader": grade.grader if grade is not None else None, "tags": line.tags, "gold": line.gold,
        "reference_provider": reference.provider, "candidate_provider": candidate.provider,
        "reference_answer": reference.text, "candidate_answer": candidate.text,
        "reference_cost_usd": reference.cost_usd, "candidate_cost_usd": candidate.cost_usd,
        "judge_cost_usd": grade.cost_usd if grade is not None else 0.0,
    })
    return row


# -- the run -----------------------------------------------------------------------------


@dataclass(slots=True)
class RunSummary:
    prompts: int = 0
    skipped: int = 0
    """Already labelled (graded) by an earlier run on this --out."""
    graded: int = 0
    ungraded: int = 0
    left: int = 0
    """Not done: the cap would have been passed (``capped``), or the run was interrupted."""
    capped: bool = False
    """Stopped because the next prompt would have passed the spending cap."""
    reused_answers: int = 0
    spent_usd: float = 0.0
    """This run's spend."""
    total_spent_usd: float = 0.0
    """Every run's spend on this --out (the cap's measure)."""
    ungraded_reasons: dict[str, int] = field(default_factory=dict)


class Collector:
    """Sends each prompt to both tiers, grades the pair and appends its label."""

    def __init__(
        self, config: RouterConfig, providers: Mapping[str, OpenAICompatProvider], pricers: Mapping[str, Pricer],
        state: RouterState, *, reference: str, candidate: str, out: Path, max_usd: float, concurrency: int = 4,
        grader: str | None = None, max_tokens: int = DEFAULT_MAX_TOKENS,
        on_done: Callable[[RunSummary], None] | None = None, ledger: Ledger | None = None,
    ) -> None:
        """``ledger``: also record each pair there (``source="collect"``), so that ``quality`` reports and
        ``plan`` measure from it; text only with ``shadow.store_text``, as for shadow pairs."""
        self.config = config
        self.providers, self.pricers, self.state = providers, pricers, state
        self.reference, self.candidate = reference, candidate
        self.out = out
        self.max_tokens = max_tokens
        self.concurrency = concurrency
        self.grader = grader
        self.on_done = on_done
        self.summary = RunSummary()
        self.log = CallLog(calls_path(out))
        self.budget = Budget(max_usd, self.log.spent_usd)
        self._graders: dict[str, Grader | Judge] = {}
        self._stop = False
        self.ledger = ledger
        self._scorer: Any = None

    # -- graders

    def grader_name(self, line: PromptLine) -> tuple[str, dict[str, Any]]:
        """The line's grader: a ``graders`` rule by tag, else ``--grader``, else exact against a gold answer,
        else ``shadow.grader``."""
        default = self.grader or ("exact" if line.gold is not None else self.config.shadow.grader)
        return grader_for(self.config.graders, default, None, None, line.tags)

    def build_grader(self, name: str, options: Mapping[str, Any]) -> Grader | Judge:
        """Built once per name and options; a name that cannot be built raises ValueError."""
        cache_key = orjson.dumps([name, options], option=orjson.OPT_SORT_KEYS).decode()
        built = self._graders.get(cache_key)
        if built is None:
            if name == "judge":
                judge = self.config.judge
                built = Judge(self._ask, mode=judge.mode, rubric=judge.rubric)
            else:
                built = get_grader(name, **options)
            self._graders[cache_key] = built
        return built

    def check_graders(self, lines: Iterable[PromptLine]) -> None:
        """Build every grader the lines need now, so a bad one fails before anything is paid."""
        for line in lines:
            self.build_grader(*self.grader_name(line))

    async def _ask(self, messages: list[dict]) -> JudgeReply:
        """The judge's reply through ``call_once``; a reply reused from the log costs nothing now."""
        judge = self.config.judge
        name = self.config.judge_provider()
        body = {"messages": messages, "temperature": 0, "max_tokens": judge.max_tokens}
        reused = _call_key(self.providers[name], body) in self.log.answers
        outcome = await self._call(name, body, judge.timeout_s)
        if outcome is None:
            return JudgeReply(None, 0.0, "budget: the spending cap would be passed")
        return JudgeReply(outcome.text, 0.0 if reused else outcome.cost_usd, outcome.error)

    async def _call(self, name: str, body: dict[str, Any], timeout_s: float,
                    reserved_usd: float | None = None) -> CallOutcome | None:
        """One call, answered from the log if it was made before; None when the cap does not allow it.
        ``reserved_usd``: its worst case, already reserved by the caller."""
        provider = self.providers[name]
        key = _call_key(provider, body)
        known = self.log.answers.get(key)
        if known is not None:
            self.summary.reused_answers += 1
            return known
        worst = worst_cost_usd(provider.config, body, timeout_s) if reserved_usd is None else reserved_usd
        if reserved_usd is None and not self.budget.reserve(worst):
            self._stop = True
            return None
        outcome = None
        try:
            outcome = await call_once(provider, self.pricers[name], self.state, body, timeout_s=timeout_s,
                                      spare_headroom=True)
        finally:
            self.budget.settle(worst, outcome.cost_usd if outcome is not None else 0.0)
        self.log.add(key, outcome)
        return outcome

    async def _pair(self, line: PromptLine) -> tuple[CallOutcome, CallOutcome, float] | None:
        """Both tiers' answers and what was paid for them now (not for reused ones); None (nothing sent)
        when the cap cannot cover both.

        Both are reserved at once: paying one tier and then being refused the other would waste it."""
        body = line.body(self.max_tokens)
        calls = []
        known = []
        for name in (self.reference, self.candidate):
            provider = self.providers[name]
            known.append(_call_key(provider, body) in self.log.answers)
            timeout_s = provider.config.timeout_s
            calls.append((name, timeout_s, 0.0 if known[-1] else worst_cost_usd(provider.config, body, timeout_s)))
        if not self.budget.reserve(sum(worst for _, _, worst in calls)):
            self._stop = True
            return None
        reference, candidate = await asyncio.gather(*(self._call(n, body, t, w) for n, t, w in calls))
        assert reference is not None and candidate is not None  # reserved above
        paid_usd = sum(o.cost_usd for o, was_known in zip((reference, candidate), known) if not was_known)
        return reference, candidate, paid_usd

    async def _one(self, line: PromptLine) -> tuple[dict[str, Any], float] | None:
        """The line's label and what its two calls cost in this run; None when the cap stopped it."""
        pair = await self._pair(line)
        if pair is None:
            return None
        reference, candidate, paid_usd = pair
        failed = [f"{tier} call failed: {o.error}" for tier, o in (("reference", reference), ("candidate", candidate))
                  if o.error is not None]
        if failed:
            return _label(line, reference, candidate, None, "; ".join(failed)), paid_usd
        grader = self.build_grader(*self.grader_name(line))
        grade = await grade_pair(grader, line.prompt, candidate.text, reference.text, line.gold)
        if self._stop and not grade.graded:
            return None  # the judge was refused by the cap: not done, not a fact about the answers
        return _label(line, reference, candidate, grade, None), paid_usd

    def _quality_score(self, prompt: str) -> float | None:
        """The configured quality model's score, so the ledger's pairs can re-decide quality_aware."""
        if self._scorer is None:
            from ..strategies.quality_aware import load_quality_model

            try:
                self._scorer = load_quality_model(self.config.quality_aware.model)
            except LLMRouteError:
                self._scorer = False
        return self._scorer.score(prompt) if self._scorer else None

    def _record(self, line: PromptLine, row: dict[str, Any], paid_usd: float) -> None:
        """An offline pair in the ledger: nobody was served, so its served tier is the candidate (what
        the pair measures is whether the candidate would have done)."""
        if self.ledger is None:
            return
        scores = row.get("scores") or {}
        store = self.config.shadow.store_text
        self.ledger.record_pair(GradedPair(
            ts=time.time(), request_id=f"collect:{line.id}", route=None, strategy="collect", tags=line.tags,
            key_id=None, quality_score=self._quality_score(line.prompt), route_decision=None,
            served_provider=self.candidate, reference_provider=self.reference, candidate_provider=self.candidate,
            served_tier="candidate", grader=row["grader"] or "none", reference_grade=scores.get("strong"),
            candidate_grade=scores.get("weak"), note=row.get("ungraded"),
            shadow_cost_usd=paid_usd, judge_cost_usd=row["judge_cost_usd"],
            source="collect", prompt=line.prompt if store else None,
            reference_answer=row["reference_answer"] if store else None,
            candidate_answer=row["candidate_answer"] if store else None,
        ))

    async def run(self, lines: list[PromptLine]) -> RunSummary:
        """Label every line not yet graded in ``out``; returns what was done."""
        summary = self.summary
        summary.prompts = len(lines)
        graded, _, _ = load_labels(self.out)
        done = {row["key"] for row in graded}
        todo = [line for line in lines if line.key not in done]
        summary.skipped = len(lines) - len(todo)
        _rewrite(self.out, graded)  # ungraded lines are tried again; a torn last line goes
        started_usd = self.budget.spent_usd
        pending = list(reversed(todo))
        with self.out.open("ab") as labels:
            async def worker() -> None:
                while pending and not self._stop:
                    line = pending.pop()
                    done = await self._one(line)
                    if done is None:
                        pending.append(line)
                        continue
                    row, paid_usd = done
                    labels.write(orjson.dumps(row) + b"\n")
                    labels.flush()
                    self._record(line, row, paid_usd)
                    if "scores" in row:
                        summary.graded += 1
                    else:
                        summary.ungraded += 1
                        reason = str(row["ungraded"]).split(":")[0]
                        summary.ungraded_reasons[reason] = summary.ungraded_reasons.get(reason, 0) + 1
                    summary.spent_usd = self.budget.spent_usd - started_usd
                    if self.on_done is not None:
                        self.on_done(summary)

            try:
                await asyncio.gather(*(worker() for _ in range(max(1, self.concurrency))))
            finally:
                self.log.close()
                summary.left = summary.prompts - summary.skipped - summary.graded - summary.ungraded  # in flight too
                summary.capped = self._stop
                summary.spent_usd = self.budget.spent_usd - started_usd
                summary.total_spent_usd = self.budget.spent_usd
        return summary


def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``rows`` (through a temporary file, so a kill leaves one or the other)."""
    if not path.exists() and not rows:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    tmp.replace(path)


# -- what each strategy would keep -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StrategyEstimate:
    strategy: str
    reference_share: float | None
    """Share of prompts the strategy sends to the reference tier."""
    estimate: Any
    """``quality.retained.Estimate`` (value, low, high, pairs), or None when it cannot be told."""
    note: str | None = None


def strategy_estimates(config: RouterConfig, rows: list[dict[str, Any]], reference: str,
                       candidate: str) -> list[StrategyEstimate]:
    """Quality each strategy would keep on the graded ``rows``, relative to all-reference, with 95% intervals.

    balanced keeps its configured split between the two tiers (prompt-blind); quality_aware sends the
    prompts the quality model scores highest to the reference, at its configured share.
    """
    from ..quality.retained import routed_estimate, split_estimate

    cand = [float(r["scores"]["weak"]) for r in rows]
    ref = [float(r["scores"]["strong"]) for r in rows]
    weights = config.weights()
    pair_weight = weights.get(reference, 0.0) + weights.get(candidate, 0.0)
    balanced_share = weights.get(reference, 0.0) / pair_weight if pair_weight > 0 else None
    estimates = [StrategyEstimate("all-candidate", 0.0, split_estimate(cand, ref, 0.0))]
    if balanced_share is None:
        estimates.append(StrategyEstimate("balanced", None, None, "balanced gives neither tier any weight"))
    else:
        estimates.append(StrategyEstimate("balanced", balanced_share, split_estimate(cand, ref, balanced_share)))
    estimates.append(_quality_aware(config, rows, cand, ref, reference, candidate, routed_estimate))
    estimates.append(StrategyEstimate("all-reference", 1.0, split_estimate(cand, ref, 1.0)))
    return [e if e.estimate is not None or e.note else
            StrategyEstimate(e.strategy, e.reference_share, None, "no estimate: the reference tier never scored above 0")
            for e in estimates]


def _quality_aware(config: RouterConfig, rows: list[dict[str, Any]], cand: list[float], ref: list[float],
                   reference: str, candidate: str, routed_estimate: Callable[..., Any]) -> StrategyEstimate:
    from ..strategies.quality_aware import load_quality_model, target_share

    try:
        model = load_quality_model(config.quality_aware.model)
        share = target_share(config, model)
        scores = model.score_many(str(r["prompt"]) for r in rows)
    except LLMRouteError as exc:
        return StrategyEstimate("quality_aware", None, None, f"quality model not usable: {exc}")
    note = None
    if config.quality_pair() != (reference, candidate):
        strong, weak = config.quality_pair()
        note = f"quality_aware's own pair is {strong} (strong) / {weak} (weak); shown here on {reference} / {candidate}"
    return StrategyEstimate("quality_aware", share, routed_estimate(scores, cand, ref, share), note)
