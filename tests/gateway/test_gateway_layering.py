"""The gateway's modules import each other in one direction only: no cycle, not even through a local or a
type-checking import, and the stream handler depends on what it is given rather than on the app."""

from __future__ import annotations

import ast
from pathlib import Path

import llmroute.gateway

PACKAGE = "llmroute.gateway"
ROOT = Path(llmroute.gateway.__file__).parent


def _module(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every gateway module ``path`` imports, wherever the import statement is (function body, TYPE_CHECKING)."""
    here = _module(path)
    base = PACKAGE.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = base[:len(base) - node.level + 1] if node.level else []
            target = ".".join(parts + ([node.module] if node.module else [])) if node.level else node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != here}


def _graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.glob("*.py"))
    modules = {_module(p) for p in paths}
    return {_module(p): _imports(p, modules) for p in paths}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_graph_sees_local_and_type_checking_imports() -> None:
    graph = _graph()
    assert "llmroute.gateway.app" in graph[PACKAGE]  # __init__ re-exports the app
    assert "llmroute.gateway.streaming" in graph["llmroute.gateway.app"]


def test_no_import_cycle_in_the_gateway() -> None:
    assert _cycle(_graph()) is None


def test_stream_handler_does_not_import_the_app() -> None:
    assert "llmroute.gateway.app" not in _graph()["llmroute.gateway.streaming"]


def test_no_gateway_module_imports_its_own_package() -> None:
    graph = _graph()
    assert [m for m, deps in graph.items() if PACKAGE in deps] == []
