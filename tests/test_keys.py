"""The key store over a real SQLite ledger, the gateway's key map and refresher, and per-key buckets."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from llmroute.gateway.auth import KeyStore, LedgerKeySource
from llmroute.keys import GatewayKeys, KeyRequestError, KeySettings, StoredKey, key_digest
from llmroute.ledger import Ledger, open_store
from llmroute.ledger.schema import GATEWAY_KEYS_VERSION, latest_version
from llmroute.ledger.sqlite import SQLiteStore

from .ledger.test_pairs import V2_LEDGER
from .ledger.test_store import entry


def test_only_the_digest_is_stored_and_nothing_listed_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    keys = GatewayKeys(open_store(str(path)))
    key = keys.create("sales-bot", KeySettings(budget_usd=50, budget_period="week", rpm=600, tpm=100_000,
                                               strategies=("balanced", "quality_aware"), tags=("team=sales",)))
    other = keys.create("ops", KeySettings(admin=True))
    assert key.startswith("llmr-") and key != other and len(key) == len("llmr-") + 43
    stored = sqlite3.connect(path).execute("SELECT * FROM gateway_keys").fetchall()
    digest = hashlib.sha256(key.encode()).hexdigest()
    assert digest in str(stored) and key not in str(stored) and key[5:] not in str(stored)
    listed = keys.list()
    assert [k.name for k in listed] == ["ops", "sales-bot"]
    shown = str([k.public() for k in listed]) + repr(listed)
    assert digest not in shown and key not in shown
    sales = listed[1].settings
    assert (sales.budget_usd, sales.budget_period, sales.rpm, sales.tpm) == (50, "week", 600, 100_000)
    assert sales.strategies == ("balanced", "quality_aware") and sales.tags == ("team=sales",) and not sales.admin
    active, any_made = keys.load()
    assert any_made and set(active) == {key_digest(key), key_digest(other)} and active[key_digest(other)].settings.admin


def test_update_clears_and_revoke_is_for_good(tmp_path: Path) -> None:
    keys = GatewayKeys(open_store(str(tmp_path / "ledger.sqlite3")))
    keys.create("bot", KeySettings(budget_usd=5, budget_period="day", rpm=10, tags=("a=1",)))
    before = keys.version()
    changed = keys.update("bot", rpm=None, budget_usd=None, budget_period=None, tags=("b=2",), admin=True)
    assert changed.settings == KeySettings(tags=("b=2",), admin=True) and keys.version() != before
    with pytest.raises(KeyRequestError, match="--period needs --budget-usd"):
        keys.update("bot", budget_period="month")
    keys.revoke("bot")
    assert keys.revoke("bot").revoked  # twice is no error
    assert keys.load() == ({}, True)
    for attempt in (lambda: keys.update("bot", rpm=3), lambda: keys.create("bot", KeySettings())):
        with pytest.raises(KeyRequestError, match="revoked"):
            attempt()
    with pytest.raises(KeyRequestError, match="no key named 'ghost'"):
        keys.revoke("ghost")


@pytest.mark.parametrize(("settings", "message"), [
    (KeySettings(budget_usd=float("nan"), budget_period="day"), "--budget-usd must be a positive"),
    (KeySettings(budget_usd=0, budget_period="day"), "--budget-usd must be a positive"),
    (KeySettings(budget_usd=5), "--budget-usd needs --period"),
    (KeySettings(budget_usd=5, budget_period="year"), "--period must be one of day, week, month"),
    (KeySettings(tpm=-1), "--tpm must be a whole number"),
    (KeySettings(strategies=()), "--strategies needs at least one"),
    (KeySettings(strategies=("fast",)), "unknown strategy 'fast'"),
    (KeySettings(tags=("a\nb",)), "is not a tag"),
    (KeySettings(tags=tuple(f"t={i}" for i in range(33))), "at most 32 tags"),
])
def test_bad_settings_are_refused_naming_the_option(tmp_path: Path, settings: KeySettings, message: str) -> None:
    keys = GatewayKeys(open_store(str(tmp_path / "ledger.sqlite3")))
    with pytest.raises(KeyRequestError, match=message):
        keys.create("bot", settings)
    assert keys.list() == []


def test_an_older_ledger_is_migrated_to_v4_and_a_read_only_one_has_no_keys(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    shutil.copy(V2_LEDGER, path)
    reader = GatewayKeys(SQLiteStore(path, readonly=True))
    assert reader.list() == [] and reader.load() == ({}, False)
    before = sqlite3.connect(path).execute("SELECT * FROM requests").fetchall()
    keys = GatewayKeys(open_store(str(path)))
    assert keys.store.schema_version == latest_version("sqlite") >= GATEWAY_KEYS_VERSION
    keys.create("bot", KeySettings())
    assert sqlite3.connect(path).execute("SELECT * FROM requests").fetchall() == before
    assert [k.name for k in GatewayKeys(SQLiteStore(path, readonly=True)).list()] == ["bot"]


def test_config_keys_and_ledger_keys_side_by_side() -> None:
    store = KeyStore([("team-a", "config-key-1")])
    assert store.check("Bearer config-key-1") == "team-a" and store.identify("Bearer config-key-1").admin
    made = StoredKey("bot", 1.0, 1.0, settings=KeySettings(tags=("team=sales",), strategies=("balanced",), rpm=5))
    store.set_ledger_keys({key_digest("llmr-ledger-key"): made}, any_made=True)
    found = store.identify("Bearer llmr-ledger-key")
    assert found is not None and found.key_id == "bot" and not found.admin and found.rate_limited
    assert found.tags == ("team=sales",) and found.tag_names == frozenset({"team"}) and found.strategies == {"balanced"}
    assert store.identify("Bearer llmr-ledger-ke") is None and store.check("Bearer config-key-1") == "team-a"

    open_gateway = KeyStore([])
    assert not open_gateway
    open_gateway.set_ledger_keys({}, any_made=True)  # only revoked keys left: still closed
    assert open_gateway and open_gateway.identify("Bearer anything") is None


def test_the_refresher_keeps_the_last_keys_when_the_ledger_cannot_be_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "ledger.sqlite3"
    keys = GatewayKeys(open_store(str(path)))
    key = keys.create("bot", KeySettings())
    held = KeyStore([])
    source = LedgerKeySource(held, str(path), refresh_s=0.01)
    assert source.refresh() and not source.refresh()  # read once; unchanged since, so not read again
    assert held.check(f"Bearer {key}") == "bot"

    attempts = 0
    failed_enough = asyncio.Event()

    def counted() -> bool:
        nonlocal attempts
        attempts += 1
        if attempts >= 5:
            failed_enough.set()
        return LedgerKeySource.refresh(source)

    async def run() -> None:
        source.refresh = counted  # type: ignore[method-assign]
        source.start()
        await asyncio.wait_for(failed_enough.wait(), 20)
        await source.aclose()

    keys.store.execute("ALTER TABLE gateway_keys RENAME TO gateway_keys_gone")  # unreadable, the same error each time
    with caplog.at_level(logging.WARNING, logger="llmroute.gateway"):
        asyncio.run(run())
    warnings = [r.getMessage() for r in caplog.records if "gateway keys" in r.getMessage()]
    assert len(warnings) == 1 and "keeping the 1 keys last read" in warnings[0]  # once, not once per failure
    assert key not in caplog.text and key_digest(key).hex() not in caplog.text
    assert held.check(f"Bearer {key}") == "bot"


def test_a_key_reader_in_the_writers_process_does_not_hide_its_writes(tmp_path: Path) -> None:
    """Reading keys opens a second connection in the ledger writer's process. Opening the file outside SQLite
    there (to read its header) dropped the writer's POSIX locks, so the next process to close the ledger
    deleted the write-ahead log under the writer, and its later rows were invisible until it stopped."""
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(open_store(str(path)), flush_interval_s=0.01)
    ledger.record(entry(0))
    assert ledger.flush(10)
    LedgerKeySource(KeyStore([]), str(path), refresh_s=1).refresh()
    count = "import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM requests').fetchone()[0])"
    assert subprocess.run([sys.executable, "-c", count, str(path)], capture_output=True, text=True).stdout.strip() == "1"
    ledger.record(entry(1))
    assert ledger.flush(10)
    seen = subprocess.run([sys.executable, "-c", count, str(path)], capture_output=True, text=True)
    ledger.close()
    assert seen.stdout.strip() == "2", seen.stderr
