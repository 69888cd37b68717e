"""The demo's workload, with known answers: lead qualification, extraction and open chat.

Every request has a gold answer. Lead qualification and extraction ask for JSON through
``response_format`` (a schema per task); chat answers are text, graded by a judge. Which emulated
provider answers which prompt right is fixed per prompt and seed at each task's accuracy below,
and written into the labels the emulators answer from (``truth``): ``Labels.is_correct`` is then
the one place the demo, the emulators and the judge learn the truth from.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..emulator.labels import Label, Labels, unit_hash

__all__ = ["ACCURACY", "DemoRequest", "truth", "workload"]

ACCURACY: dict[str, dict[str, float]] = {
    "lead": {"cerebras": 0.96, "runpod": 0.86},
    "extraction": {"cerebras": 0.94, "runpod": 0.72},
    "chat": {"cerebras": 0.9, "runpod": 0.8},
}
"""Share of each task's prompts each emulated provider answers right."""

_COMPANIES = ["TechCorp", "Acme Logistics", "Northwind Health", "Bluewave Retail", "Quantum Analytics",
              "Greenfield Energy", "Summit Legal", "Atlas Manufacturing", "Helix Bio", "Orbit Media"]
_INDUSTRIES = ["SaaS", "logistics", "healthcare", "retail", "fintech", "energy", "legal services", "manufacturing"]
_NEXT_STEP = {"hot": "book a demo", "warm": "send a case study", "cold": "add to nurture"}
_TOPICS = {
    "pricing": "Following up on your pricing question: here is our plan that fits {company}.",
    "a discovery call": "Could {company} spare 20 minutes next week for a discovery call?",
    "the security review": "The security review for {company} is complete; the report is attached.",
    "the renewal": "Your renewal for {company} is due next month; shall we review the terms?",
    "onboarding": "Welcome aboard, {company}: your onboarding starts Monday.",
}


@dataclass(frozen=True)
class DemoRequest:
    task: str
    """``lead``, ``extraction`` or ``chat``."""
    messages: list[dict[str, str]]
    gold: str | dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    """Extra request fields: ``response_format`` for the structured tasks."""

    @property
    def prompt(self) -> str:
        """The last user message: what the labels key on."""
        return self.messages[-1]["content"]

    @property
    def tags(self) -> dict[str, str]:
        return {"task": self.task}


def _schema(name: str, properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    return {"response_format": {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}}


_LEAD = _schema("lead", {"label": {"type": "string", "enum": list(_NEXT_STEP)},
                         "next_step": {"type": "string", "enum": list(_NEXT_STEP.values())}})


def _lead(rng: random.Random) -> DemoRequest:
    company, industry = rng.choice(_COMPANIES), rng.choice(_INDUSTRIES)
    employees, budget = rng.choice([12, 45, 120, 500, 2300, 9000]), rng.choice(["none", "approved", "exploring"])
    prompt = (f"Qualify this lead: {company}, {employees} employees, {industry} industry. Budget signal: {budget}. "
              "Answer with the label (hot, warm or cold) and the next step.")
    label = ("hot" if budget == "approved" and employees >= 100 else
             "warm" if budget == "approved" or (budget == "exploring" and employees >= 500) else "cold")
    return DemoRequest("lead", [{"role": "system", "content": "You are a B2B sales assistant. Be concise."},
                                {"role": "user", "content": prompt}],
                       {"label": label, "next_step": _NEXT_STEP[label]}, _LEAD)


def _extraction(rng: random.Random) -> DemoRequest:
    company = rng.choice(_COMPANIES)
    if rng.random() < 0.5:
        term, notice, renews = rng.choice([1, 2, 3, 5]), rng.choice([30, 60, 90]), rng.random() < 0.5
        document = (f"Master services agreement with {company}: {term}-year term, "
                    f"{'auto-renewal' if renews else 'no auto-renewal'}, {notice}-day termination notice, "
                    "liability capped at 12 months of fees, data processing addendum attached.")
        gold: dict[str, Any] = {"company": company, "term_years": term, "notice_days": notice, "auto_renewal": renews}
        params = _schema("contract", {"company": {"type": "string"}, "term_years": {"type": "integer"},
                                      "notice_days": {"type": "integer"}, "auto_renewal": {"type": "boolean"}})
    else:
        quarter, growth, churned = rng.randint(1, 4), rng.choice([-4, 6, 12, 18, 31]), rng.randint(0, 4)
        document = (f"Q{quarter} board report of {company}: revenue up {growth}% year on year, gross margin 71%, "
                    f"net revenue retention 112%, {churned} enterprise logos churned, hiring plan cut by 10%.")
        gold = {"company": company, "quarter": quarter, "revenue_growth_pct": growth, "churned_logos": churned}
        params = _schema("board_report", {"company": {"type": "string"}, "quarter": {"type": "integer"},
                                          "revenue_growth_pct": {"type": "integer"},
                                          "churned_logos": {"type": "integer"}})
    return DemoRequest("extraction", [{"role": "system", "content": "You are a careful analyst."},
                                      {"role": "user", "content": f"Extract the key fields of this document:\n{document}"}],
                       gold, params)


def _chat(rng: random.Random) -> DemoRequest:
    company, topic = rng.choice(_COMPANIES), rng.choice(list(_TOPICS))
    prompt = f"Write a one-sentence email to {company} about {topic}."
    return DemoRequest("chat", [{"role": "system", "content": "You are a helpful assistant."},
                                {"role": "user", "content": prompt}], _TOPICS[topic].format(company=company))


def workload(n: int, seed: int = 7) -> list[DemoRequest]:
    """``n`` requests: about half lead qualification, a third extraction, the rest chat."""
    rng = random.Random(seed)
    requests = []
    for _ in range(n):
        roll = rng.random()
        requests.append(_lead(rng) if roll < 0.5 else _extraction(rng) if roll < 0.83 else _chat(rng))
    return requests


def truth(requests: list[DemoRequest], seed: int) -> Labels:
    """The labels the emulated pair answers from: each prompt's gold answer, and who gets it right."""
    labels: dict[str, Label] = {}
    for request in requests:
        correct = {profile: unit_hash(seed, "demo", profile, request.prompt) < accuracy
                   for profile, accuracy in ACCURACY[request.task].items()}
        labels.setdefault(request.prompt, Label(request.prompt, request.gold, correct=correct))
    return Labels(labels.values(), seed=seed)
