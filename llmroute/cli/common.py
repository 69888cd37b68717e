"""The ``llmroute`` command line."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .. import __version__
from ..config import ProviderConfig, RouterConfig, load_config
from ..config.loading import shown_url
from ..errors import ConfigError, LLMRouteError
from ..state import InMemoryState
from ..strategies import QualityAware, RouteRequest, RoutingStrategy, build_strategy

MAX_PORT = 65535
"""Largest TCP port: every ``--port`` option is checked against it, so a typo is a usage error, not a traceback."""

app = typer.Typer(
    help="Route LLM traffic to the right provider, fall back when one fails, and prove the savings.",
    no_args_is_help=True, add_completion=True, pretty_exceptions_enable=False,
)
# Messages carry file names, keys and install hints such as ``llmroute[plot]``: Rich must print them as they
# are, so markup is off and styles are applied with ``Text``. Tables are wide; when output is piped, do not
# squeeze them into 80 columns (unless $COLUMNS says how wide to be).
console = Console(markup=False) if sys.stdout.isatty() or "COLUMNS" in os.environ else Console(width=240, markup=False)
err = Console(stderr=True, markup=False)


def fail(message: str, code: int = 2) -> None:
    err.print(Text.assemble(("error:", "red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def load_or_fail(path: Optional[Path], *, strict_env: bool = True) -> RouterConfig:
    try:
        return load_config(path, strict_env=strict_env)
    except ConfigError as exc:
        fail(str(exc))
        raise  # unreachable


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"


def _format_choices() -> list[str]:
    return [f.value for f in OutputFormat]


FormatOption = Annotated[str, typer.Option("--format", help="table, json or csv", autocompletion=_format_choices)]
JsonAlias = Annotated[bool, typer.Option("--json", hidden=True, help="Same as --format json")]


def output_format(fmt: str, as_json: bool = False) -> OutputFormat:
    """``--format``, checked the same way on every command, with the older ``--json`` flag still honoured."""
    if as_json:
        return OutputFormat.JSON
    try:
        return OutputFormat(fmt.lower())
    except ValueError:
        fail(f"--format must be table, json or csv, not '{fmt}'")
        raise  # unreachable


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2))


def print_csv(rows: list[dict[str, Any]]) -> None:
    """One header line, then one line per row; nested values (a split) as JSON text."""
    if not rows:
        return
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), extrasaction="ignore")
    writer.writeheader()
    writer.writerows({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()} for row in rows)
    print(out.getvalue(), end="")


def parse_strategy(value: str, option: str = "--strategy") -> RoutingStrategy:
    try:
        return RoutingStrategy(value)
    except ValueError as exc:
        fail(f"{option}: {exc}")
        raise  # unreachable


def check_plot_path(path: Optional[Path]) -> None:
    """Refuse a ``--plot`` file name whose format is not written, before any work is done."""
    if path is None:
        return
    from ..plots import chart_format

    try:
        chart_format(path)
    except LLMRouteError as exc:
        fail(str(exc))


def cannot_listen(host: str, port: int, exc: OSError) -> None:
    """One line naming the address and the reason (``address already in use``), not a traceback."""
    from ..playground import cannot_listen_message

    fail(cannot_listen_message(host, port, exc))


def _version_callback(value: bool) -> None:
    if value:
        print(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version_callback, is_eager=True,
                                                     help="Print the version and exit")] = None,
) -> None:
    """Route LLM traffic to the right provider, fall back when one fails, and prove the savings."""


def _price_text(p: ProviderConfig) -> str:
    per_m = f"{p.price_per_m.input:g} / {p.price_per_m.output:g}" if p.price_per_m else ""
    if p.price_per_gpu_second is None:
        return per_m
    gpu = f"${p.price_per_gpu_second:g}/GPU-s" + (f" (+{p.idle_share:.0%} idle)" if p.idle_share else "")
    return f"{gpu}; routing estimate {per_m}" if per_m else gpu


@app.command()
def version() -> None:
    """Print the version (also: llmroute --version)."""
    print(__version__)


@app.command("check-config")
def check_config(
    path: Annotated[Optional[Path], typer.Argument(help="Config file (default: ./llmroute.yaml or $LLMROUTE_CONFIG)")] = None,
    fmt: FormatOption = "table",
) -> None:
    """Validate a config file and print the effective routing table. Never prints a secret."""
    fmt = output_format(fmt)
    config = load_or_fail(path)
    weights = config.weights()
    providers = [{
        "provider": name, "model": p.model, "base_url": shown_url(p), "price": _price_text(p),
        "latency_prior_ms": p.latency_ms, "quality": p.quality, "timeout_s": p.timeout_s,
        "connect_timeout_s": p.connect_timeout_s, "context_window": p.context_window, "weight": weights[name],
        "api_key": "none" if p.api_key is None else (f"set from ${p.api_key_env}" if p.api_key_env else "set in file"),
    } for name, p in config.providers.items()]
    routes = _routes(config, weights)
    if fmt == OutputFormat.JSON:
        print_json({"source": config.source, "providers": providers, "routes": routes, "deadline_s": config.deadline_s,
                    "retry_rounds": config.retry_rounds, "baseline": config.baseline()})
        return
    if fmt == OutputFormat.CSV:
        print_csv(providers)
        return
    table = Table(title=f"Providers in {config.source}", title_justify="left")
    for column in ("provider", "model", "base_url", "price ($/1M in / out)", "latency prior", "quality",
                   "timeout (connect)", "context", "weight", "api key"):
        table.add_column(column, overflow="fold")
    for r in providers:
        table.add_row(
            r["provider"], r["model"], r["base_url"], r["price"], f"{r['latency_prior_ms']:g} ms", str(r["quality"]),
            f"{r['timeout_s']:g} s ({r['connect_timeout_s']:g} s)", str(r["context_window"] or "-"),
            f"{r['weight']:g}", r["api_key"],
        )
    console.print(table)
    order = Table(title="Routing order (first choice, then fallbacks)", title_justify="left")
    order.add_column("strategy")
    order.add_column("order")
    for route in routes:
        order.add_row(route["label"], route["order"])
    console.print(order)
    console.print(Text.assemble(
        f"deadline {config.deadline_s:g} s, retry rounds {config.retry_rounds}, savings baseline: {config.baseline()}. ",
        ("OK", "green"),
    ))


def _routes(config: RouterConfig, weights: dict[str, float]) -> list[dict[str, Any]]:
    """Each strategy's provider order for a typical request, as check-config shows it."""
    state = InMemoryState({n: p.latency_ms for n, p in config.providers.items()})
    request = RouteRequest(input_tokens=500, output_tokens=config.expected_output_tokens)
    routes = []
    for name in RoutingStrategy:
        try:
            strategy = build_strategy(name, config, state)
        except LLMRouteError as exc:  # quality_aware's model file
            fail(str(exc))
        label = f"{name.value} (default)" if name == config.strategy else name.value
        if name == RoutingStrategy.BALANCED:
            label += ": " + " / ".join(f"{n} {w:g}" for n, w in sorted(weights.items(), key=lambda kv: -kv[1]))
        if isinstance(strategy, QualityAware):
            target = config.quality_aware.target.model_dump(exclude_none=True)
            label += (f": {', '.join(f'{k} {v:g}' for k, v in target.items())} → {strategy.strong_share:.0%} "
                      f"to {strategy.strong}, score threshold {strategy.model_threshold:.3f} until traffic is seen")
            order_text = (f"score ≥ threshold: {' → '.join(strategy.orders['strong'])}; "
                          f"else: {' → '.join(strategy.orders['weak'])}")
        else:
            order_text = " → ".join(strategy.order(request))
        routes.append({"strategy": name.value, "default": name == config.strategy, "label": label, "order": order_text})
    return routes


@app.command()
def serve(
    config: Annotated[Optional[Path], typer.Option(help="Config file (default: ./llmroute.yaml or $LLMROUTE_CONFIG)")] = None,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=MAX_PORT, help="Port (0 picks a free one, with one worker)")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the port")] = 1,
    insecure: Annotated[bool, typer.Option(help="Allow a non-loopback address without API keys")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error")] = "warning",
) -> None:
    """Run the OpenAI-compatible gateway: point any OpenAI client at http://HOST:PORT/v1."""
    from ..gateway import serve as run

    level = getattr(logging, log_level.upper(), None)
    if not isinstance(level, int):
        fail(f"--log-level must be debug, info, warning or error, not '{log_level}'")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(config, host, port, workers=workers, insecure=insecure)
    except LLMRouteError as exc:  # ConfigError, or a quality model file that cannot be used
        fail(str(exc))
    except OSError as exc:
        cannot_listen(host, port, exc)


@app.command()
def emulate(
    profile: Annotated[str, typer.Option(help="cerebras or runpod")] = "cerebras",
    port: Annotated[int, typer.Option(min=0, max=MAX_PORT, help="Port (0 picks a free one)")] = 8001,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    speed: Annotated[float, typer.Option(help="Run this many times faster than the real provider; inf answers at once")] = 1.0,
    latency_ms: Annotated[Optional[float], typer.Option(help="Override the profile's median latency")] = None,
    fault: Annotated[Optional[list[str]], typer.Option(help="Inject a fault at a rate, e.g. 503:0.1 (repeatable)")] = None,
    retry_after: Annotated[float, typer.Option(help="Retry-After seconds sent with 429 and 503")] = 1.0,
    api_key: Annotated[Optional[str], typer.Option(help="Require this bearer key (401 otherwise)", envvar="LLMROUTE_EMULATOR_KEY")] = None,
    seed: Annotated[int, typer.Option(help="Random seed for latency, text and fault rolls")] = 0,
    prompt_cache: Annotated[bool, typer.Option(help="Report repeated message prefixes as cached prompt tokens")] = False,
    tokens_per_minute: Annotated[Optional[int], typer.Option(help="Enforce a token bucket (prompt + max_tokens per request)")] = None,
    labels: Annotated[Optional[Path], typer.Option(
        help="Labelled mode: answer the prompts of this JSONL file right or wrong (and judge answers to them)")] = None,
    accuracy: Annotated[Optional[float], typer.Option(
        min=0.0, max=1.0, help="Labelled mode: share of labelled prompts answered right (default: the profile's)")] = None,
    judge_noise: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Labelled mode: probability that a judge verdict is flipped")] = 0.0,
) -> None:
    """Run a local OpenAI-compatible server that behaves like a paid provider."""
    from ..emulator import EmulatorSettings, FaultPlan, Labels, get_profile, parse_fault_rate, serve

    try:
        chosen = get_profile(profile)
        rates = dict(parse_fault_rate(spec) for spec in fault or [])
        known = None if labels is None else Labels.load(
            labels, seed=seed, accuracy=None if accuracy is None else {chosen.name: accuracy})
    except (OSError, ValueError) as exc:
        fail(str(exc))
    if not speed > 0:
        fail("--speed must be > 0 (use inf for no latency)")
    settings = EmulatorSettings(
        profile=chosen, speed=speed, latency_ms=latency_ms, retry_after_s=retry_after, api_key=api_key,
        seed=seed, faults=FaultPlan(rates, seed=seed), prompt_cache=prompt_cache, tokens_per_minute=tokens_per_minute,
        labels=known, judge_noise=judge_noise,
    )
    try:
        serve(settings, host, port)
    except OSError as exc:  # the port is taken, or the address is not this machine's
        cannot_listen(host, port, exc)


@app.command("try")
def try_(
    port: Annotated[int, typer.Option(min=0, max=MAX_PORT, help="The gateway's port (0 picks a free one)")] = 8080,
    emulator_port: Annotated[int, typer.Option(
        min=0, max=MAX_PORT - 1, help="Port of the cerebras emulator; runpod's is the next one (0 picks free ones)")] = 8001,
    host: Annotated[str, typer.Option(help="Address to bind (loopback: the gateway has no keys)")] = "127.0.0.1",
    speed: Annotated[float, typer.Option(help="Emulators answer this many times faster than the real providers")] = 1.0,
    ledger: Annotated[Optional[Path], typer.Option(help="Record the traffic in this SQLite file (default: nowhere)")] = None,
) -> None:
    """Try llmroute without keys: two emulated providers and the gateway, until Ctrl-C.

    Same providers and ports as examples/emulated.yaml; point any OpenAI client at the printed address.
    """
    from ..gateway.auth import KeyStore
    from ..gateway.server import check_binding
    from ..playground import Playground, run

    if not speed > 0:
        fail("--speed must be > 0 (use inf for no latency)")
    try:
        check_binding(host, KeyStore([]), insecure=False)
    except LLMRouteError as exc:
        fail(str(exc))

    def ready(playground: Playground) -> None:
        print(playground.instructions(), flush=True)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(host, port, emulator_port, speed=speed, ledger=str(ledger) if ledger else None, ready=ready))
    except LLMRouteError as exc:
        fail(str(exc))


@app.command()
def demo(
    config: Annotated[Optional[Path], typer.Option(help="Send the workload to the real providers in this config")] = None,
    requests: Annotated[int, typer.Option(min=8, help="Requests per strategy")] = 200,
    concurrency: Annotated[int, typer.Option(min=1)] = 16,
    speed: Annotated[float, typer.Option(help="Emulators run this many times faster than real providers")] = 20.0,
    max_tokens: Annotated[int, typer.Option(min=1)] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the workload and the emulators: the same seed gives the same "
                                           "split, cost, fallbacks and true quality")] = 0,
    shadow_rate: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Emulated pair: share of answers shadowed and graded to measure quality (0: off)")] = 1.0,
    fmt: FormatOption = "table",
    as_json: JsonAlias = False,
    ledger: Annotated[Optional[Path], typer.Option(
        help="Record the emulated run in this SQLite ledger (real providers always record where the config says)")] = None,
) -> None:
    """Route a lead-qualification / extraction / chat workload with known answers through every strategy.

    Splits, costs and the true quality kept are reproducible with --seed (latency_optimized follows measured
    latency, so its split also depends on timing); latencies are measured, so they vary from run to run.
    """
    from contextlib import nullcontext
    from functools import partial

    from ..demo import EmulatedPair, Outage, demo_tables, quality_table, recording, run_all, truth, workload

    fmt = output_format(fmt, as_json)
    pair: EmulatedPair | None = None
    outage: Outage | None = None
    work = workload(requests, seed)
    if config is not None:
        cfg, note = load_or_fail(config), f"real providers from {config}; no injected fault"
    else:
        if not speed > 0:
            fail("--speed must be > 0")
        pair = EmulatedPair.start(speed, seed, truth(work, seed), shadow_rate, requests)
        cfg, outage, note = pair.config, pair.outage, pair.note
    # Fallbacks are the point of the demo; show them in the table, not as log lines.
    logging.getLogger("llmroute").setLevel(logging.ERROR)
    measuring = pair is not None and shadow_rate > 0
    # Emulated traffic stays out of the user's real ledger unless asked for; measuring keeps it in a scratch one.
    try:
        with (recording(cfg, ledger, measuring=measuring) if pair is not None else nullcontext(None)) as demo_ledger, \
                Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                         TimeElapsedColumn(), console=err, transient=True, disable=fmt != OutputFormat.TABLE) as progress:
            summaries = run_all(cfg, work, lambda name: partial(progress.advance, progress.add_task(name, total=len(work))),
                                concurrency=concurrency, max_tokens=max_tokens, outage=outage, ledger=demo_ledger,
                                seed=seed, labels=pair.labels if pair is not None else None)
    except LLMRouteError as exc:  # the ledger file cannot be opened
        fail(str(exc))
    finally:
        if pair is not None:
            pair.stop()
    if pair is not None and ledger is not None:
        err.print(f"recorded in {ledger}: see `llmroute report --ledger {ledger}`", highlight=False)
    if fmt == OutputFormat.JSON:
        print_json({"note": note, "seed": seed, "baseline": cfg.baseline(), "strategies": summaries})
    elif fmt == OutputFormat.CSV:
        print_csv(summaries)
    else:
        for table in demo_tables(summaries, cfg, note, outage is not None):
            console.print(table)
        if pair is not None:
            console.print(quality_table(summaries, cfg.quality_pair()[0], shadow_rate))


def main() -> None:
    try:
        app(prog_name="llmroute")
    except KeyboardInterrupt:
        sys.exit(130)

