"""Shadow evaluation: a sample of answered requests also sent to the other tier, the two answers graded.

The client's answer is never delayed or changed. The router hands each answered request to
``Shadow.offer`` (constant time, no await), which samples it and queues it; a bounded set of
background tasks makes the shadow call, grades the pair and records it in the ledger. What does not
fit (queue full, daily budget spent, a provider without a breaker or rate-limit headroom to spare) is
dropped and counted, never waited for.

Both directions are sampled: a request the candidate answered also goes to the reference, and one the
reference answered also goes to the candidate. The pairs then describe the whole traffic, not only
the prompts that went cheap, so retained quality and the cost/quality curve can be measured from them.
Graded pairs feed the live window and drift alarm (``drift.py``); quality_aware's measured strong
share is ``measured.py``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import grader_for
from ..graders import get_grader
from ..graders.judge import Judge, JudgeReply
from ..graders.pair import grade_pair
from ..ledger import RequestContext
from ..ledger.pairs import GradedPair
from ..quality.features import prompt_text
from ..quality.retained import Estimate
from ..result import RouteResult
from ..tokens import estimate_message_tokens, estimate_tokens
from .calls import answer_text, call_once
from .drift import DriftWatch
from .shadow_budget import ShadowBudget, utc_day

if TYPE_CHECKING:
    from ..config import RouterConfig
    from ..ledger import Ledger
    from ..pricing import Pricer
    from ..providers import OpenAICompatProvider
    from ..state import RouterState

log = logging.getLogger("llmroute.shadow")

CHAT_PATH = "/chat/completions"
NOT_SENT = frozenset({"circuit_open", "rate_limit_headroom", "cooling_down"})
"""Outcomes of a shadow call that never reached the provider: dropped and counted, not recorded as pairs."""
LOG_EVERY_S = 10.0
"""Dropped shadow requests are logged at most this often (with the counts since the last line)."""
CLOSE_TIMEOUT_S = 5.0
"""How long closing waits for shadow work in flight before cancelling it."""
SEED_DAYS = 30
"""Graded pairs read back at start-up: today's spend, the live window and a measured quality target."""
BYTES_PER_TOKEN = 16
"""Memory a shadow job is charged per token it holds (``shadow.max_queued_bytes``). Its tokens are counted
generously: the larger of the provider's count and one per four characters of every string in the prompt's
messages (so an image's base64 data counts at its length, not at the few hundred tokens it is billed). Four
characters at up to four bytes each in a Python string cover any text; ASCII takes four, which leaves room
for the served answer being held three times (its text, the parsed body, the raw JSON)."""
JOB_BYTES = 2048
"""Memory a shadow job is charged whatever its size: the job, its result and the request's structure."""


def _nothing(*args: Any) -> None:
    return None


@dataclass(slots=True)
class _Job:
    path: str
    body: Mapping[str, Any]
    result: RouteResult
    context: RequestContext | None
    message: Mapping[str, Any] | None
    held_bytes: int


class Shadow:
    """Samples answered requests at ``shadow.rate`` and grades them against the other tier, in the background.

    ``on_*`` hooks (no-ops by default) let a gateway count what happens: ``on_sampled()``,
    ``on_completed(graded)``, ``on_dropped(reason)``, ``on_spend(kind, usd)``, ``on_estimate(estimate)``.
    """

    def __init__(self, config: RouterConfig, providers: Mapping[str, OpenAICompatProvider],
                 pricers: Mapping[str, Pricer], state: RouterState, ledger: Ledger | None, *,
                 rng: random.Random | None = None) -> None:
        self.config = config
        settings = config.shadow
        self.rate = settings.rate
        self.reference, self.candidate = config.shadow_pair()
        self._other = {self.reference: self.candidate, self.candidate: self.reference}
        self._providers, self._pricers, self._state, self._ledger = providers, pricers, state, ledger
        self.rng = rng or random.Random()
        self.max_in_flight, self.max_queued = settings.max_in_flight, settings.max_queued
        self._queue: deque[_Job] = deque()
        self.max_queued_bytes = settings.max_queued_bytes
        self._tasks: dict[asyncio.Task[None], int] = {}
        """Shadow evaluations running, each with the bytes it was charged."""
        self.held_bytes = 0
        """What the jobs queued and in flight are charged, against ``max_queued_bytes``."""
        self._closing = False
        self.sampled = 0
        self.completed = 0
        self.dropped: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._logged_at = -LOG_EVERY_S
        self.budget = ShadowBudget(config, state)
        self.drift = DriftWatch(settings.window, settings.min_pairs,
                                settings.alert_below or config.quality_aware.target.min_quality or 0.95,
                                on_estimate=lambda estimate: self.on_estimate(estimate))
        self._graders: dict[tuple[str, str], Any] = {}
        self.on_sampled: Callable[[], None] = _nothing
        self.on_completed: Callable[[bool], None] = _nothing
        self.on_dropped: Callable[[str], None] = _nothing
        self.on_spend: Callable[[str, float], None] = _nothing
        self.on_estimate: Callable[[Estimate], None] = _nothing

    # -- the request path --------------------------------------------------------------

    def offer(self, path: str, body: Mapping[str, Any], result: RouteResult, context: RequestContext | None, *,
              message: Mapping[str, Any] | None = None) -> None:
        """Sample an answered request for shadowing: a few comparisons and, when there is room, a size from
        lengths and token counts already known (no serialising); never waits, never raises on a full queue.

        ``message``: the answer as a chat message, when ``result.raw`` does not hold it (a stream's assembled
        tool calls)."""
        other = self._other.get(result.provider)
        if other is None or self.rng.random() >= self.rate:
            return
        n = body.get("n")
        if n is not None and n != 1:  # several answers: no single one to grade
            return
        self.sampled += 1
        self.on_sampled()
        if self._closing:
            self._drop("shutdown")
        elif self._state.breaker(other).retry_in_s() > 0:  # open and not yet due a probe
            self._drop("circuit_open")
        elif self.budget_left_usd() <= 0.0:
            self._drop("budget")
        elif len(self._tasks) >= self.max_in_flight and len(self._queue) >= self.max_queued:
            self._drop("queue_full")
        else:
            job = _Job(path, body, result, context, message, job_bytes(body, result))
            if self.held_bytes + job.held_bytes > self.max_queued_bytes:
                self._drop("queue_bytes")
                return
            self.held_bytes += job.held_bytes
            if len(self._tasks) < self.max_in_flight:
                self._start(job)
            else:
                self._queue.append(job)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1
        self.on_dropped(reason)
        wall = time.monotonic()
        if wall - self._logged_at >= LOG_EVERY_S:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(self._unlogged.items()))
            log.warning("shadow evaluation dropped sampled requests (%s); the client answers were not affected",
                        counts)
            self._unlogged.clear()
            self._logged_at = wall

    def _start(self, job: _Job) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job))
        self._tasks[task] = job.held_bytes
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.held_bytes -= self._tasks.pop(task, 0)
        if not task.cancelled() and task.exception() is not None:
            log.error("shadow evaluation failed: %s", task.exception())
        while self._queue and len(self._tasks) < self.max_in_flight and not self._closing:
            self._start(self._queue.popleft())

    # -- budget ------------------------------------------------------------------------

    def split_budget(self, workers: int) -> None:
        """Each of ``workers`` gateway processes gets an equal share of the daily cap (and of today's spend)."""
        self.budget.split(workers)

    def budget_left_usd(self) -> float:
        return self.budget.left_usd()

    def spent_today_usd(self) -> float:
        """This process's shadow and judge spend today, including what the ledger had when it started."""
        return self.budget.spent_today_usd()

    async def _paid_call(self, provider_name: str, body: dict[str, Any], input_tokens: int, output_tokens: int,
                         timeout_s: float, kind: str, spent: list[float]) -> tuple[str | None, float, str | None]:
        """One call to one provider inside today's budget: (text, cost, error). What it cost is also appended to
        ``spent``, even when the call is cancelled, so the ledger's pair accounts for it."""
        reserved = self.budget.worst_case_usd(provider_name, input_tokens, output_tokens, timeout_s)
        key = self.budget.reserve(reserved)
        if key is None:
            return None, 0.0, "budget: the daily shadow budget is spent"
        cost = reserved
        try:
            outcome = await call_once(self._providers[provider_name], self._pricers[provider_name], self._state, body,
                                      timeout_s=timeout_s, spare_headroom=True,
                                      default_output_tokens=self.config.expected_output_tokens)
            cost = outcome.cost_usd
        finally:  # cancelled mid-call: the reservation stands as its cost, the cap stays safe
            self.budget.settle(key, provider_name, reserved, cost)
            spent.append(cost)
            if cost:
                self.on_spend(kind, cost)
        error = outcome.error
        if error is not None and not self.config.shadow.store_text:
            error = error_kind(error)
        return outcome.text, cost, error

    # -- one shadow evaluation ---------------------------------------------------------

    async def _run(self, job: _Job) -> None:
        result, context = job.result, job.context
        served = result.provider
        other = self._other[served]
        shadow_body = {k: v for k, v in job.body.items() if k not in ("stream", "stream_options")}
        shadow_body["model"] = self._providers[other].model
        input_tokens, output_tokens = _sizes(job.body, result, self.config.expected_output_tokens)
        if not _output_cap(job.body):  # the budget reserved this much output: the call must not pay for more
            shadow_body["max_tokens"] = output_tokens
        note: str | None = None
        shadow_cost: list[float] = []
        judge_cost: list[float] = []
        grades: tuple[float | None, float | None] = (None, None)
        grader_name = self.config.shadow.grader
        texts: dict[str, str | None] = {}
        try:
            text, _, error = await self._paid_call(other, shadow_body, input_tokens, output_tokens,
                                                   self.config.providers[other].timeout_s, "shadow", shadow_cost)
            kind = (error or "").split(":", 1)[0]
            if text is None and (kind in NOT_SENT or kind == "budget"):
                self._drop(kind)
                return
            served_text = _served_text(job)
            texts = {self._tier(served): served_text, self._tier(other): text}
            prompt = _prompt(job)
            tags = context.tags if context is not None else []
            grader_name, options = grader_for(self.config.graders, self.config.shadow.grader,
                                              context.route if context is not None else None, result.strategy, tags)
            if text is None:
                note = f"shadow call to {other} failed: {error}"
            else:
                try:
                    grader = self._grader(grader_name, options, judge_cost)
                except Exception as exc:  # e.g. similarity without its extra installed
                    note = f"grader {grader_name} unavailable: {exc}"
                else:
                    pair = await grade_pair(grader, prompt, texts["candidate"], texts["reference"])
                    grades = (pair.reference.score, pair.candidate.score)
                    note = pair.note
        except asyncio.CancelledError:
            note = "cancelled: the gateway shut down before the pair was graded"
            raise
        except Exception as exc:  # a bug here must cost one pair, not the worker
            log.exception("shadow evaluation of %s failed", result.request_id)
            note = f"internal: {type(exc).__name__}"
        finally:
            if texts or note:
                self._record(job, grader_name, grades, note, sum(shadow_cost) if shadow_cost else None,
                             sum(judge_cost) if judge_cost else None, texts)

    def _tier(self, provider: str) -> str:
        return "reference" if provider == self.reference else "candidate"

    def _grader(self, name: str, options: dict[str, Any], judge_cost: list[float]) -> Any:
        """The grader for a request; a judge adds what each of its calls cost to ``judge_cost``."""
        if name == "judge":
            judge = self.config.judge
            return Judge(self._ask(judge_cost), mode=options.get("mode", judge.mode),
                         rubric=options.get("rubric", judge.rubric))
        key = (name, repr(sorted(options.items())))
        grader = self._graders.get(key)
        if grader is None:
            grader = self._graders[key] = get_grader(name, **options)
        return grader

    def _ask(self, judge_cost: list[float]) -> Callable[[list[dict]], Any]:
        name = self.config.judge_provider()
        judge = self.config.judge

        async def ask(messages: list[dict]) -> JudgeReply:
            body = {"model": self._providers[name].model, "messages": messages, "max_tokens": judge.max_tokens,
                    "temperature": 0}
            text, cost, error = await self._paid_call(name, body, estimate_message_tokens(messages),
                                                      judge.max_tokens, judge.timeout_s, "judge", judge_cost)
            return JudgeReply(text=text, cost_usd=cost, error=error)

        return ask

    def _record(self, job: _Job, grader: str, grades: tuple[float | None, float | None], note: str | None,
                shadow_cost: float | None, judge_cost: float | None, texts: Mapping[str, str | None]) -> None:
        result, context = job.result, job.context
        reference_grade, candidate_grade = grades
        store = self.config.shadow.store_text
        pair = GradedPair(
            ts=time.time(), request_id=result.request_id or "", route=context.route if context else None,
            strategy=result.strategy, tags=list(context.tags) if context else [],
            key_id=context.key_id if context else None, quality_score=result.quality_score,
            route_decision=result.route_decision, served_provider=result.provider,
            reference_provider=self.reference, candidate_provider=self.candidate,
            served_tier=self._tier(result.provider), grader=grader, reference_grade=reference_grade,
            candidate_grade=candidate_grade, note=note, shadow_cost_usd=shadow_cost, judge_cost_usd=judge_cost,
            source="shadow", prompt=_prompt(job) if store else None,
            reference_answer=texts.get("reference") if store else None,
            candidate_answer=texts.get("candidate") if store else None,
        )
        if self._ledger is not None:
            self._ledger.record_pair(pair)
        served_grade = pair.served_grade
        self.completed += 1
        self.on_completed(served_grade is not None and reference_grade is not None)
        if served_grade is not None and reference_grade is not None:
            self.drift.add(served_grade, reference_grade)

    @property
    def estimate(self) -> Estimate | None:
        """Retained quality over the latest ``shadow.window`` graded pairs, once computed."""
        return self.drift.estimate

    @property
    def alert_below(self) -> float:
        return self.drift.alert_below

    # -- start, drain, close -----------------------------------------------------------

    def seed(self, pairs: Sequence[GradedPair], spent_today_usd: float | None = None) -> None:
        """Pick up where a previous run stopped: today's spend (so a restart does not reset the budget; summed
        from ``pairs`` unless the ledger's own total is given) and the latest graded pairs for the live estimate."""
        if spent_today_usd is None:
            today = utc_day()
            spent_today_usd = sum((p.shadow_cost_usd or 0.0) + (p.judge_cost_usd or 0.0)
                                  for p in pairs if p.source == "shadow" and utc_day(p.ts) == today)
        self.budget.seed(spent_today_usd)
        self.drift.seed(pairs, self.reference, self.candidate)

    def start(self) -> None:
        """From inside the event loop: compute the estimate of the pairs read back at start-up."""
        self.drift.refresh()

    async def drain(self) -> None:
        """Wait until every sampled request has been graded and recorded, and the estimate is up to date."""
        while True:
            if not self._tasks:
                self.drift.refresh()
            computing = self.drift.computing
            waiting = {*self._tasks, *((computing,) if computing is not None else ())}
            if not waiting:
                return
            await asyncio.wait(waiting)

    async def aclose(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Stop sampling; give work in flight ``timeout_s`` to finish, then cancel it (recording what it can)."""
        self._closing = True
        self.drift.stop()
        while self._queue:
            self.held_bytes -= self._queue.popleft().held_bytes
            self._drop("shutdown")
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        self.drift.close()

    def snapshot(self) -> dict[str, Any]:
        """What ``/router/state`` shows: no prompt, answer or key."""
        estimate = self.estimate
        return {
            "rate": self.rate, "reference": self.reference, "candidate": self.candidate,
            "in_flight": len(self._tasks), "queued": len(self._queue), "held_bytes": self.held_bytes,
            "max_queued_bytes": self.max_queued_bytes, "sampled": self.sampled,
            "completed": self.completed, "dropped": dict(self.dropped),
            "spent_today_usd": round(self.spent_today_usd(), 9),
            "cap_usd_per_day": self.budget.cap_usd, "workers": self.budget.workers,
            "retained": None if estimate is None else {"estimate": estimate.value, "low": estimate.low,
                                                        "high": estimate.high, "pairs": estimate.pairs},
            "alert_below": self.alert_below,
        }


def error_kind(error: str) -> str:
    """A call's error without the provider's message: the kind and HTTP status only. Providers echo what they
    were sent (the prompt, a key) in their errors, and notes are stored whatever ``store_text`` says."""
    kind = error.split(":", 1)[0]
    status = _HTTP_STATUS.search(error)
    return f"{kind} (HTTP {status.group(1)})" if status else kind


_HTTP_STATUS = re.compile(r"\(HTTP (\d{3})\)$")


def job_bytes(body: Mapping[str, Any], result: RouteResult) -> int:
    """What a shadow job holds in memory, roughly and from above: the request's prompt and the served answer
    at ``BYTES_PER_TOKEN`` a token. Lengths and counts only (no serialising): a few operations per message."""
    messages = body.get("messages")
    prompt = body.get("prompt")
    if isinstance(messages, list):
        chars = 0
        for message in messages:  # the router has read each one's content already
            content = message.get("content")
            chars += len(content) if isinstance(content, str) else _parts_chars(content)
    elif isinstance(prompt, str):
        chars = len(prompt)
    else:  # token ids (a pointer and an int each, about 36 bytes): three times the provider's count
        chars = 12 * result.prompt_tokens
    answer = max(result.completion_tokens, estimate_tokens(result.text))
    return JOB_BYTES + BYTES_PER_TOKEN * (max(result.prompt_tokens, (chars + 3) // 4) + answer)


def _parts_chars(content: Any) -> int:
    """Characters in a message's content parts: every string one level into each part (the text, an image's
    URL or base64 data, an audio clip's data)."""
    chars = 0
    if isinstance(content, list):
        for part in content:
            if _is_mapping(part):
                for value in part.values():
                    if isinstance(value, str):
                        chars += len(value)
                    elif _is_mapping(value):
                        chars += sum(len(v) for v in value.values() if isinstance(v, str))
    return chars


def _is_mapping(value: Any) -> bool:
    return isinstance(value, dict) or isinstance(value, Mapping)  # parsed JSON is dicts: the cheap check first


def _output_cap(body: Mapping[str, Any]) -> int | None:
    """The request's own output cap (``max_completion_tokens`` or ``max_tokens``), None if it set none."""
    output = body.get("max_completion_tokens") or body.get("max_tokens")
    return output if isinstance(output, int) and not isinstance(output, bool) and output > 0 else None


def _sizes(body: Mapping[str, Any], result: RouteResult, expected_output_tokens: int) -> tuple[int, int]:
    """(prompt tokens, output tokens) to reserve for the shadow call: the larger of the served prompt's count
    and the estimate, and the request's output cap. A request without one is capped at twice the served
    answer's length (at least the config's expected output), so the other tier can answer as fully and the
    budget still bounds what it costs."""
    messages = body.get("messages")
    estimate = (estimate_message_tokens(messages) if isinstance(messages, list)
                else estimate_tokens(str(body.get("prompt") or "")))
    output = _output_cap(body) or max(expected_output_tokens, 2 * result.completion_tokens)
    return max(estimate, result.prompt_tokens), output


def _served_text(job: _Job) -> str:
    """The answer the client got, as graders compare it (tool calls as canonical JSON)."""
    if job.message is not None:
        return answer_text(job.message)
    choices = job.result.raw.get("choices") if job.result.raw else None
    if job.path == CHAT_PATH and choices and isinstance(choices[0].get("message"), Mapping):
        return answer_text(choices[0]["message"])
    return job.result.text


def _prompt(job: _Job) -> str:
    messages = job.body.get("messages")
    return prompt_text(messages) if isinstance(messages, list) else str(job.body.get("prompt") or "")
