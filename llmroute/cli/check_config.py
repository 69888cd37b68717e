"""``llmroute check-config``: a config file validated, and the routing order each strategy would follow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table
from rich.text import Text

from ..config import ProviderConfig, RouterConfig
from ..config.loading import shown_url
from ..errors import LLMRouteError
from ..state import InMemoryState
from ..strategies import QualityAware, RouteRequest, RoutingStrategy, build_strategy
from .common import FormatOption, OutputFormat, console, fail, load_or_fail, output_format, print_csv, print_json

commands = typer.Typer()
"""Added to the root app without a name: its commands are top-level."""


@commands.command("check-config")
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


def _price_text(p: ProviderConfig) -> str:
    per_m = f"{p.price_per_m.input:g} / {p.price_per_m.output:g}" if p.price_per_m else ""
    if p.price_per_gpu_second is None:
        return per_m
    gpu = f"${p.price_per_gpu_second:g}/GPU-s" + (f" (+{p.idle_share:.0%} idle)" if p.idle_share else "")
    return f"{gpu}; routing estimate {per_m}" if per_m else gpu


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
