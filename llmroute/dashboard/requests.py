"""The requests view: the latest requests, each with its attempts, filtered and paged (bounded)."""

from __future__ import annotations

from typing import Any

import orjson

from ..ledger import Store
from ..report import tag_names
from .query import Query

_COLUMNS = ("id", "ts", "request_id", "endpoint", "route", "strategy", "provider", "model", "status",
            "prompt_tokens", "completion_tokens", "cost_usd", "cost_basis", "latency_ms", "ttft_ms", "fallback",
            "key_id", "user_id", "tags", "error", "quality_score", "route_decision", "attempts")
_FILTER_COLUMNS = {"key": "key_id", "provider": "provider", "strategy": "strategy", "status": "status"}
_SHOWN = {"key_id": "key", "user_id": "user"}
_ATTEMPT_FIELDS = ("provider", "model", "ok", "status", "kind", "latency_ms", "cost_usd", "cost_basis",
                   "prompt_tokens", "completion_tokens", "error", "retry_after_s")


def latest_requests(store: Store, q: Query) -> dict[str, Any]:
    """Newest first, at most ``q.limit`` (itself at most ``query.MAX_LIMIT``); ``next_before`` pages on."""
    where, params = ["ts >= ?", "ts < ?"], [q.lo, q.hi]
    tag = None
    for name, value in q.filters:
        if name == "tag":
            tag = value
            where.append("tags LIKE ? ESCAPE '!'")
            params.append(tag_pattern(value))
        else:
            where.append(f"{_FILTER_COLUMNS[name]} = ?")
            params.append(value)
    if q.before is not None:  # the page after the row (ts, id): newest first, by the ts index
        where.append("(ts < ? OR (ts = ? AND id < ?))")
        params.extend((q.before[0], q.before[0], q.before[1]))
    # One row more than the page says whether there is a next one.
    rows = store.fetch(f"SELECT {', '.join(_COLUMNS)} FROM requests WHERE {' AND '.join(where)} "
                       f"ORDER BY ts DESC, id DESC LIMIT ?", (*params, q.limit + 1))
    more = len(rows) > q.limit
    rows = rows[:q.limit]
    out = [_request(row) for row in rows]
    if tag is not None:  # LIKE finds the quoted tag; a tag quoted inside another tag's text is not it
        out = [r for r in out if tag in r["tags"]]
    return {"limit": q.limit, "filters": dict(q.filters), "requests": out,
            "next_before": f"{rows[-1][1]!r}_{rows[-1][0]}" if more and rows else None}


def tag_pattern(tag: str) -> str:
    """A LIKE pattern (escape ``!``) for stored tags (a JSON list of strings) holding ``tag``, as budgets match."""
    quoted = orjson.dumps(tag).decode()
    return "%" + quoted.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def _request(row: tuple[Any, ...]) -> dict[str, Any]:
    values = dict(zip(_COLUMNS, row, strict=True))
    attempts = values.pop("attempts")
    shown = {_SHOWN.get(k, k): v for k, v in values.items()}
    shown["fallback"] = bool(shown["fallback"])
    shown["tags"] = tag_names(values["tags"])
    shown["attempts"] = _attempts(attempts, values)
    return shown


def _attempts(text: str | None, row: dict[str, Any]) -> list[dict[str, Any]]:
    """The stored attempts; none stored means the first attempt answered, and the row is that attempt."""
    if text is None:
        return [{"provider": row["provider"], "model": row["model"], "ok": row["status"] == "ok", "status": None,
                 "kind": "ok" if row["status"] == "ok" else row["status"], "latency_ms": row["latency_ms"],
                 "cost_usd": row["cost_usd"], "cost_basis": row["cost_basis"],
                 "prompt_tokens": row["prompt_tokens"], "completion_tokens": row["completion_tokens"],
                 "error": row["error"], "retry_after_s": None}]
    try:
        stored = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    return [{k: a.get(k) for k in _ATTEMPT_FIELDS} for a in stored if isinstance(a, dict)]
