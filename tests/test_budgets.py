"""Budgets in process: which apply, the worst case reserved, all-or-nothing holds, settling, and periods
(time injected through a clock)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any

import pytest

from llmroute.budgets import Ask, Budget, Budgets, Exhausted, Reservation, billed_usd
from llmroute.config import parse_config
from llmroute.errors import ConfigError
from llmroute.result import Attempt
from llmroute.state import InMemoryState
from llmroute.tokens import prompt_estimate

try:
    from .ledger.test_postgres import postgres_dsn  # noqa: F401  (a real server; skips without its binaries)
except pytest.skip.Exception:
    pass

PROVIDERS = {
    "cheap": {"base_url": "http://127.0.0.1:9/v1", "model": "c", "price_per_m": {"input": 0.1, "output": 0.2}},
    "dear": {"base_url": "http://127.0.0.1:9/v1", "model": "d", "price_per_m": {"input": 3.0, "output": 15.0}},
    "gpu": {"base_url": "http://127.0.0.1:9/v1", "model": "g", "price_per_gpu_second": 0.001, "timeout_s": 10},
}


def make(budgets: list[dict[str, Any]], clock: list[float] | None = None) -> Budgets:
    config = parse_config({"providers": PROVIDERS, "budgets": budgets})
    now = clock if clock is not None else [datetime(2026, 3, 10, 12, tzinfo=UTC).timestamp()]
    return Budgets(config, InMemoryState({}), clock=lambda: now[0])


def reserve(b: Budgets, budgets: list[Budget], ask: Ask, providers: list[str]) -> Reservation:
    return asyncio.run(b.reserve(budgets, ask, providers))


def test_config_errors_name_the_key() -> None:
    for budgets, key in (([{"usd": 0}], "budgets.0.usd"), ([{"usd": 1}, {"usd": 1, "period": "year"}], "budgets.1.period"),
                         ([{"usd": 1, "key": "a", "tag": "b"}], "budgets.0"),
                         ([{"usd": 1, "pacing": True, "daily_profile": [1] * 23}], "budgets.0"),
                         ([{"usd": 1}, {"usd": 2}], "budgets")):
        with pytest.raises(ConfigError) as err:
            parse_config({"providers": PROVIDERS, "budgets": budgets})
        assert f"'{key}'" in str(err.value), str(err.value)
    config = parse_config({"providers": PROVIDERS, "budgets": [
        {"usd": 300, "pacing": True, "min_strong_share": 0.1, "max_strong_share": 0.9, "daily_profile": [1] * 24}]})
    assert config.budgets[0].label == "all" and config.budgets[0].pacing


def test_which_budgets_apply() -> None:
    b = make([{"usd": 300}, {"tag": "team=sales", "usd": 50}, {"key": "bot", "usd": 5, "period": "day"}])
    names = lambda *a: [x.name for x in b.applicable(*a)]  # noqa: E731
    assert names(None, None, ()) == ["all"]
    assert names("bot", (100.0, "month"), ["team=sales", "team=sales"]) == ["all", "key:bot", "tag:team=sales"]
    assert names("other", (2.0, "week"), ["team=ops"]) == ["all", "key:other"]  # the budget stored with the key
    assert b.applicable("other", (2.0, "week"), ())[1].usd == 2.0


def test_worst_case_is_the_priciest_provider_with_the_output_cap() -> None:
    b = make([{"usd": 1, "default_max_tokens": 1000}])
    budget = b.everything[0]
    capped = Ask(input_tokens=100, max_tokens=50, n=2)
    prompt = {"cheap": (100 * 1.25 + 16) * 0.1 / 1e6, "dear": (100 * 1.25 + 16) * 3.0 / 1e6}
    passes = 2  # retry_rounds 1: each provider may fail (or lose a hedge) twice, billed its prompt each time
    dear = prompt["dear"] + 100 * 15.0 / 1e6
    assert b.worst_case_usd(capped, budget, ["cheap", "dear"]) == pytest.approx(dear + passes * sum(prompt.values()))
    assert b.worst_case_usd(Ask(100, None), budget, ["dear"]) == pytest.approx(
        prompt["dear"] + 1000 * 15.0 / 1e6 + passes * prompt["dear"])
    gpu = 10 * 1.1 * 0.001  # its timeout of GPU time, per attempt
    assert b.worst_case_usd(capped, budget, ["gpu"]) == pytest.approx(gpu + passes * gpu)
    assert Ask.of({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 7, "n": 3}).output_tokens(budget) == 21
    body = {"messages": [{"role": "user", "content": "a prompt of some length " * 20}]}
    assert Ask.of(body).input_tokens == prompt_estimate(body) > 50
    assert Ask.of(body, input_tokens=7).input_tokens == 7  # an estimate the caller made already is not redone


def test_holds_are_all_or_nothing_and_settle_to_the_bill() -> None:
    b = make([{"usd": 1.0}, {"tag": "t", "usd": 0.01}])
    budgets = b.applicable(None, None, ["t"])
    ask = Ask(100, 100)
    held = reserve(b, budgets, ask, ["dear"])
    with pytest.raises(Exhausted) as exc:
        for _ in range(10):
            reserve(b, budgets, ask, ["dear"])
    assert exc.value.budget.name == "tag:t" and "tag:t" in exc.value.message
    snap = b.snapshot()
    assert snap["all"]["reserved_usd"] == pytest.approx(snap["tag:t"]["reserved_usd"])  # "all" was released too
    held.settle(0.0005)
    held.settle(0.5)  # once only
    per = b.worst_case_usd(ask, budgets[1], ["dear"])
    held_now = int(0.01 // per) - 1  # all that fitted, less the one settled
    assert b.snapshot()["tag:t"]["reserved_usd"] == pytest.approx(held_now * per)
    assert b.snapshot()["tag:t"]["spent_usd"] == pytest.approx(0.0005)
    assert billed_usd([Attempt("a", "m", False, 1.0, kind="http_500", cost_usd=0.2),
                       Attempt("b", "m", True, 1.0, cost_usd=0.3)]) == pytest.approx(0.5)


def test_concurrent_holds_never_pass_the_limit() -> None:
    b = make([{"usd": 0.01}])
    budgets, ask, won = b.everything, Ask(100, 100), []
    start = threading.Barrier(8)

    def spend() -> None:
        start.wait()
        for _ in range(50):
            try:
                reserve(b, budgets, ask, ["dear"])
                won.append(1)
            except Exhausted:
                pass

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    per = b.worst_case_usd(ask, budgets[0], ["dear"])
    assert len(won) == int(0.01 // per) and len(won) * per <= 0.01


def test_a_new_period_starts_empty_and_retry_after_reaches_it() -> None:
    now = [datetime(2026, 3, 10, 23, 59, 30, tzinfo=UTC).timestamp()]
    b = make([{"usd": 0.004, "period": "day"}], now)
    held = reserve(b, b.everything, Ask(100, 100), ["dear"])
    held.settle(0.0039)
    with pytest.raises(Exhausted) as exc:
        reserve(b, b.everything, Ask(100, 100), ["dear"])
    assert exc.value.retry_after_s == 30
    now[0] += 30  # midnight: the next day
    assert b.snapshot()["all"]["spent_usd"] == 0.0
    reserve(b, b.everything, Ask(100, 100), ["dear"])


def test_a_live_budget_is_never_forgotten_among_many() -> None:
    """Spend totals are bounded, but the one evicted is the least recently used: a past period's, never a budget
    requests still reserve on, however many other budgets came after it."""
    import llmroute.state
    from llmroute.state import InMemoryState

    state = InMemoryState({})
    assert state.reserve("busy:p1", 0.9, 1.0)
    for i in range(llmroute.state.MAX_TOTALS + 10):
        if i % 1000 == 0:
            assert not state.reserve("busy:p1", 0.2, 1.0)  # still 0.9 spent: refused, and touched
        state.reserve(f"other-{i}:p1", 0.1, 1.0)
    assert state.spent("busy:p1") == 0.9 and not state.reserve("busy:p1", 0.2, 1.0)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_restart_seeds_each_budget_from_the_ledger(tmp_path: Any, backend: str, request: Any) -> None:
    """One query per kind: the key's requests, the tag's (exactly that tag), all requests plus shadow spend;
    only this period's rows; a state that already holds a total keeps it."""
    from llmroute.budgets import ledger_spend
    from llmroute.ledger import open_store

    now_ts = datetime(2026, 3, 10, 12, tzinfo=UTC).timestamp()
    last_month = datetime(2026, 2, 27, tzinfo=UTC).timestamp()
    store = open_store(str(tmp_path / "ledger.db") if backend == "sqlite" else request.getfixturevalue("postgres_dsn"))
    insert = ("INSERT INTO requests (ts, request_id, endpoint, strategy, status, prompt_tokens, completion_tokens, "
               "cached_tokens, cost_usd, cost_basis, latency_ms, fallback, key_id, tags) "
               "VALUES (?, 'r', 'chat', 'balanced', 'ok', 1, 1, 0, ?, 'usage', 1.0, ?, ?, ?)")
    for ts, usd, key_id, tags in ((now_ts - 60, 0.25, "bot", '["team=sales"]'),
                                  (now_ts - 7200, 0.5, "bot", None),
                                  (now_ts - 60, 1.0, None, '["team=salesforce", "x_%"]'),
                                  (last_month, 8.0, "bot", '["team=sales"]')):
        store.execute(insert, (ts, usd, False, key_id, tags))
    pair = ("INSERT INTO graded_pairs (ts, request_id, strategy, served_provider, reference_provider, "
            "candidate_provider, served_tier, grader, shadow_cost_usd, judge_cost_usd, source) "
            "VALUES (?, 'r', 'balanced', 'a', 'b', 'a', 'cheap', 'judge', ?, ?, ?)")
    store.execute(pair, (now_ts - 60, 0.03, 0.01, "shadow"))
    store.execute(pair, (now_ts - 60, 2.0, 2.0, "collect"))  # offline collection: not the gateway's spend
    b = make([{"usd": 100.0}, {"tag": "team=sales", "usd": 100.0}, {"key": "bot", "usd": 100.0, "period": "day"},
              {"tag": "x_%", "usd": 100.0}], [now_ts])
    spend = ledger_spend(store, b, now_ts)
    store.close()
    b.seed(spend, [("other", 5.0, "month")])
    asyncio.run(b.apply_seeds())
    snap = b.snapshot()
    assert snap["all"]["spent_usd"] == pytest.approx(1.75 + 0.04)
    assert snap["tag:team=sales"]["spent_usd"] == pytest.approx(0.25)
    assert snap["tag:x_%"]["spent_usd"] == pytest.approx(1.0)
    assert snap["key:bot"]["spent_usd"] == pytest.approx(0.75)
    assert snap["key:other"]["spent_usd"] == 0.0

    state = InMemoryState({})
    held = Budgets(parse_config({"providers": PROVIDERS, "budgets": [{"usd": 100.0}]}), state, clock=lambda: now_ts)
    state.settle(held.state_key(held.everything[0], now_ts), 0.0, 3.0)  # a shared total outlived the process
    held.seed(spend)
    asyncio.run(held.apply_seeds())
    assert held.snapshot()["all"]["spent_usd"] == 3.0
