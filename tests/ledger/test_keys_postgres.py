"""Gateway keys in a real PostgreSQL ledger: schema v4 from v3 in place, the CLI by DSN, and a key reader
that reconnects after losing its connection."""

from __future__ import annotations

import json

import pytest

from llmroute.gateway.auth import KeyStore, LedgerKeySource
from llmroute.keys import GatewayKeys, KeyRequestError, KeySettings
from llmroute.ledger import LedgerError, open_store
from llmroute.ledger.schema import GATEWAY_KEYS_VERSION, MIGRATIONS, SCHEMA_TABLE, latest_version

from ..test_cli import llmroute
from .test_postgres import postgres_dsn  # noqa: F401
from .test_postgres_v3 import _database

psycopg = pytest.importorskip("psycopg")


def test_a_v3_ledger_gains_gateway_keys_and_the_cli_manages_them_by_dsn(postgres_dsn: str) -> None:  # noqa: F811
    dsn = _database(postgres_dsn, "llmroute_keys_v3")
    with psycopg.connect(dsn, autocommit=True) as db, db.transaction():  # what v3 left in a database
        db.execute(f"CREATE TABLE {SCHEMA_TABLE} (version INTEGER NOT NULL)")
        db.execute(f"INSERT INTO {SCHEMA_TABLE} (version) VALUES (3)")
        for statements in MIGRATIONS["postgres"][:3]:
            for sql in statements:
                db.execute(sql)

    made = llmroute("keys", "create", "--name", "sales-bot", "--budget-usd", "50", "--period", "month",
                    "--rpm", "600", "--tpm", "100000", "--strategies", "balanced,quality_aware", "--tags", "team=sales",
                    "--ledger", dsn)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("llmr-")
    store = open_store(dsn, readonly=True)
    assert store.schema_version == latest_version("postgres") >= GATEWAY_KEYS_VERSION
    assert store.fetch("SELECT admin FROM gateway_keys") == [(False,)]  # a boolean column, as SQLite's is 0/1
    store.close()

    assert llmroute("keys", "update", "sales-bot", "--no-rpm", "--admin", "--ledger", dsn).returncode == 0
    taken = llmroute("keys", "create", "--name", "sales-bot", "--ledger", dsn)
    assert taken.returncode == 2 and "already exists" in taken.stderr
    listed = llmroute("keys", "list", "--format", "json", "--ledger", dsn)
    [entry] = json.loads(listed.stdout)
    assert entry["rpm"] is None and entry["tpm"] == 100000 and entry["admin"] and entry["budget_usd"] == 50
    assert entry["strategies"] == ["balanced", "quality_aware"] and entry["tags"] == ["team=sales"]
    assert key not in listed.stdout and "not-a-real-password" not in listed.stdout + made.stderr + taken.stderr

    held = KeyStore([])
    source = LedgerKeySource(held, dsn, refresh_s=1)
    assert source.refresh() and held.check(f"Bearer {key}") == "sales-bot"
    assert held.identify(f"Bearer {key}").admin  # type: ignore[union-attr]

    # The reader's connection is cut (a server restart, a failover): that read fails, the keys stay, the next reconnects.
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'llmroute_keys_v3' "
                   "AND pid <> pg_backend_pid()")
    writer = GatewayKeys(open_store(dsn))
    writer.revoke("sales-bot")
    with pytest.raises(LedgerError, match="cannot read the ledger"):
        source.refresh()
    assert held.check(f"Bearer {key}") == "sales-bot"
    assert source.refresh() and held.check(f"Bearer {key}") is None and held  # revoked; a key is still required
    source.close()

    with pytest.raises(KeyRequestError, match="revoked"):
        writer.create("sales-bot", KeySettings())
    writer.store.close()
