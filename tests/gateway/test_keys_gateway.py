"""Gateway keys made with ``llmroute keys`` against a real ``llmroute serve``: picked up, revoked, tagged,
restricted and rate limited without a restart, and never shown."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from llmroute.emulator import EmulatorThread

from ..test_cli import llmroute
from .conftest import RunningGateway, stop_gateway
from .test_shadow_gateway import pairs_in, wait_for

CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Qualify this lead: Initech, 40 employees"}]


def keys(ledger: Path, *args: str) -> Any:
    proc = llmroute("keys", *args, "--ledger", str(ledger))
    return proc


def create(ledger: Path, name: str, *options: str) -> str:
    proc = keys(ledger, "create", "--name", name, *options)
    assert proc.returncode == 0, proc.stderr
    key = proc.stdout.strip()
    assert key.startswith("llmr-") and len(key) > 40 and "\n" not in key
    return key


def serve(gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], ledger: Path,
          **extra: Any) -> RunningGateway:
    seed_config["ledger"] = {"path": str(ledger), "flush_interval_s": 0.01}
    seed_config["gateway"] = {"keys_refresh_s": 0.2}
    seed_config.update(extra)
    return gateway_factory(seed_config, env={"LLMROUTE_API_KEYS": "env-key-for-keys-tests-1"})


def client(gw: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url + "/v1", api_key=key, max_retries=0, timeout=10)


def answers(gw: RunningGateway, key: str, **kw: Any) -> bool:
    try:
        client(gw, key).chat.completions.create(model="balanced", messages=MESSAGES, max_tokens=20, **kw)
    except openai.AuthenticationError:
        return False
    return True


def rows(ledger: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(ledger)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def test_a_key_made_revoked_and_listed_while_the_gateway_runs(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    early = create(ledger, "early-bot")  # made before the gateway starts
    gw = serve(gateway_factory, seed_config, ledger)
    assert answers(gw, early)
    late = create(ledger, "sales-bot", "--budget-usd", "50", "--period", "month", "--rpm", "600")
    wait_for(lambda: answers(gw, late), timeout_s=10)  # made while it runs: no restart
    assert answers(gw, "env-key-for-keys-tests-1")  # $LLMROUTE_API_KEYS keeps working beside them
    anonymous = httpx.post(gw.base_url + CHAT, json={"messages": MESSAGES})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"

    revoked = keys(ledger, "revoke", "sales-bot")
    assert revoked.returncode == 0, revoked.stderr
    wait_for(lambda: not answers(gw, late), timeout_s=10)
    refused = httpx.post(gw.base_url + CHAT, json={"messages": MESSAGES}, headers={"Authorization": f"Bearer {late}"})
    assert refused.status_code == 401 and late not in refused.text
    assert answers(gw, early) and answers(gw, "env-key-for-keys-tests-1")

    # Revoking every ledger key does not open the gateway: a key was made, so one is required.
    assert keys(ledger, "revoke", "early-bot").returncode == 0
    wait_for(lambda: not answers(gw, early), timeout_s=10)
    assert httpx.post(gw.base_url + CHAT, json={"messages": MESSAGES}).status_code == 401

    # The ledger's requests name the key that made them; its budget is stored for budget enforcement.
    wait_for(lambda: rows(ledger, "SELECT count(*) FROM requests WHERE key_id = 'sales-bot'")[0][0] >= 1)
    assert rows(ledger, "SELECT budget_usd, budget_period, rpm FROM gateway_keys WHERE name = 'sales-bot'") == [
        (50.0, "month", 600)]

    listed = [keys(ledger, "list", "--format", fmt) for fmt in ("table", "json", "csv")]
    assert all(p.returncode == 0 for p in listed)
    [entry] = [k for k in json.loads(listed[1].stdout) if k["name"] == "sales-bot"]
    assert entry["revoked"] and entry["budget_usd"] == 50 and entry["period"] == "month" and entry["rpm"] == 600
    assert stop_gateway(gw) == 0
    for key in (early, late):
        digest = hashlib.sha256(key.encode()).hexdigest()
        assert digest in str(rows(ledger, "SELECT key_sha256 FROM gateway_keys"))  # stored: the digest only
        for text in [p.stdout + p.stderr for p in listed] + [gw.log(), str(rows(ledger, "SELECT * FROM requests"))]:
            assert key not in text and digest not in text and key[5:25] not in text


def test_a_keys_tags_reach_the_ledger_and_graded_pairs_and_follow_an_update(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    key = create(ledger, "sales-bot", "--tags", "team=sales,app=crm")
    gw = serve(gateway_factory, seed_config, ledger, shadow={"rate": 1.0, "grader": "exact"})

    def tags_of(request_id: str) -> list[str] | None:
        found = rows(ledger, "SELECT tags FROM requests WHERE request_id = ?", request_id)
        return json.loads(found[0][0]) if found else None

    def send(tags: str) -> str:
        answer = httpx.post(gw.base_url + CHAT, json={"messages": MESSAGES, "max_tokens": 20, "metadata": {"ticket": 7}},
                            headers={"Authorization": f"Bearer {key}", "x-llmroute-tags": tags}, timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.headers["x-request-id"]

    # The key's tags come first and win over a request's tag of the same name; other request tags stay.
    first = send("team=eng,urgent")
    assert wait_for(lambda: tags_of(first)) == ["team=sales", "app=crm", "urgent", "ticket=7"]

    updated = keys(ledger, "update", "sales-bot", "--tags", "team=support")
    assert updated.returncode == 0, updated.stderr

    def tagged_by_update() -> str | None:
        request_id = send("x=1")
        return request_id if wait_for(lambda: tags_of(request_id))[0] == "team=support" else None

    second = wait_for(tagged_by_update, timeout_s=10)
    assert tags_of(second) == ["team=support", "x=1", "ticket=7"]
    wait_for(lambda: {p.request_id for p in pairs_in(ledger)} >= {first, second})
    assert stop_gateway(gw) == 0
    by_request = {p.request_id: p for p in pairs_in(ledger)}
    assert by_request[first].tags[:2] == ["team=sales", "app=crm"] and by_request[first].key_id == "sales-bot"
    assert by_request[second].tags[0] == "team=support"

    cleared = keys(ledger, "update", "sales-bot", "--no-tags")
    assert cleared.returncode == 0 and json.loads(keys(ledger, "list", "--format", "json").stdout)[0]["tags"] == []


def test_a_key_limited_to_some_strategies_gets_a_403_for_the_others_before_any_provider(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    key = create(ledger, "cheap-bot", "--strategies", "cost_optimized,balanced")
    only_cost = create(ledger, "cost-only", "--strategies", "cost_optimized")
    gw = serve(gateway_factory, seed_config, ledger)
    sent = {name: httpx.get(emu.base_url.removesuffix("/v1") + "/_emulator/stats").json()["requests"]
            for name, emu in emus.items()}
    headers = {"Authorization": f"Bearer {key}"}
    for how in ({"json": {"model": "latency_optimized", "messages": MESSAGES}},
                {"json": {"model": "balanced", "messages": MESSAGES}, "headers": {"x-llmroute-strategy": "quality_aware"}},
                {"json": {"model": "latency_optimized", "messages": MESSAGES, "stream": True}}):
        answer = httpx.post(gw.base_url + CHAT, **{**how, "headers": {**headers, **how.get("headers", {})}})
        assert answer.status_code == 403, answer.text
        error = answer.json()["error"]
        assert error["type"] == "permission_error" and error["code"] == "strategy_not_allowed"
        assert "cost_optimized" in error["message"] and "balanced" in error["message"] and key not in answer.text
    after = {name: httpx.get(emu.base_url.removesuffix("/v1") + "/_emulator/stats").json()["requests"]
             for name, emu in emus.items()}
    assert after == sent  # refused before any provider was called
    with pytest.raises(openai.PermissionDeniedError):
        client(gw, key).chat.completions.create(model="quality_aware", messages=MESSAGES)

    # /v1/models shows such a key only the strategies it may use.
    models = httpx.get(gw.base_url + "/v1/models", headers=headers).json()["data"]
    assert [m["id"] for m in models] == ["cost_optimized", "balanced"]
    assert httpx.get(gw.base_url + "/v1/models/quality_aware", headers=headers).status_code == 404
    assert httpx.get(gw.base_url + "/v1/models/balanced", headers=headers).status_code == 200
    allowed = httpx.post(gw.base_url + CHAT, json={"model": "cost_optimized", "messages": MESSAGES}, headers=headers)
    assert allowed.status_code == 200 and allowed.headers["x-llmroute-strategy"] == "cost_optimized"
    # A request naming no strategy runs the default when the key may use it, else the key's first strategy.
    plain = {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert httpx.post(gw.base_url + CHAT, json=plain, headers=headers).headers["x-llmroute-strategy"] == "balanced"
    answer = httpx.post(gw.base_url + CHAT, json=plain, headers={"Authorization": f"Bearer {only_cost}"})
    assert answer.status_code == 200 and answer.headers["x-llmroute-strategy"] == "cost_optimized"
    # Config keys are not limited.
    free = httpx.post(gw.base_url + CHAT, json={"model": "latency_optimized", "messages": MESSAGES},
                      headers={"Authorization": "Bearer env-key-for-keys-tests-1"})
    assert free.status_code == 200


def test_rpm_and_tpm_per_key_answer_429_with_retry_after(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    slow = create(ledger, "slow-bot", "--rpm", "3")
    thrifty = create(ledger, "thrifty-bot", "--tpm", "400")
    gw = serve(gateway_factory, seed_config, ledger)
    for _ in range(3):
        assert answers(gw, slow)
    with pytest.raises(openai.RateLimitError) as caught:
        client(gw, slow).chat.completions.create(model="balanced", messages=MESSAGES, max_tokens=20)
    response = caught.value.response
    error = response.json()["error"]
    assert response.status_code == 429 and error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    # 3 sent this minute: a 4th fits when a third of them has faded from the sliding minute, 20 s into the next.
    assert 20 <= int(response.headers["Retry-After"]) <= 81
    assert "slow-bot" in error["message"] and "3 requests per minute (in this gateway process)" in error["message"]
    assert slow not in response.text
    assert answers(gw, thrifty)  # one key's limit is not another's

    # tpm: each request reserves its prompt and max_tokens; a key runs out of tokens, not requests.
    statuses = []
    for _ in range(10):
        answer = httpx.post(gw.base_url + CHAT, json={"messages": MESSAGES, "max_tokens": 100},
                            headers={"Authorization": f"Bearer {thrifty}"})
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            assert answer.json()["error"]["type"] == "tokens" and int(answer.headers["Retry-After"]) >= 1
            break
    assert statuses[0] == 200 and statuses[-1] == 429, statuses


def test_a_bad_option_or_unknown_name_is_one_line(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    create(ledger, "bot")
    for args in (["create", "--name", "bot"], ["create", "--name", "x y"], ["create", "--name", "b", "--period", "week"],
                 ["create", "--name", "b", "--budget-usd", "5"], ["create", "--name", "b", "--strategies", "fastest"],
                 ["create", "--name", "b", "--rpm", "0"], ["create", "--name", "b", "--tags", "t=" + "x" * 300],
                 ["update", "ghost", "--rpm", "3"], ["revoke", "ghost"], ["update", "bot"],
                 ["update", "bot", "--rpm", "5", "--no-rpm"], ["update", "bot", "--budget-usd", "-1"]):
        proc = keys(ledger, *args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert [k["name"] for k in json.loads(keys(ledger, "list", "--format", "json").stdout)] == ["bot"]


def test_a_streamed_request_settles_its_keys_tokens_to_what_it_used(
    gateway_factory: Callable[..., RunningGateway], seed_config: dict[str, Any], emus: dict[str, EmulatorThread],
    tmp_path: Path,
) -> None:
    """A stream reserves its prompt and max_tokens like any request; when it ends, what it did not use is given
    back, or a key's tpm would run dry after a few streams that used little."""
    ledger = tmp_path / "ledger.sqlite3"
    thrifty = create(ledger, "streaming-bot", "--tpm", "600")
    gw = serve(gateway_factory, seed_config, ledger)
    used = []
    for _ in range(2):  # each reserves ~315 tokens of 600: without settling, the second would get a 429
        stream = client(gw, thrifty).chat.completions.create(
            model="balanced", messages=MESSAGES, max_tokens=300, stream=True, stream_options={"include_usage": True})
        usage = [chunk.usage for chunk in stream if chunk.usage is not None]
        used.append(usage[-1].total_tokens)
    assert all(u < 285 for u in used), used  # the premise: each stream used less than it reserved
