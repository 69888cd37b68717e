"""Thousands of long concurrent streams through each proxy, side by side in one run.

    python benchmarks/streams.py [--streams 500,1000,2000] [--duration 10] [--rate 20] [--configs ...]
    python benchmarks/streams.py --quick                     # smoke: 200 streams, 5 s each
    python benchmarks/streams.py --streams 1000 --py-spy-dir /tmp/prof   # also py-spy every proxy's run
    python benchmarks/streams.py --llmroute-entry wrap.py --variant 'gc off:PATCH=gc-off'   # A/B experiments

The upstream is benchmarks/stream_upstream.py (raw asyncio + httptools on uvloop, not the project's
emulator): every stream gets OpenAI chunks at a fixed cadence (default 20 events/s for 10 s), then a finish
chunk, a usage chunk and [DONE]. Each configuration points at that same upstream:

  direct               the upstream itself: the load generator's and the upstream's floor
  llmroute             `llmroute serve`, one worker, defaults (max_connections 4096 per provider), ledger on
                       (SQLite in the run's temporary folder)
  llmroute pool=4096   the same with the provider's max_connections at 4096: no stream waits for a slot
  llmroute no-ledger   pool 4096, LLMROUTE_LEDGER=off (not run by default: --configs to add it)
  forwarder uvicorn    benchmarks/stream_forwarder.py: raw ASGI on uvicorn+uvloop+httptools, aiohttp client,
                       bytes passed through
  forwarder granian    the same app on granian's ASGI interface (if granian is installed)
  litellm              the LiteLLM proxy (if --litellm-venv has it; see setup_litellm.sh); skipped at the
                       levels above one where most of its streams failed

--variant NAME:K=V,K=V adds a configuration NAME: `llmroute pool=4096` started with those environment
variables ({tmp}, {streams} and {name} in a value are filled in), to compare an experiment side by side;
--llmroute-entry SCRIPT starts every llmroute configuration as `python SCRIPT serve ...` instead of
`python -m llmroute.cli serve ...` (a wrapper that instruments or patches the gateway without editing it).

The load generator (benchmarks/stream_loadgen.py) is its own process: one raw asyncio protocol per stream,
httptools framing, no JSON, streams opened evenly over --ramp seconds. With --pin (and 2 or more cores) the
upstream and the load generator are pinned to CPU 0 and the proxy under test to CPU 1: right on a quiet
machine, wrong on a shared one (a pinned proxy cannot move off a core that other work is using, and is
starved: measured at load 4, llmroute got 0.34 of a core pinned, 0.50 unpinned). Proxies are started afresh
for each level (so each RSS growth starts from an idle process) and run one after another within a level.

Per configuration and level: TTFT (request written -> first event) p50/p99 and added over direct;
inter-event gap minus the cadence, p50/p99/p99.9 over each stream's life (direct shows the floor: libuv timers
tick in ms), and its p99 over the gaps while every stream is open (none opening or closing: per-request work
is not in them; as the issue's first measurement had it);
events relayed per second while every stream is open (from the last stream's first event to the first
stream's finish; the whole run when there is no such window, as when a proxy falls seconds behind, which
also dilutes its CPU and starved shares) and in the run's busiest second (the rate at saturation); the proxy's CPU per event over that window (utime+stime of its process tree from
/proc), its CPU share, and its starved share (time its threads were runnable but waiting for a CPU, from
/proc/PID/task/*/schedstat: a proxy that falls behind while starved was short of CPU, not slow); RSS growth per 1,000 open streams (median RSS in the window minus RSS just before the run);
errors (non-200, cut streams, streams missing [DONE]). The load average (/proc/loadavg) is printed with
every row: the machine is shared, so read ratios measured in the same run, not absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _util import machine

MASTER_KEY = "sk-bench-master-key"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
ALL_CONFIGS = ("direct", "llmroute", "llmroute pool=4096", "llmroute no-ledger", "forwarder uvicorn",
               "forwarder granian", "litellm")
DEFAULT_CONFIGS = ("direct", "llmroute", "llmroute pool=4096", "forwarder uvicorn", "forwarder granian", "litellm")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (granian and LiteLLM serve from child processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo.extend(int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split())
        except OSError:
            pass
    return out


def runq_wait_s(pid: int) -> float:
    """Seconds ``pid``'s threads spent runnable but waiting for a CPU (/proc/PID/task/*/schedstat): on a shared
    machine, the share of a window a proxy was starved by other processes rather than busy or idle."""
    total = 0.0
    for p in tree(pid):
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                total += int(Path(f"/proc/{p}/task/{task}/schedstat").read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            pass
    return total


def cpu_rss(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system, all threads) and RSS in MB of ``pid``'s process tree."""
    cpu = rss = 0.0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / TICK
            rss += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE / 1e6
        except (OSError, IndexError, ValueError):
            pass
    return cpu, rss


class Sampler(threading.Thread):
    """(monotonic time, CPU s, RSS MB, run-queue wait s) of a process tree every ``period_s``."""

    def __init__(self, pid: int, period_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.period_s = pid, period_s
        self.samples: list[tuple[float, float, float, float]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            self.samples.append((time.monotonic(), *cpu_rss(self.pid), runq_wait_s(self.pid)))
            self.halt.wait(self.period_s)

    def stop(self) -> list[tuple[float, float, float, float]]:
        self.halt.set()
        self.join()
        self.samples.append((time.monotonic(), *cpu_rss(self.pid), runq_wait_s(self.pid)))
        return self.samples


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None, log: Path | None = None,
            cpu: int | None = None, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    with ExitStack() as files:
        out = files.enter_context(open(log, "w")) if log else subprocess.DEVNULL
        proc = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=cwd)
    if cpu is not None:  # before it starts serving; what it forks later inherits the affinity
        os.sched_setaffinity(proc.pid, {cpu})
    try:
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_ready(url: str, headers: dict[str, str], proc: subprocess.Popen, timeout_s: float = 180) -> None:
    """A few non-streaming completions through ``url`` (also warms the proxy's pool)."""
    import httpx

    body = {"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode}")
        try:
            if httpx.post(url, json=body, headers=headers, timeout=5).status_code == 200:
                for _ in range(20):
                    httpx.post(url, json=body, headers=headers, timeout=5)
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def analyse(load: dict, samples: list[tuple[float, float, float, float]] | None, baseline_rss: float | None) -> dict:
    """Combine the load generator's figures with the proxy's CPU/RSS samples over the all-open window."""
    origin, bucket_s = load["origin"], load["bucket_s"]
    buckets = {int(k): v for k, v in load["buckets"].items()}
    w0, w1 = load["window"]
    if w1 - w0 < 0.5:  # no window when every stream was open (errors, or ramp >= duration): the whole run
        ts = [origin + k * bucket_s for k in buckets]
        w0, w1 = (min(ts), max(ts) + bucket_s) if ts else (0.0, 0.0)
    row = {k: load[k] for k in ("streams", "ok", "errors", "events", "short_streams", "ttft_ms", "gap_added_ms",
                                "gap_open_ms", "cpu_s")}
    t0, t1 = w0, w1
    cpu = rss = waited = None
    if samples:
        inside = [s for s in samples if w0 <= s[0] <= w1]
        if len(inside) >= 2:
            (t0, c0, _, q0), (t1, c1, _, q1) = inside[0], inside[-1]
            cpu, waited = c1 - c0, q1 - q0
            rss = statistics.median(s[2] for s in inside)
    events = sum(v for k, v in buckets.items() if t0 <= origin + k * bucket_s < t1)
    row["window_s"] = t1 - t0
    per = max(1, round(1.0 / bucket_s))  # the busiest second of the run: the relay rate at saturation
    counts = [buckets.get(k, 0) for k in range(min(buckets, default=0), max(buckets, default=0) + 1)]
    running = sum(counts[:per])
    peak = running
    for i in range(per, len(counts)):
        running += counts[i] - counts[i - per]
        peak = max(peak, running)
    row["events_per_s_peak"] = float(peak)
    row["events_per_s"] = events / (t1 - t0) if t1 > t0 else 0.0
    row["cpu_us_per_event"] = cpu * 1e6 / events if cpu is not None and events else None
    row["cpu_share"] = cpu / (t1 - t0) if cpu is not None and t1 > t0 else None
    row["runq_share"] = waited / (t1 - t0) if waited is not None and t1 > t0 else None
    row["rss_mb_per_1000"] = ((rss - baseline_rss) / (load["streams"] / 1000)
                              if rss is not None and baseline_rss is not None else None)
    row["rss_mb"] = rss
    return row


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.pin = args.pin and (os.cpu_count() or 1) >= 2
        self.events = max(1, round(args.rate * args.duration))
        self.results: list[dict] = []
        self.variants: dict[str, dict[str, str]] = {}
        for spec in args.variant:
            name, _, env = spec.partition(":")
            pairs: list[list[str]] = []
            for part in env.split(","):  # a part without "=" continues the last value: K=a,b,K2=c
                if "=" in part:
                    pairs.append(part.split("=", 1))
                elif pairs:
                    pairs[-1][1] += "," + part
            self.variants[name.strip()] = {k.strip(): v for k, v in pairs}

    def cpu(self, which: int) -> int | None:
        return which if self.pin else None

    def proxy_command(self, name: str, upstream: str, port: int, streams: int) -> tuple[list[str], dict[str, str], dict[str, str]]:
        """(command, environment, request headers) for a configuration."""
        py = sys.executable
        if name.startswith("llmroute") or name in self.variants:
            slug = slugify(name)
            config = self.tmp / f"{slug}.yaml"
            pool = "" if name == "llmroute" else "    max_connections: 4096\n"
            config.write_text(f"providers:\n  upstream:\n    base_url: {upstream}\n    model: bench-model\n"
                              f"    price_per_m: {{input: 0.02, output: 0.02}}\n{pool}")
            ledger = "off" if name == "llmroute no-ledger" else str(self.tmp / f"{slug}-{port}.sqlite3")
            env = {"LLMROUTE_LEDGER": ledger}
            for k, v in self.variants.get(name, {}).items():
                env[k] = v.format(tmp=self.tmp, streams=streams, name=slug)
            entry = [str(Path(self.args.llmroute_entry).resolve())] if self.args.llmroute_entry else ["-m", "llmroute.cli"]
            return [py, *entry, "serve", "--config", str(config), "--port", str(port), "--workers", "1"], env, {}
        if name.startswith("forwarder"):
            return [py, str(HERE / "stream_forwarder.py"), name.split()[1], upstream, str(port)], {}, {}
        if name == "litellm":
            config = self.tmp / "litellm.yaml"
            config.write_text("model_list:\n  - model_name: bench-model\n    litellm_params:\n"
                              f"      model: openai/bench-model\n      api_base: {upstream}\n      api_key: none\n")
            return ([str(Path(self.args.litellm_venv) / "bin" / "litellm"), "--config", str(config), "--port",
                     str(port), "--num_workers", "1"],
                    {"LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
                    {"Authorization": f"Bearer {MASTER_KEY}"})
        raise ValueError(name)

    def loadgen(self, url: str, streams: int, headers: dict[str, str]) -> dict:
        cmd = [sys.executable, str(HERE / "stream_loadgen.py"), url, "--streams", str(streams),
               "--events", str(self.events), "--interval", str(1 / self.args.rate), "--ramp", str(self.args.ramp),
               "--grace", str(self.args.grace)]
        cmd += [a for k, v in headers.items() for a in ("--header", f"{k}:{v}")]
        if self.pin:
            cmd += ["--cpu", "0"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return json.loads(out)

    def py_spy(self, pid: int, name: str, streams: int) -> subprocess.Popen | None:
        if not self.args.py_spy_dir:
            return None
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        out = Path(self.args.py_spy_dir) / f"{slugify(name)}-{streams}"
        target = max(tree(pid), key=lambda p: cpu_rss(p)[1])  # the serving process (largest RSS)
        return subprocess.Popen([spy, "record", "--pid", str(target), "--format", "raw", "--rate", "100",
                                 "--duration", str(int(self.args.ramp + self.args.duration)),
                                 *(["--native"] if self.args.py_spy_native else []), "--output", f"{out}.txt"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def level(self, streams: int, upstream: str, direct_url: str, configs: list[str]) -> None:
        with ExitStack() as stack:
            targets: dict[str, tuple[str, dict[str, str], subprocess.Popen | None]] = {}
            for name in configs:
                if name == "direct":
                    targets[name] = (direct_url, {}, None)
                    continue
                port = free_port()
                cmd, env, headers = self.proxy_command(name, upstream, port, streams)
                # Started in the temporary folder: `python -m` puts the current directory first on the path, so
                # from a source tree's root it would shadow a variant's PYTHONPATH with that tree's llmroute.
                proc = stack.enter_context(process(cmd, env, self.tmp / f"{slugify(name)}-{streams}.log",
                                                   cpu=self.cpu(1), cwd=self.tmp))
                targets[name] = (f"http://127.0.0.1:{port}/v1/chat/completions", headers, proc)
            for name, (url, headers, proc) in targets.items():
                if proc is not None:
                    wait_ready(url, headers, proc)
            for name, (url, headers, proc) in targets.items():
                if name in self.dead:
                    continue
                time.sleep(1.0)  # let the last run's sockets close
                before = loadavg()
                sampler = baseline = None
                if proc is not None:
                    baseline = cpu_rss(proc.pid)[1]
                    sampler = Sampler(proc.pid)
                    sampler.start()
                spy = self.py_spy(proc.pid, name, streams) if proc is not None else None
                load = self.loadgen(url, streams, headers)
                samples = sampler.stop() if sampler is not None else None
                if spy is not None:
                    spy.wait()
                row = analyse(load, samples, baseline)
                row.update(config=name, load=f"{before} → {loadavg()}")
                self.results.append(row)
                print(f"  {streams:>5} {name:<20} ok {row['ok']}/{streams}, {row['events_per_s']:,.0f} events/s, "
                      f"gap p99 {fmt(row['gap_added_ms']['p99'])} ms, TTFT p99 {fmt(row['ttft_ms']['p99'])} ms, "
                      f"load {row['load']}", file=sys.stderr, flush=True)
                if name == "litellm" and row["ok"] < streams / 2:
                    self.dead.add(name)  # at the levels it survives

    def run(self) -> None:
        args = self.args
        configs = [c for c in args.configs if c in ALL_CONFIGS] + list(self.variants)
        if "forwarder granian" in configs and not granian_installed():
            print("(granian not installed: forwarder granian skipped; pip install granian)", file=sys.stderr)
            configs.remove("forwarder granian")
        if "litellm" in configs and not (Path(args.litellm_venv) / "bin" / "litellm").exists():
            print(f"(LiteLLM skipped: {args.litellm_venv}/bin/litellm not found; run benchmarks/setup_litellm.sh)",
                  file=sys.stderr)
            configs.remove("litellm")
        self.dead: set[str] = set()
        port = free_port()
        with process([sys.executable, str(HERE / "stream_upstream.py"), str(port), "--rate", str(args.rate),
                      "--duration", str(args.duration)], log=self.tmp / "upstream.log", cpu=self.cpu(0)) as up:
            upstream = f"http://127.0.0.1:{port}/v1"
            wait_ready(upstream + "/chat/completions", {}, up)
            self.upstream_pid = up.pid
            up_cpu0 = cpu_rss(up.pid)[0]
            t0 = time.monotonic()
            for _ in range(args.rounds):
                for streams in args.streams:
                    self.level(streams, upstream, upstream + "/chat/completions", configs)
            self.upstream_cpu_share = (cpu_rss(up.pid)[0] - up_cpu0) / (time.monotonic() - t0)


def slugify(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name)


def granian_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("granian") is not None


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def report(bench: Bench) -> str:
    args, rows = bench.args, bench.results
    lines = [f"machine: {machine()}",
             (f"cadence {args.rate:g} events/s per stream for {args.duration:g} s ({bench.events} events + finish, "
             f"usage, [DONE]); streams opened over {args.ramp:g} s; {args.rounds} round(s); proxies "
             f"{'pinned to CPU 1, upstream and load generator to CPU 0' if bench.pin else 'not pinned'}; "
             f"medians over rounds where rounds > 1"),
             "",
             ("| streams | config | ok | errors | TTFT p50 ms | TTFT p99 ms | TTFT added p50/p99 ms | gap added p50 ms "
             "| gap added p99 ms | gap added p99.9 ms | gap added p99 all open ms | events/s all open | × direct | busiest 1 s events/s | proxy CPU µs/event "
             "| proxy CPU share | proxy starved share | RSS MB /1000 streams | load 1/5/15 before → after |"),
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]

    def med(group: list[dict], *path: str) -> float | None:
        values = []
        for r in group:
            v = r
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            if v is not None:
                values.append(v)
        return statistics.median(values) if values else None

    order = {n: i for i, n in enumerate([*ALL_CONFIGS, *bench.variants])}
    groups: dict[tuple[int, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["streams"], r["config"]), []).append(r)
    summary: dict[tuple[int, str], dict] = {}
    for (streams, name), group in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])):
        direct = groups.get((streams, "direct"), [])
        s = {k: med(group, *k.split(".")) for k in ("ttft_ms.p50", "ttft_ms.p99", "gap_added_ms.p50",
                                                      "gap_added_ms.p99", "gap_added_ms.p999", "gap_open_ms.p99",
                                                      "events_per_s", "events_per_s_peak",
                                                      "cpu_us_per_event", "cpu_share", "runq_share", "rss_mb_per_1000")}
        summary[(streams, name)] = s
        d50, d99, drate = (med(direct, "ttft_ms", "p50"), med(direct, "ttft_ms", "p99"), med(direct, "events_per_s"))
        added = ("-" if name == "direct" or d50 is None or s["ttft_ms.p50"] is None
                 else f"{s['ttft_ms.p50'] - d50:,.1f} / {s['ttft_ms.p99'] - d99:,.1f}")
        ratio = f"{s['events_per_s'] / drate:.2f}" if drate else "-"
        ok = sum(r["ok"] for r in group)
        errors: dict[str, int] = {}
        for r in group:
            for why, n in r["errors"].items():
                errors[why] = errors.get(why, 0) + n
        short = sum(r["short_streams"] for r in group)
        err = "; ".join(f"{n}× {why[:60]}" for why, n in sorted(errors.items(), key=lambda kv: -kv[1])[:2]) or "0"
        if short:
            err += f" ({short} short)"
        lines.append(
            f"| {streams} | {name} | {ok}/{streams * len(group)} | {err} | {fmt(s['ttft_ms.p50'])} | "
            f"{fmt(s['ttft_ms.p99'])} | {added} | {fmt(s['gap_added_ms.p50'], 2)} | {fmt(s['gap_added_ms.p99'], 2)} | "
            f"{fmt(s['gap_added_ms.p999'], 2)} | {fmt(s['gap_open_ms.p99'], 2)} | {fmt(s['events_per_s'], 0)} | {ratio} | {fmt(s['events_per_s_peak'], 0)} | {fmt(s['cpu_us_per_event'])} | "
            f"{fmt(s['cpu_share'], 2)} | {fmt(s['runq_share'], 2)} | {fmt(s['rss_mb_per_1000'])} | {'; '.join(r['load'] for r in group)} |")
    lines.append("")
    for streams in sorted({k[0] for k in summary}):
        d = summary.get((streams, "direct"))
        if d:
            lines.append(f"- {streams} streams, load generator check (direct): {d['events_per_s']:,.0f} events/s of "
                         f"{streams * args.rate:,.0f} nominal ({d['events_per_s'] / (streams * args.rate):.2f}); gap "
                         f"added p99 {fmt(d['gap_added_ms.p99'], 2)} ms; load generator CPU "
                         f"{med(groups[(streams, 'direct')], 'cpu_s'):.1f} s")
        pairs = [(ours, "forwarder uvicorn") for ours in ("llmroute", "llmroute pool=4096", *bench.variants)]
        pairs += [(variant, "llmroute pool=4096") for variant in bench.variants]
        for ours, against in dict.fromkeys(pairs):  # once each, a variant named like a config included
            base = summary.get((streams, against))
            o = summary.get((streams, ours))
            if not (o and base):
                continue

            def ratio(key: str, o: dict = o, base: dict = base) -> str:
                a, b = o[key], base[key]
                return f"{a / b:.2f}×" if a is not None and b else "-"

            lines.append(f"- {streams} streams, {ours} / {against}: events/s {ratio('events_per_s')} "
                         f"(target ≥ 1.0), gap added p99 {ratio('gap_added_ms.p99')} (target ≤ 1.25; with all open "
                         f"{ratio('gap_open_ms.p99')}), CPU/event "
                         f"{ratio('cpu_us_per_event')}, RSS/1000 streams {ratio('rss_mb_per_1000')} (target ≤ 1.5)")
    if hasattr(bench, "upstream_cpu_share"):
        lines.append(f"- upstream CPU share over the run: {bench.upstream_cpu_share:.2f} of a core")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", default="500,1000,2000", help="comma-separated concurrency levels")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds each stream lasts")
    parser.add_argument("--rate", type=float, default=20.0, help="events per second per stream")
    parser.add_argument("--ramp", type=float, default=2.0, help="seconds over which the streams open")
    parser.add_argument("--grace", type=float, default=30.0, help="a stream's deadline past its nominal end")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help=f"comma-separated, of: {', '.join(ALL_CONFIGS)}")
    parser.add_argument("--quick", action="store_true", help="smoke test: --streams 200 --duration 5 --ramp 1")
    parser.add_argument("--litellm-venv", default=".venv-litellm")
    parser.add_argument("--pin", action="store_true", help="pin upstream + load generator to CPU 0, proxies to CPU 1")
    parser.add_argument("--no-pin", action="store_false", dest="pin", help="do not pin (the default)")
    parser.add_argument("--py-spy-dir", help="py-spy record (raw, collapsed stacks) each proxy's run into DIR")
    parser.add_argument("--py-spy-native", action="store_true", help="with --py-spy-dir: native frames too (GC)")
    parser.add_argument("--json", help="also write every run's figures to this file")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME:K=V,K=V: llmroute pool=4096 with that environment, as one more configuration")
    parser.add_argument("--llmroute-entry", help="script run as `python SCRIPT serve ...` for the llmroute configs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, ledgers)")
    args = parser.parse_args()
    if args.quick:
        args.streams, args.duration, args.ramp = "200", 5.0, 1.0
    args.streams = [int(s) for s in str(args.streams).split(",") if s.strip()]
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in ALL_CONFIGS]
    if unknown:
        parser.error(f"unknown config(s) {unknown}; choose from {', '.join(ALL_CONFIGS)}")
    if args.py_spy_dir:
        Path(args.py_spy_dir).mkdir(parents=True, exist_ok=True)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit: thousands of sockets each
    tmp = Path(tempfile.mkdtemp(prefix="llmroute-streams-"))
    print(f"load before: {loadavg()}; temporary folder {tmp}", file=sys.stderr, flush=True)
    bench = Bench(args, tmp)
    try:
        bench.run()
    finally:
        if bench.results:
            print(report(bench))
        if args.json:
            Path(args.json).write_text(json.dumps(bench.results, indent=1))
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
