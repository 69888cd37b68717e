"""A real Chromium (the system's, driven by Playwright) in front of a real gateway over a ledger of known content.

Chromium comes from the distribution (``apt-get install chromium``) and Playwright from PyPI; no browser is
downloaded. Without them the tests skip, except in CI (``LLMROUTE_TEST_STRICT``), where they fail.
Screenshots go to ``$LLMROUTE_TEST_ARTEFACTS/dashboard`` (default: the system's temporary directory).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import require
from ..gateway.conftest import RunningGateway, gateway_factory  # noqa: F401  (a fixture, used below)

ADMIN_KEY = "sk-dashboard-admin-0123456789"
XSS_TAG = "<img src=x onerror=alert(1)>"
XSS_USER = "\"><svg onload=alert(2)>"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def artefacts() -> Path:
    """Where screenshots go: kept after the run, for a person (or CI) to look at."""
    path = Path(os.environ.get("LLMROUTE_TEST_ARTEFACTS") or tempfile.gettempdir()) / "dashboard"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")  # not the session: its event loop would block later asyncio tests
def browser() -> Iterator[Any]:
    executable = chromium_path()
    require(executable is not None, "chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    require(sync_playwright is not None, "playwright (pip install playwright)")
    with sync_playwright() as driver:  # type: ignore[misc]
        launched = driver.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


@dataclass
class Tab:
    """A browser tab and what it reported: console errors, uncaught exceptions and dialogs (alert, confirm).

    Predicates are passed as functions: the page's CSP forbids eval, which Playwright uses for expressions."""

    page: Any
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def wait_ok(self, timeout_s: float = 15) -> None:
        """Until the page has shown a successful refresh (the latest, when the test marked the status first)."""
        self.page.wait_for_function("() => document.getElementById('status').dataset.state === 'ok'",
                                    timeout=timeout_s * 1000)

    def value(self, element_id: str) -> float:
        """The raw number behind a figure on the page (``data-value``, as the API sent it)."""
        return float(self.page.get_attribute(f"#{element_id}", "data-value"))

    def text(self, selector: str) -> str:
        return self.page.text_content(selector) or ""

    def show(self, view: str) -> None:
        """Switch views with the page's own tabs, then wait for that view's refresh."""
        self.page.evaluate("document.getElementById('status').dataset.state = 'switching'")
        self.page.click(f".tabs a[data-view='{view}']")
        self.page.wait_for_function("(view) => (s => s.dataset.state === 'ok' && s.dataset.view === view)"
                                    "(document.getElementById('status'))", arg=view, timeout=15_000)

    def screenshot(self, name: str) -> Path:
        path = artefacts() / f"{name}.png"
        self.page.screenshot(path=str(path))  # what a person sees first: the top of the view
        return path


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    opened = Tab(page)
    page.on("console", lambda message: opened.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: opened.errors.append(f"uncaught: {error}"))

    def on_dialog(dialog: Any) -> None:
        opened.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield opened
    context.close()


def sign_in(tab: Tab, base_url: str, key: str = ADMIN_KEY) -> Any:
    """The sign-in form a person sees without a key (a 401), filled in; the page's answer to the form.

    Chromium logs the form's own 401 as a console error: that one, and only that one, is expected."""
    first = tab.page.goto(f"{base_url}/dashboard")
    assert first is not None and first.status == 401
    assert all("401" in error for error in tab.errors), tab.errors
    tab.errors.clear()
    tab.page.fill("#key", key)
    with tab.page.expect_navigation():
        tab.page.click("button[type=submit]")
    return tab.page


# -- a ledger of known content ------------------------------------------------------------------------------


def dashboard_config(seed_config: dict[str, Any], ledger: Path) -> dict[str, Any]:
    return {**seed_config, "ledger": {"path": str(ledger), "flush_interval_s": 0.05},
            "gateway": {"api_keys": [{"id": "admin", "key": ADMIN_KEY}]}}


def write_history(ledger: Path, pairs: int, days: int = 14) -> int:
    """Two weeks of requests and graded pairs of known content, through the project's own ledger writer (as
    the router and shadow evaluation write them): priced at the emulated pair's prices, with fallbacks and
    failures, so that every chart has something to draw. Returns the number of requests written."""
    from llmroute.emulator import get_profile
    from llmroute.ledger import Ledger, open_store
    from llmroute.result import Attempt

    from ..ledger.test_store import entry
    from ..test_quality_report import synthetic_pairs

    prices = {name: get_profile(name).price_per_m["input"] for name in ("runpod", "cerebras")}
    models = {name: get_profile(name).model for name in ("runpod", "cerebras")}
    writer = Ledger(open_store(str(ledger)), flush_interval_s=0.01)
    now, written = time.time(), 0
    for day in range(days, 0, -1):
        for i in range(30 + 3 * (day % 5)):
            provider = "cerebras" if i % 4 == 0 else "runpod"
            prompt, completion = 12_000 + 97 * i, 1_500 + 13 * day
            cost = (prompt + completion) * prices[provider] / 1e6
            attempts = [Attempt(provider, models[provider], True, 300.0 + 7 * i, 200, prompt_tokens=prompt,
                                completion_tokens=completion, cost_usd=cost)]
            if i % 9 == 5:  # the other provider failed first
                other = "runpod" if provider == "cerebras" else "cerebras"
                attempts.insert(0, Attempt(other, models[other], False, 40.0, 503, kind="server_error",
                                           error="upstream overloaded"))
            failed = i % 23 == 22
            writer.record(entry(day * 1000 + i, ts=now - day * 86400 + 60 * i, provider=provider,
                                model=models[provider], prompt_tokens=prompt, completion_tokens=completion,
                                cost_usd=0.0 if failed else cost, status="failed" if failed else "ok",
                                latency_ms=320.0 + 7 * i, fallback=len(attempts) > 1, attempts=attempts,
                                tags=["team=sales" if i % 3 else "team=support"], request_id=f"hist-{day}-{i}"))
            written += 1
    for day in range(days):  # graded pairs every day, for retained quality over time
        for graded in synthetic_pairs(pairs // days, seed=day, now=now - day * 86400):
            writer.record_pair(graded)
    writer.close()
    assert writer.dropped == 0
    return written


KNOWN_TRAFFIC = [
    # (tags header, user, strategy header)
    ("team=sales", "alice", None),
    ("team=sales", "alice", "cost_optimized"),
    ("team=support", "bob", None),
    (XSS_TAG, XSS_USER, None),
    ("team=sales," + XSS_TAG, "alice", "quality_optimized"),
    ("", "carol", None),
]


def send(base_url: str, tags: str = "", user: str | None = None, strategy: str | None = None,
         request_id: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    if tags:
        headers["x-llmroute-tags"] = tags
    if strategy:
        headers["x-llmroute-strategy"] = strategy
    if request_id:
        headers["x-request-id"] = request_id
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "What is 2 + 2?"}],
                            "max_tokens": 16}
    if user:
        body["user"] = user
    answer = httpx.post(f"{base_url}/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer


def send_known_traffic(base_url: str, rounds: int = 2) -> int:
    for _ in range(rounds):
        for tags, user, strategy in KNOWN_TRAFFIC:
            send(base_url, tags, user, strategy)
    return rounds * len(KNOWN_TRAFFIC)


def cli_json(*args: str) -> dict[str, Any]:
    """``llmroute ARGS --format json`` in a subprocess: what a user would read."""
    proc = subprocess.run([sys.executable, "-m", "llmroute.cli", *args, "--format", "json"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll a condition on something that has no event to wait on (a ledger file), with a deadline."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def dashboard_gateway(tmp_path: Path, seed_config: dict[str, Any],
                      gateway_factory: Callable[..., RunningGateway]) -> Callable[..., RunningGateway]:
    """Start a gateway over ``tmp_path/ledger.sqlite3`` (two weeks of history written first when asked)."""

    def start(history: bool = False, **overrides: Any) -> RunningGateway:
        ledger = tmp_path / "ledger.sqlite3"
        written = write_history(ledger, pairs=300) if history else 0
        gateway = gateway_factory({**dashboard_config(seed_config, ledger), **overrides})
        gateway.ledger = ledger  # type: ignore[attr-defined]
        gateway.history = written  # type: ignore[attr-defined]
        return gateway

    return start
