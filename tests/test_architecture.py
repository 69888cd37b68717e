"""The package's shape, checked from its source: layers point one way, no import cycles, no borrowed privates.

Every import counts, including those under ``TYPE_CHECKING`` and inside functions: a reader follows them all,
and a cycle hidden in a function is still two modules that cannot be understood apart.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import llmroute

ROOT = Path(llmroute.__file__).parent


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = ("llmroute", *path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> list[tuple[str, list[str]]]:
    """(module imported, names taken from it) for every import statement in the file."""
    found: list[tuple[str, list[str]]] = []
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names = [alias.name for alias in node.names]
            submodules = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
            if submodules and len(submodules) == len(names):
                found.extend((sub, []) for sub in submodules)  # ``from . import x``: only the submodule is read
            else:
                found.append((module, [n for n in names if f"{module}.{n}" not in MODULES]))
                found.extend((sub, []) for sub in submodules)
    return found


def _graph() -> dict[str, set[str]]:
    return {
        name: {module for module, _ in _imports(name, path) if module in MODULES and module != name}
        for name, path in MODULES.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    """The check above would pass on a finder that never finds anything: show it finds one."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def _top(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


# What each layer must not import (by top-level module or package of llmroute), lowest layer first.
# config -> state/breaker/ratelimit -> strategies/pricing/providers -> cascade -> dispatch -> stream -> router
# -> gateway/cli.
_ABOVE_ROUTER = {"gateway", "cli", "dashboard", "playground", "demo"}
_ABOVE_CASCADE = {"dispatch", "router", "stream", "health", "sync", *_ABOVE_ROUTER}
_ABOVE_PROVIDERS = {"cascade", *_ABOVE_CASCADE}
_ABOVE_STATE = {"strategies", "pricing", "providers", *_ABOVE_PROVIDERS}
FORBIDDEN = {
    "config": {"state", "state_redis", "state_totals", "state_wire", "breaker", "ratelimit", *_ABOVE_STATE},
    "state": _ABOVE_STATE,
    "state_redis": _ABOVE_STATE,
    "state_totals": _ABOVE_STATE,
    "state_wire": _ABOVE_STATE,
    "state_leases": _ABOVE_STATE,
    "breaker": _ABOVE_STATE,
    "ratelimit": _ABOVE_STATE,
    "strategies": _ABOVE_PROVIDERS,
    "pricing": _ABOVE_PROVIDERS,
    "providers": _ABOVE_PROVIDERS,
    "cascade": _ABOVE_CASCADE,
    "router": _ABOVE_ROUTER,
    "dispatch": {"router", "stream", *_ABOVE_ROUTER},
    "stream": {"router", *_ABOVE_ROUTER},
    "health": {"router", *_ABOVE_ROUTER},
    "gateway": {"cli"},
    "dashboard": {"cli"},
}


def test_layers_point_down() -> None:
    graph = _graph()
    upward = sorted(
        f"{name} imports {module}"
        for name, targets in graph.items()
        for module in targets
        if _top(module) in FORBIDDEN.get(_top(name), ())
    )
    assert upward == []


def test_no_private_names_borrowed() -> None:
    """A module uses another's public names: ``from x import _y`` couples it to what x may change freely."""
    borrowed = sorted(
        f"{name}: from {module} import {taken}"
        for name, path in MODULES.items()
        for module, names in _imports(name, path)
        if module.startswith("llmroute") and module != name
        for taken in names
        if taken.startswith("_") and not taken.startswith("__")
    )
    assert borrowed == []


@pytest.mark.parametrize("name", ["llmroute.router", "llmroute.gateway.app", "llmroute.config.schema"])
def test_graph_sees_known_imports(name: str) -> None:
    """The graph is read from the real files: a module known to import others has edges."""
    assert _graph()[name]
