"""Reading a config: YAML, ``${VAR}`` interpolation, and errors that name the file and the key.

A config is one YAML file. ``${VAR}`` (or ``${VAR:-default}``) anywhere in a
string is read from the environment before validation, so a missing variable
is reported with the key that needed it. Every error names the file, the key
path and the problem, and never the value of a secret.
"""

from __future__ import annotations

import difflib
import os
import re
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .providers import ProviderConfig
from .schema import KeyedError, RouterConfig

DEFAULT_CONFIG_NAME = "llmroute.yaml"
CONFIG_ENV_VAR = "LLMROUTE_CONFIG"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class _Interpolation:
    """What ``${VAR}`` substitution found: the variables each key used, their values, and those unset."""

    env: Mapping[str, str]
    used: dict[tuple[str, ...], list[tuple[str, str]]] = field(default_factory=dict)
    """key path -> [(variable, value substituted)] in the order they appear."""
    missing: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    """(key path, variable) for each reference with no value and no default."""

    def walk(self, node: Any, path: tuple[str, ...] = ()) -> Any:
        if isinstance(node, dict):
            return {k: self.walk(v, (*path, str(k))) for k, v in node.items()}
        if isinstance(node, list):
            return [self.walk(v, (*path, str(i))) for i, v in enumerate(node)]
        if not isinstance(node, str) or "${" not in node:
            return node

        def substitute(match: re.Match[str]) -> str:
            var, default = match.group(1), match.group(2)
            value = self.env.get(var) or default
            if value is None:
                self.missing.append((path, var))
                return match.group(0)
            self.used.setdefault(path, []).append((var, value))
            return value

        return _ENV_REF.sub(substitute, node)

    def missing_error(self, file: str | None) -> ConfigError:
        """One error naming every unset variable and the key that needs it, so one run shows them all."""
        if len(self.missing) == 1:
            path, var = self.missing[0]
            return ConfigError(f"environment variable {var} is not set", file=file, key=".".join(path))
        lines = [f"key '{'.'.join(path)}': {var}" for path, var in self.missing]
        names = sorted({var for _, var in self.missing})
        return ConfigError(f"environment variables not set: {', '.join(names)}; needed by\n  " + "\n  ".join(lines),
                           file=file)


_SECRET_QUERY_NAME = re.compile(r"key|token|secret|sig|pass|auth|credential|session", re.IGNORECASE)


def redact_url(url: str, secrets: Iterable[str] = (), *, every_query_value: bool = False) -> str:
    """``url`` safe to print: no user:password part, and every query value that holds one of ``secrets``
    (values read from ``${VAR}``) or sits under a name like ``key``/``token``/``sig`` shown as ``***``
    (with ``every_query_value``, all of them: for logs, where nothing says which value came from where).

    The host and path stay readable: an endpoint id in the path is an address, not a credential.
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        shown = []
        for pair in query.split("&"):
            name, sep, value = pair.partition("=")
            raw = urllib.parse.unquote_plus(value)
            if value and (every_query_value or _SECRET_QUERY_NAME.search(name)
                          or any(s and (s in raw or s in value) for s in secrets)):
                value = "***"
            shown.append(name + sep + value)
        query = "&".join(shown)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def shown_url(provider: ProviderConfig) -> str:
    """A provider's ``base_url`` as check-config, plan and errors print it (see ``redact_url``)."""
    return redact_url(provider.base_url, provider.url_secrets)


def _describe(error: Mapping[str, Any]) -> str:
    kind, message = error["type"], error["msg"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{message} (got {type(error.get('input')).__name__})"
    return message.removeprefix("Value error, ")


def _suggest(loc: tuple[Any, ...]) -> str:
    """'did you mean' for a misspelt key, from the fields of the model at that depth."""
    target: type[BaseModel] = RouterConfig
    parts = iter(loc[:-1])
    for part in parts:
        field = target.model_fields.get(str(part))
        if field is None:
            return ""
        annotation = field.annotation
        if get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
            next(parts, None)  # the mapping's own key, e.g. a provider name
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        target = annotation
    close = difflib.get_close_matches(str(loc[-1]), list(target.model_fields), n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(target.model_fields)}"


def _from_validation_error(exc: ValidationError, file: str | None) -> ConfigError:
    lines = []
    first_key = None
    for error in exc.errors(include_input=True, include_url=False):
        loc = tuple(error["loc"])
        ctx_error = (error.get("ctx") or {}).get("error")
        if isinstance(ctx_error, KeyedError):
            key, problem = ctx_error.key, ctx_error.problem
        else:
            key = ".".join(str(p) for p in loc) or "(top level)"
            problem = _describe(error)
            if error["type"] == "extra_forbidden":
                problem += _suggest(loc)
        first_key = first_key or key
        lines.append(f"key '{key}': {problem}")
    if len(lines) == 1:
        return ConfigError(lines[0].split(": ", 1)[1], file=file, key=first_key)
    return ConfigError(f"{len(lines)} problems:\n  " + "\n  ".join(lines), file=file, key=first_key)


def parse_config(
    data: Any, *, file: str | None = None, env: Mapping[str, str] | None = None, strict_env: bool = True,
) -> RouterConfig:
    """Validate an already-parsed config tree (what ``yaml.safe_load`` returns)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}", file=file)
    found = _Interpolation(os.environ if env is None else env)
    data = found.walk(dict(data))
    if found.missing and strict_env:
        raise found.missing_error(file)
    try:
        config = RouterConfig.model_validate(data)
    except ValidationError as exc:
        raise _from_validation_error(exc, file) from None
    config._source = file
    config._missing_env = [var for _, var in found.missing]
    _check_quality_model(config, file)
    for name, provider in config.providers.items():
        key_path = ("providers", name, "api_key")
        key_vars = [var for var, _ in found.used.get(key_path, [])] + [var for path, var in found.missing if path == key_path]
        provider._api_key_env = key_vars[0] if key_vars else None
        # Values read from the environment into the URL: a key in its query must never be printed.
        provider._url_secrets = tuple(value for _, value in found.used.get(("providers", name, "base_url"), []))
    return config


def _check_quality_model(config: RouterConfig, file: str | None) -> None:
    """A relative model path is relative to the config file; a missing file is a config error, not a 500 later."""
    model = config.quality_aware.model
    if model is None:
        return
    path = Path(model).expanduser()
    if not path.is_absolute() and file is not None:
        path = Path(file).parent / path
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}", file=file, key="quality_aware.model")
    config.quality_aware.model = str(path)


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV_VAR, DEFAULT_CONFIG_NAME))


def load_config(
    source: str | os.PathLike[str] | Mapping[str, Any] | RouterConfig | None = None,
    *,
    env: Mapping[str, str] | None = None,
    strict_env: bool = True,
) -> RouterConfig:
    """Load and validate a config from a path, a mapping, or pass a ``RouterConfig`` through.

    ``strict_env=False`` leaves unset ``${VAR}`` references in place, for commands
    such as ``plan`` that only need prices.
    """
    if isinstance(source, RouterConfig):
        return source
    if isinstance(source, Mapping):
        return parse_config(source, env=env, strict_env=strict_env)
    path = Path(source) if source is not None else default_config_path()
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc.__class__.__name__}", file=file) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"invalid YAML{where}: {problem}", file=file) from None
    if data is None:
        raise ConfigError("file is empty", file=file)
    return parse_config(data, file=file, env=env, strict_env=strict_env)
