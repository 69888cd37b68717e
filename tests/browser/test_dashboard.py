"""The dashboard in a real Chromium: figures equal ``llmroute report``, live updates, escaping, auth, screenshots."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from ..conftest import free_port
from ..gateway.conftest import RunningGateway, stop_gateway
from .conftest import (ADMIN_KEY, XSS_TAG, XSS_USER, Tab, artefacts, cli_json, send, send_known_traffic, sign_in,
                       wait_until)

VIEWS = ("overview", "quality", "providers", "budgets", "requests")


def usd(value: float) -> str:
    """How the page writes an amount (app.js ``usd``): two significant digits below a cent."""
    size = abs(value)
    if size >= 1:
        body = f"{size:,.2f}"
    elif size >= 0.01:
        body = f"{size:.4f}"
    elif size == 0:
        body = "0.00"
    else:
        body = f"{size:.{min(10, 1 - math.floor(math.log10(size)))}f}"
    return ("-$" if value < 0 else "$") + body


def refresh_s(base_url: str) -> float:
    meta = httpx.get(f"{base_url}/dashboard/api/meta", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert meta.status_code == 200, meta.text
    return float(meta.json()["refresh_s"])


def wait_for_requests(tab: Tab, count: int, timeout_s: float) -> None:
    """Until the overview shows ``count`` requests (the ledger's writer flushes on its own schedule)."""
    tab.page.wait_for_function("(n) => document.getElementById('o-requests').dataset.value === n",
                               arg=str(count), timeout=timeout_s * 1000)


def assert_figures_equal_report(tab: Tab, ledger: Path) -> dict[str, Any]:
    report = cli_json("report", "--ledger", str(ledger), "--since", "30d")
    total = report["total"]
    for element, name in (("k-spend", "cost_usd"), ("o-spend", "cost_usd"), ("k-savings", "savings_usd"),
                          ("o-savings", "savings_usd"), ("o-savings-pct", "savings_pct"),
                          ("o-blended", "blended_per_m"), ("o-requests", "requests"), ("k-failing", "failed")):
        assert tab.value(element) == pytest.approx(total[name], rel=1e-9, abs=1e-12), element
    assert tab.text("#k-spend") == usd(total["cost_usd"])
    assert tab.text("#k-savings") == usd(total["savings_usd"])
    assert tab.text("#o-requests") == f"{total['requests']:,}"
    assert f"{total['savings_pct']:.1f}% less than sending everything to {report['baseline']}" in tab.text("#k-savings-sub")
    rows = tab.page.eval_on_selector_all(
        "#o-split tbody tr", "rows => rows.map(r => [r.dataset.provider, ...Array.from(r.cells, c => c.textContent)])")
    shown = {row[0]: row[1:] for row in rows}
    assert set(shown) == {group["group"] for group in report["groups"]}
    for group in report["groups"]:
        cells = shown[group["group"]]
        assert cells[1] == f"{group['requests']:,}"
        assert cells[2] == f"{100 * group['requests'] / total['requests']:.1f}%"
        assert cells[3] == usd(group["cost_usd"])
    return report


def images_loaded(tab: Tab) -> None:
    """Every chart of the shown view arrived as an image (an SVG the browser could draw)."""
    tab.page.wait_for_function(
        "() => Array.from(document.querySelectorAll('section.view:not([hidden]) img'))"
        ".every(img => img.complete && img.naturalWidth > 0)", timeout=10_000)


def test_page_figures_equal_llmroute_report(tab: Tab, dashboard_gateway: Callable[..., RunningGateway]) -> None:
    gateway = dashboard_gateway(history=True)
    ledger = gateway.ledger  # type: ignore[attr-defined]
    sent = send_known_traffic(gateway.base_url)
    sign_in(tab, gateway.base_url)
    tab.wait_ok()
    wait_for_requests(tab, gateway.history + sent, refresh_s(gateway.base_url) + 5)  # type: ignore[attr-defined]
    report = assert_figures_equal_report(tab, ledger)
    assert report["total"]["requests"] == gateway.history + sent  # type: ignore[attr-defined]
    assert report["total"]["fallbacks"] > 0 and report["total"]["failed"] > 0
    quality = cli_json("quality", "--ledger", str(ledger), "--since", "30d")
    assert tab.value("k-retained") == pytest.approx(quality["total"]["retained"], rel=1e-9)
    images_loaded(tab)
    weight = tab.page.evaluate("""() => performance.getEntriesByType('navigation').concat(
        performance.getEntriesByType('resource')).reduce((sum, e) => sum + e.encodedBodySize, 0)""")
    assert 0 < weight <= 300_000  # the page, its files, its charts and the API's answers so far
    tab.screenshot("overview")
    for view in VIEWS[1:]:
        tab.show(view)
        images_loaded(tab)
        tab.screenshot(view)
    tab.show("quality")
    assert tab.value("q-retained") == pytest.approx(quality["total"]["retained"], rel=1e-9)
    assert tab.page.is_hidden("#q-empty")
    tab.show("requests")  # newest first, a page at a time: "Older requests" adds the next page below
    rows = "(n) => document.querySelectorAll('#r-table tbody tr[data-id]').length === n"
    tab.page.wait_for_function(rows, arg=50)
    tab.page.click("#r-more")
    tab.page.wait_for_function(rows, arg=100)
    ids = tab.page.eval_on_selector_all("#r-table tbody tr[data-id]", "rows => rows.map(r => Number(r.dataset.id))")
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 100
    assert tab.errors == [] and tab.dialogs == []


def test_without_a_ledger_the_page_says_so_and_shows_the_live_state(
        tab: Tab, dashboard_gateway: Callable[..., RunningGateway]) -> None:
    gateway = dashboard_gateway(ledger={"enabled": False})
    send_known_traffic(gateway.base_url, rounds=1)
    sign_in(tab, gateway.base_url)
    tab.wait_ok()
    assert tab.page.is_visible("#note") and "ledger is switched off" in tab.text("#note")
    tab.show("providers")
    providers = tab.page.eval_on_selector_all("#p-table tbody tr[data-provider]", "rows => rows.map(r => r.dataset.provider)")
    assert sorted(providers) == ["cerebras", "runpod"]
    for view in ("quality", "budgets", "requests"):
        tab.show(view)
    assert tab.errors == [] and tab.dialogs == []


def test_a_breaker_that_opened_shows_its_changes(tab: Tab, dashboard_gateway: Callable[..., RunningGateway],
                                                 emus: dict[str, Any]) -> None:
    """The providers view lists a breaker's latest changes of state with their reasons, as /router/state has them."""
    gateway = dashboard_gateway(retry_rounds=0, breaker={"failures": 2, "open_s": 60})
    emus["runpod"].set_faults({"500": 1.0})
    for _ in range(2):  # runpod fails twice (cerebras answers): its breaker opens
        send(gateway.base_url, strategy="cost_optimized")
    state = httpx.get(f"{gateway.base_url}/router/state", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    changes = state["providers"]["runpod"]["breaker"]["transitions"]
    assert [c["state"] for c in changes] == ["open"] and "2 failures" in changes[0]["reason"]
    assert state["providers"]["cerebras"]["breaker"]["transitions"] == []
    sign_in(tab, gateway.base_url)
    tab.wait_ok()
    tab.show("providers")
    shown = tab.text('#p-table tbody tr[data-provider="runpod"] .transitions')
    assert "open: " in shown and changes[0]["reason"] in shown
    assert tab.page.query_selector('#p-table tbody tr[data-provider="cerebras"] .transitions') is None
    assert tab.errors == [] and tab.dialogs == []


def test_request_sent_while_open_appears_within_the_refresh(tab: Tab,
                                                          dashboard_gateway: Callable[..., RunningGateway]) -> None:
    gateway = dashboard_gateway()
    sent = send_known_traffic(gateway.base_url, rounds=1)
    interval = refresh_s(gateway.base_url)
    sign_in(tab, gateway.base_url)
    wait_for_requests(tab, sent, interval + 5)
    tab.show("requests")
    request_id = f"live-{uuid.uuid4().hex[:12]}"
    send(gateway.base_url, "live=yes", "dora", request_id=request_id)
    # One refresh interval, plus the ledger's flush (0.05 s) and one computation of the view.
    tab.page.wait_for_selector(f"#r-table tr[data-request-id='{request_id}']", timeout=(interval + 2) * 1000)
    row = tab.text(f"#r-table tr[data-request-id='{request_id}']")
    assert "live=yes" in row and "dora" in row
    tab.show("overview")
    wait_for_requests(tab, sent + 1, interval + 2)
    tab.show("quality")  # nothing graded in this ledger: the page says so and how to start
    assert tab.page.is_visible("#q-empty") and tab.page.is_hidden("#q-body")
    how = tab.text("#q-empty")
    assert "shadow:" in how and "llmroute quality collect" in how
    assert tab.text("#k-retained") == "not measured"
    tab.screenshot("quality-not-measured")
    assert tab.errors == [] and tab.dialogs == []


def test_user_strings_are_shown_as_text_and_nothing_runs(tab: Tab,
                                                         dashboard_gateway: Callable[..., RunningGateway]) -> None:
    gateway = dashboard_gateway()
    sent = send_known_traffic(gateway.base_url, rounds=1)
    sign_in(tab, gateway.base_url)
    wait_for_requests(tab, sent, refresh_s(gateway.base_url) + 5)
    tab.show("requests")
    tags = tab.page.eval_on_selector_all("#r-table .tag", "tags => tags.map(t => t.textContent)")
    assert XSS_TAG in tags
    assert XSS_USER in tab.text("#r-table")
    injected = "document.querySelectorAll('img:not([id^=\"c-\"]), svg, script:not([src])').length"
    assert tab.page.evaluate(injected) == 0
    tab.page.fill("#r-filters input[name=tag]", XSS_TAG)  # the filter takes it as it is, too
    tab.page.click("#r-filters button[type=submit]")
    tab.wait_ok()
    tab.page.wait_for_function("() => document.querySelectorAll('#r-table tbody tr[data-id]').length === 2")
    rows = tab.page.eval_on_selector_all(
        "#r-table tbody tr", "rows => rows.map(r => Array.from(r.querySelectorAll('.tag'), t => t.textContent))")
    assert all(XSS_TAG in row for row in rows)
    tab.show("budgets")
    assert XSS_TAG in tab.page.eval_on_selector_all("#b-tags tbody td:first-child", "cells => cells.map(c => c.textContent)")
    assert tab.page.evaluate(injected) == 0
    assert tab.dialogs == [] and tab.errors == []


SECURED = ("/dashboard", "/dashboard/api/meta", "/dashboard/api/overview", "/dashboard/api/requests",
           "/dashboard/chart/spend.svg", "/dashboard/chart/curve.svg")


def assert_security_headers(answer: httpx.Response) -> None:
    policy = answer.headers.get("content-security-policy", "")
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, answer.url
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert answer.headers.get("x-content-type-options") == "nosniff"
    assert answer.headers.get("referrer-policy") == "no-referrer"


def test_without_an_admin_key_the_page_and_its_api_answer_401(tab: Tab, tmp_path: Path,
                                                              dashboard_gateway: Callable[..., RunningGateway]) -> None:
    ledger = tmp_path / "ledger.sqlite3"
    created = subprocess.run([sys.executable, "-m", "llmroute.cli", "keys", "create", "--name", "viewer",
                              "--ledger", str(ledger)], capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    viewer = created.stdout.strip()
    gateway = dashboard_gateway()
    send_known_traffic(gateway.base_url, rounds=1)
    base = gateway.base_url
    for path in SECURED:
        anonymous = httpx.get(base + path)
        assert anonymous.status_code == 401, path
        assert_security_headers(anonymous)
        assert httpx.get(base + path, headers={"Authorization": "Bearer sk-wrong"}).status_code == 401, path
        assert httpx.get(base + path, cookies={"llmroute_dashboard": "sk-wrong"}).status_code == 401, path
        admin = httpx.get(base + path, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert admin.status_code == 200, (path, admin.text)
        assert_security_headers(admin)
        assert httpx.get(base + path, cookies={"llmroute_dashboard": ADMIN_KEY}).status_code == 200, path
        if path != "/dashboard":  # a key that is not an admin's: 403 from the API, the sign-in form for the page
            assert httpx.get(base + path, headers={"Authorization": f"Bearer {viewer}"}).status_code == 403, path
    login = httpx.get(base + "/dashboard")
    assert "text/html" in login.headers["content-type"] and "<form" in login.text
    assert "k-spend" not in login.text and "app.js" not in login.text  # the form only: no page, no data
    for name in ("app.js", "app.css"):  # the page's files hold no data: open, but with the same headers
        asset = httpx.get(f"{base}/dashboard/static/{name}")
        assert asset.status_code == 200
        assert_security_headers(asset)
    assert httpx.get(f"{base}/dashboard/static/..%2Fpages.py").status_code == 404
    bearer = {"Authorization": f"Bearer {ADMIN_KEY}"}
    bad_period = httpx.get(f"{base}/dashboard/chart/spend.svg?since=forever", headers=bearer)
    assert bad_period.status_code == 400 and bad_period.json()["error"]["param"] == "since"
    assert httpx.get(f"{base}/dashboard/chart/nothing.svg", headers=bearer).status_code == 404
    chart = httpx.get(f"{base}/dashboard/chart/spend.svg?since=7d", headers=bearer)
    assert chart.headers["content-type"].startswith("image/svg+xml") and chart.text.startswith("<svg")
    assert httpx.post(f"{base}/dashboard/login", data={"key": ADMIN_KEY},
                      headers={"Origin": "https://evil.example"}).status_code == 403

    page = sign_in(tab, base, "sk-wrong")  # a wrong key: the form again, saying so
    assert page.is_visible(".login-error")
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script can read the key
    page.fill("#key", viewer)
    with page.expect_navigation() as navigation:
        page.click("button[type=submit]")
    assert navigation.value.status == 401 and page.is_visible(".login-error")
    page.fill("#key", ADMIN_KEY)
    with page.expect_navigation() as navigation:
        page.click("button[type=submit]")
    assert navigation.value.status == 200
    tab.wait_ok()
    assert ADMIN_KEY not in page.content() and page.evaluate("document.cookie") == ""
    with page.expect_navigation() as navigation:
        page.click(".logout button")
    assert navigation.value.status == 401 and page.is_visible("#key")
    assert tab.dialogs == []


def test_the_page_says_when_the_api_is_unreachable(tab: Tab, dashboard_gateway: Callable[..., RunningGateway]) -> None:
    gateway = dashboard_gateway()
    sent = send_known_traffic(gateway.base_url, rounds=1)
    interval = refresh_s(gateway.base_url)
    sign_in(tab, gateway.base_url)
    wait_for_requests(tab, sent, interval + 5)
    shown = tab.text("#k-spend")
    stop_gateway(gateway)
    tab.page.wait_for_function("() => document.getElementById('status').dataset.state === 'unreachable'",
                               timeout=(interval + 3) * 1000)
    assert "API unreachable" in tab.text("#status")
    assert tab.text("#k-spend") == shown  # the last figures stay, marked stale by the status
    assert tab.dialogs == []


def test_llmroute_dashboard_serves_the_same_page_from_the_ledger_alone(
        tab: Tab, dashboard_gateway: Callable[..., RunningGateway]) -> None:
    gateway = dashboard_gateway(history=True)
    ledger = gateway.ledger  # type: ignore[attr-defined]
    sent = send_known_traffic(gateway.base_url)
    stop_gateway(gateway)  # its ledger flushed: from here on, the file alone
    requests = gateway.history + sent  # type: ignore[attr-defined]
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmroute.cli", "dashboard", "--ledger", str(ledger),
                             "--port", str(port), "--api-key", ADMIN_KEY],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "LLMROUTE_DASHBOARD_KEY": ""})
    try:
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{base}/dashboard/static/app.css").status_code == 200
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return False

        wait_until(up, 30, "llmroute dashboard to listen")
        assert httpx.get(f"{base}/dashboard/api/overview").status_code == 401
        sign_in(tab, base)
        wait_for_requests(tab, requests, 10)
        assert_figures_equal_report(tab, ledger)
        images_loaded(tab)
        tab.screenshot("ledger-overview")
        tab.show("providers")
        assert "From the ledger alone" in tab.text("#p-source")
        assert tab.errors == [] and tab.dialogs == []
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    print(f"screenshots in {artefacts()}")
