"""benchmarks/streams.py in its smallest form: direct and llmroute, a handful of short streams, under 30 s."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STREAMS, RATE, DURATION = 8, 20, 1.0


def test_streams_benchmark_quick_table(tmp_path: Path) -> None:
    out = tmp_path / "runs.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "streams.py"), "--streams", str(STREAMS), "--duration",
         str(DURATION), "--rate", str(RATE), "--ramp", "0.2", "--grace", "10", "--configs", "direct,llmroute",
         "--no-pin", "--json", str(out)],
        check=False, capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|")[1:-1] for line in proc.stdout.splitlines() if line.startswith(f"| {STREAMS} |")]
    by_config = {cells[1].strip(): [c.strip() for c in cells] for cells in rows}
    assert set(by_config) == {"direct", "llmroute"}, proc.stdout
    for cells in by_config.values():
        assert cells[2] == f"{STREAMS}/{STREAMS}" and cells[3] == "0", proc.stdout  # ok, errors
    runs = {r["config"]: r for r in json.loads(out.read_text())}
    per_stream = round(RATE * DURATION) + 3  # cadence events, finish, usage, [DONE]
    for run in runs.values():
        assert run["errors"] == {} and run["short_streams"] == 0
        assert run["events"] == STREAMS * per_stream
        assert run["ttft_ms"]["p50"] is not None and run["gap_added_ms"]["n"] == STREAMS * round(RATE * DURATION)
    assert runs["llmroute"]["cpu_us_per_event"] is not None
    # the load generator sees the upstream's cadence: a gap is one interval, give or take a loaded machine's jitter
    assert abs(runs["direct"]["gap_added_ms"]["p50"]) < 10
