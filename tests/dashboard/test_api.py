"""The dashboard's JSON API over HTTP: in ``llmroute serve`` and in ``llmroute dashboard``; admin keys only;
no secret in any answer; user strings returned as data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ..conftest import free_port
from ..test_cli import llmroute

ADMIN = "sk-admin-0123456789abcdef"
PROVIDER_SECRET = "sk-provider-SECRET-5a5a5a"
URL_PASSWORD = "urlpassSECRET77"
HOSTILE = "<img src=x onerror=alert(1)>"
VIEWS = ("meta", "overview", "quality", "providers", "budgets", "requests")


def get(url: str, key: str | None = None, cookie: str | None = None) -> tuple[int, dict[str, Any], str]:
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    if cookie is not None:
        request.add_header("Cookie", f"llmroute_dashboard={cookie}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read().decode()
            return answer.status, dict(answer.headers), text
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def post(url: str, key: str, body: dict[str, Any], tags: str) -> int:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json", "x-llmroute-tags": tags})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.status


def wait_for_rows(ledger: Path, rows: int) -> None:
    """Until the gateway's ledger writer has committed ``rows`` requests (it commits every 50 ms)."""
    from llmroute.ledger import open_store

    deadline = time.monotonic() + 10
    while True:
        store = open_store(str(ledger), readonly=True)
        try:
            count = store.fetch("SELECT COUNT(*) FROM requests")[0][0]
        finally:
            store.close()
        if count >= rows or time.monotonic() > deadline:
            assert count == rows
            return
        time.sleep(0.05)


@pytest.fixture
def served(gateway_factory, seed_config: dict[str, Any], tmp_path: Path):
    """A gateway with an admin config key, a non-admin ledger key, a provider key and a URL with credentials."""
    ledger = tmp_path / "ledger.sqlite3"
    proc = llmroute("keys", "create", "--name", "plain", "--ledger", str(ledger), "--format", "json")
    assert proc.returncode == 0, proc.stderr
    plain = json.loads(proc.stdout)["key"]
    config = seed_config
    config["gateway"] = {"api_keys": [ADMIN]}
    config["ledger"] = {"path": str(ledger), "flush_interval_s": 0.05}
    config["providers"]["cerebras"]["api_key"] = PROVIDER_SECRET
    runpod = config["providers"]["runpod"]
    runpod["base_url"] = runpod["base_url"].replace("http://", f"http://user:{URL_PASSWORD}@")
    gateway = gateway_factory(config)
    for i in range(6):
        assert post(gateway.base_url + "/v1/chat/completions", ADMIN if i % 2 else plain,
                    {"model": "balanced", "messages": [{"role": "user", "content": f"hello {i}"}]}, HOSTILE) == 200
    return gateway, plain, ledger


def test_api_needs_an_admin_key_and_leaks_no_secret(served) -> None:
    gateway, plain, _ = served
    base = gateway.base_url + "/dashboard/api/"
    for view in VIEWS:
        status, _, text = get(base + view)
        assert status == 401 and json.loads(text)["error"]["code"] == "invalid_api_key"
        status, _, text = get(base + view, key="sk-wrong")
        assert status == 401
        status, _, text = get(base + view, key=plain)
        assert status == 403 and json.loads(text)["error"]["code"] == "admin_key_required"
    assert get(gateway.base_url + "/dashboard")[0] == 401
    wait_for_rows(served[2], 6)
    from llmroute.keys import key_digest

    secrets = [ADMIN, plain, PROVIDER_SECRET, URL_PASSWORD, key_digest(ADMIN).hex(), key_digest(plain).hex()]
    for view in VIEWS:
        for auth in ({"key": ADMIN}, {"cookie": ADMIN}):
            status, headers, text = get(base + view, **auth)
            assert status == 200, text
            assert headers["Content-Type"].startswith("application/json") and headers["X-Content-Type-Options"] == "nosniff"
            for secret in secrets:
                assert secret not in text, (view, secret)
            assert "<img" not in text.replace(json.dumps(HOSTILE)[1:-1], "")  # markup only inside the tag's own string
    overview = json.loads(get(base + "overview", key=ADMIN)[2])
    assert overview["source"] == "gateway" and overview["period"]["requests"] == 6
    providers = json.loads(get(base + "providers", key=ADMIN)[2])
    assert providers["live"] is True
    assert {p["provider"]: p["breaker"]["state"] for p in providers["providers"]} == {"cerebras": "closed", "runpod": "closed"}
    requests = json.loads(get(base + "requests?limit=200", key=ADMIN)[2])["requests"]
    assert {tuple(r["tags"]) for r in requests} == {(HOSTILE,)}
    assert {r["key"] for r in requests} == {"key-1", "plain"}
    status, _, text = get(base + "requests?since=yesterday", key=ADMIN)
    assert status == 400 and json.loads(text)["error"]["param"] == "since"
    assert get(base + "nope", key=ADMIN)[0] == 404


def test_llmroute_dashboard_serves_a_ledger_alone(served, tmp_path: Path) -> None:
    gateway, plain, ledger = served
    wait_for_rows(ledger, 6)
    port = free_port()
    env = {**os.environ, "LLMROUTE_API_KEYS": ""}
    proc = subprocess.Popen([sys.executable, "-m", "llmroute.cli", "dashboard", "--ledger", str(ledger), "--port",
                             str(port), "--api-key", ADMIN], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline() if proc.stderr else ""
        assert re.search(rf"http://127.0.0.1:{port}/dashboard", line), line
        base = f"http://127.0.0.1:{port}/dashboard/api/"
        assert get(base + "overview")[0] == 401
        assert get(base + "overview", key=plain)[0] == 403  # the ledger's key, not admin
        status, _, text = get(base + "overview", key=ADMIN)
        answer = json.loads(text)
        assert status == 200 and answer["source"] == "ledger" and answer["period"]["requests"] == 6
        report = json.loads(llmroute("report", "--ledger", str(ledger), "--format", "json").stdout)
        assert answer["period"]["cost_usd"] == pytest.approx(report["total"]["cost_usd"])
        providers = json.loads(get(base + "providers", key=ADMIN)[2])
        assert providers["live"] is False and all(p["breaker"] is None for p in providers["providers"])
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_dashboard_refuses_a_public_address_without_an_admin_key(tmp_path: Path) -> None:
    from llmroute.ledger import open_store

    ledger = tmp_path / "ledger.sqlite3"
    open_store(str(ledger)).close()
    proc = llmroute("dashboard", "--ledger", str(ledger), "--host", "0.0.0.0", "--port", "0",
                    env={**os.environ, "LLMROUTE_API_KEYS": ""}, timeout=30)
    assert proc.returncode == 2 and "without an admin key" in proc.stderr
