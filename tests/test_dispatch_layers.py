"""The dispatcher: one public interface for the cascade and hedging, below the router, used by streams too."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import llmroute
from llmroute import LLMRouter
from llmroute.providers import OpenAICompatProvider

from .conftest import emulator, provider

PACKAGE = Path(llmroute.__file__).parent
BELOW_ROUTER = ("stream", "health", "dispatch", "cascade", "evaluation.calls", "evaluation.shadow")


def _imports(module: str) -> set[str]:
    """Every llmroute module ``module`` imports, at the top, under TYPE_CHECKING or inside a function."""
    path = PACKAGE.joinpath(*module.split(".")).with_suffix(".py")
    if not path.exists():
        path = PACKAGE.joinpath(*module.split("."), "__init__.py")
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name.removeprefix("llmroute.") for a in node.names if a.name.startswith("llmroute."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, *([node.module] if node.module else [])])
            elif node.module and node.module.startswith("llmroute"):
                target = node.module.removeprefix("llmroute").removeprefix(".")
            else:
                continue
            for name in [target, *(f"{target}.{a.name}" if target else a.name for a in node.names)]:
                if name and (PACKAGE.joinpath(*name.split(".")).with_suffix(".py").exists()
                             or PACKAGE.joinpath(*name.split("."), "__init__.py").exists()):
                    found.add(name)
    return found


def _reachable(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(_imports(module))
    return seen


def test_nothing_below_the_router_imports_it() -> None:
    for module in BELOW_ROUTER:
        reached = _reachable(module)
        assert "router" not in reached, f"{module} reaches llmroute.router"


def test_stream_health_and_dispatch_use_no_private_name_of_another_object() -> None:
    for name in ("stream", "health", "dispatch"):
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        private = [f"{ast.unparse(n.value)}.{n.attr}" for n in ast.walk(tree)
                   if isinstance(n, ast.Attribute) and n.attr.startswith("_") and not n.attr.startswith("__")
                   and not (isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"))]
        assert private == [], f"{name}.py reaches into {private}"


async def test_one_dispatcher_per_router_serves_its_streams(seed_config: dict[str, Any]) -> None:
    async with LLMRouter(config=seed_config, ledger=False) as router:
        dispatch = router.dispatch
        stream = router.stream(prompt="hi", max_tokens=5)
        async for _ in stream:
            pass
        await router.chat([{"role": "user", "content": "hi"}], max_tokens=5)
        assert router.dispatch is dispatch and router.strategy() is dispatch.strategy()
    assert stream.result is not None and stream.result.attempts[-1].kind == "ok"


async def test_a_hedged_attempt_leaves_the_cascade_as_the_winner(seed_config: dict[str, Any]) -> None:
    with emulator("cerebras", speed=1.0, latency_ms=3000.0) as slow, emulator("runpod") as fast:
        seed_config["providers"] = {"cerebras": provider(slow.base_url, "cerebras"),
                                    "runpod": provider(fast.base_url, "runpod")}
        seed_config["strategy"] = "quality_optimized"  # cerebras first
        seed_config["hedge"] = {"strategies": ["quality_optimized"], "after_ms": 100}
        async with LLMRouter(config=seed_config, ledger=False) as router:
            dispatch = router.dispatch
            estimate = router._estimate(10, {})
            cascade, strategy_name, _ = dispatch.plan(estimate, None)
            assert cascade.order == ["cerebras", "runpod"]

            async def call(p: OpenAICompatProvider, timeout_s: float) -> str:
                response = await p.request("/chat/completions", {"model": p.model, "max_tokens": 5,
                                           "messages": [{"role": "user", "content": "hi"}]}, timeout_s=timeout_s)
                return str(response.body["choices"][0]["message"]["content"])

            answered_by, text = await dispatch.attempt(cascade, strategy_name, estimate, call)
    assert answered_by.name == "runpod" and text
    assert [(a.provider, a.kind) for a in cascade.attempts] == [("cerebras", "hedge_cancelled"), ("runpod", "ok")]
    assert cascade.order == ["runpod"] and cascade.current == "runpod"  # the hedge's walk, adopted
