"""Commands that run servers and traffic: ``serve`` (the gateway), ``emulate`` (a provider), ``try`` (both,
with no keys) and ``demo`` (a known workload through every strategy)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import LLMRouteError
from .common import (MAX_PORT, FormatOption, JsonAlias, OutputFormat, cannot_listen, console, err, fail, load_or_fail,
                     output_format, print_csv, print_json)

commands = typer.Typer()
"""Added to the root app without a name: its commands are top-level."""


@commands.command()
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


@commands.command()
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


@commands.command("try")
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


@commands.command()
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
