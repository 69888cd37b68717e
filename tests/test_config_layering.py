"""The config is the lowest layer: it imports nothing of llmroute above it, and no cycle runs through it.

Imports are read from the source (``ast``), including those under ``TYPE_CHECKING`` and inside functions: a
reader and a layering checker see those edges too. The names that moved down into the config keep their old
import paths.
"""

from __future__ import annotations

import ast
from pathlib import Path

import llmroute
from llmroute.config import parse_config

PACKAGE = Path(llmroute.__file__).parent
LEAVES = ("llmroute.budget_period", "llmroute.errors", "llmroute.result", "llmroute.graders")
"""What the config may import from outside itself: modules that import nothing of llmroute beyond each other."""


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("llmroute", *path.relative_to(PACKAGE).with_suffix("").parts)
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = _module_names()


def _imports(module: str) -> set[str]:
    """The llmroute modules ``module`` imports, anywhere in its source."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, node.module] if node.module else base)
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES and name != module}


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_config_imports_only_itself_and_leaves() -> None:
    config = [m for m in MODULES if _within(m, ("llmroute.config",))]
    upward = {(m, target) for m in config for target in _imports(m)
              if not _within(target, ("llmroute.config", *LEAVES))}
    assert upward == set()


def test_the_leaves_import_nothing_but_each_other() -> None:
    leaves = [m for m in MODULES if _within(m, LEAVES)]
    assert {(m, target) for m in leaves for target in _imports(m) if not _within(target, LEAVES)} == set()


def test_no_two_config_modules_reach_each_other() -> None:
    config = [m for m in MODULES if _within(m, ("llmroute.config",))]
    reach: dict[str, set[str]] = {}
    for module in config:
        seen, todo = set(), [module]
        while todo:
            for target in _imports(todo.pop()):
                if _within(target, ("llmroute.config",)) and target not in seen:
                    seen.add(target)
                    todo.append(target)
        reach[module] = seen
    assert sorted(m for m in config if m in reach[m]) == []


def test_the_moved_names_keep_their_old_import_paths() -> None:
    from llmroute import RoutingStrategy as from_package
    from llmroute.breaker import BreakerSettings as from_breaker
    from llmroute.config.enums import RoutingStrategy
    from llmroute.config.schema import ProviderConfig as from_schema
    from llmroute.config.settings import BreakerSettings, ColdStartSettings
    from llmroute.state import ColdStartSettings as from_state
    from llmroute.strategies import RoutingStrategy as from_strategies
    from llmroute.strategies.base import RoutingStrategy as from_base

    assert from_package is from_strategies is from_base is RoutingStrategy
    assert from_breaker is BreakerSettings and from_state is ColdStartSettings
    assert from_schema is llmroute.config.ProviderConfig


def test_the_config_builds_each_providers_cold_start_settings() -> None:
    from llmroute.config.settings import ColdStartSettings

    price = {"input": 1.0, "output": 2.0}
    config = parse_config({"providers": {
        "slow": {"base_url": "http://127.0.0.1:1/v1", "model": "m", "price_per_m": price,
                 "cold_start": {"idle_s": 120, "factor": 4.0, "warm_s": 10}},
        "plain": {"base_url": "http://127.0.0.1:2/v1", "model": "m", "price_per_m": price},
    }})
    assert config.cold_start_settings() == {"slow": ColdStartSettings(idle_s=120.0, factor=4.0, warm_s=10.0),
                                            "plain": ColdStartSettings()}
