"""In a gateway, the dashboard's views over the ledger are computed in a child process: the event loop that
serves requests never waits on the ledger's reading. A child that dies is started again."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from .test_api import ADMIN, get, served, wait_for_rows  # noqa: F401  (served: a fixture)


def children(pid: int) -> list[int]:
    """The live processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def spawned(pid: int) -> list[int]:
    return [child for child in children(pid)
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()]  # not its resource tracker


def test_views_are_computed_in_a_child_process_started_again_if_it_dies(served) -> None:
    gateway, _, ledger = served
    wait_for_rows(ledger, 6)
    pid = gateway.process.pid
    assert spawned(pid) == []  # nothing until a view is asked for
    base = gateway.base_url + "/dashboard/api/"
    status, _, text = get(base + "overview", key=ADMIN)
    assert status == 200 and json.loads(text)["period"]["requests"] == 6
    workers = spawned(pid)
    assert len(workers) == 1
    os.kill(workers[0], signal.SIGKILL)
    status, _, text = get(base + "requests?limit=5", key=ADMIN)  # another query: not a cached answer
    assert status == 503 and "worker process stopped" in json.loads(text)["error"]["message"], text
    status, _, text = get(base + "requests?limit=6", key=ADMIN)
    assert status == 200 and len(json.loads(text)["requests"]) == 6
    again = spawned(pid)
    assert len(again) == 1 and again != workers
    gateway.process.send_signal(signal.SIGTERM)  # a gateway that stops takes its child with it
    assert gateway.process.wait(timeout=30) == 0
    assert not Path(f"/proc/{again[0]}").exists() or "Z" in Path(f"/proc/{again[0]}/stat").read_text().split()[2]
