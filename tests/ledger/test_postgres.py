"""The Postgres ledger against a real server, started here on loopback."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmroute import LLMRouter
from llmroute.ledger import Ledger, LedgerError, open_store
from llmroute.ledger.schema import latest_version

from ..conftest import emulator, free_port, provider
from ..test_cli import llmroute
from .test_store import entry

pytest.importorskip("psycopg")


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    return found[-1]


@pytest.fixture(scope="module")
def postgres_dsn() -> Iterator[str]:
    initdb, postgres = _bin("initdb"), _bin("postgres")
    if not initdb or not postgres:
        pytest.skip("PostgreSQL server binaries are not installed (Debian: apt-get install postgresql)")
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="llmroute-pg-"))
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(data, "postgres")
    subprocess.run([*as_user, initdb, "-D", str(data / "db"), "-U", "llmroute", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen([*as_user, postgres, "-D", str(data / "db"), "-p", str(port), "-h", "127.0.0.1",
                               "-k", str(data), "-c", "fsync=off"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    import psycopg

    dsn = f"postgresql://llmroute:not-a-real-password@127.0.0.1:{port}/postgres"
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError(f"postgres did not start: {server.stderr.read() if server.stderr else ''}")
            time.sleep(0.1)
    yield dsn
    server.terminate()
    server.wait(timeout=30)
    shutil.rmtree(data, ignore_errors=True)


def test_router_records_into_postgres_and_report_reads_it(postgres_dsn: str) -> None:
    import asyncio

    async def run() -> list[float]:
        with emulator("runpod") as emu:
            config = {"providers": {"runpod": provider(emu.base_url, "runpod")}, "ledger": {"dsn": postgres_dsn}}
            async with LLMRouter(config=config) as router:
                return [(await router.generate(f"lead {i}", max_tokens=20, tags={"team": "sales"})).cost_usd
                        for i in range(5)]

    costs = asyncio.run(run())
    proc = llmroute("report", "--ledger", postgres_dsn, "--format", "json", "--by", "tag")
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(proc.stdout)
    assert data["groups"][0]["group"] == "team=sales" and data["groups"][0]["requests"] == 5
    assert data["total"]["cost_usd"] == pytest.approx(sum(costs), abs=1e-12)
    assert "not-a-real-password" not in proc.stdout + proc.stderr
    days = json.loads(llmroute("report", "--ledger", postgres_dsn, "--format", "json", "--by", "day").stdout)
    assert days["groups"][0]["group"] == time.strftime("%Y-%m-%d", time.gmtime())


def test_migrations_are_versioned_and_foreign_tables_refused(postgres_dsn: str) -> None:
    store = open_store(postgres_dsn)
    assert store.fetch("SELECT version FROM llmroute_schema") == [(latest_version("postgres"),)]
    ledger = Ledger(store)
    ledger.record(entry(1, fallback=True))
    assert ledger.flush()
    assert store.fetch("SELECT fallback FROM requests WHERE request_id = 'req-1'") == [(True,)]
    ledger.close()
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as db:
        db.execute("CREATE DATABASE other")
    other = postgres_dsn.rsplit("/", 1)[0] + "/other"
    with psycopg.connect(other, autocommit=True) as db:
        db.execute("CREATE TABLE requests (id INT)")
    with pytest.raises(LedgerError, match="has a 'requests' table that is not llmroute's") as info:
        open_store(other)
    assert "not-a-real-password" not in str(info.value) and "***" in str(info.value)
