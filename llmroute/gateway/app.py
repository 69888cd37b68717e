"""The OpenAI-compatible HTTP gateway: request handling on top of ``LLMRouter``.

Handlers stay on the hot path, so there is no middleware: auth, body reading
and error shaping are plain calls inside each handler.
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import HttpVersion11, web

from ..breaker import STATE_VALUE, log_transition
from ..budgets import Exhausted, output_cap
from ..errors import AllProvidersFailed, ClientRequestError, ProviderError
from ..ledger import RequestContext, ledger_location, parse_tags
from ..result import RouteResult
from ..router import CHAT_PATH, COMPLETIONS_PATH, LLMRouter
from ..state import InMemoryState, now
from ..strategies import RoutingStrategy
from ..tokens import prompt_estimate
from .answer import FORBIDDEN_IN_HEADER, Answer, for_aiohttp, header_lines
from .auth import NO_HOLD, KeyHold, KeyIdentity, KeyLimiter, KeyStore, LedgerKeySource, OverLimit
from .budgeting import BudgetGate, settle_request
from .decoding import read_body
from .errors import (
    WARNING_HEADER, BadRequest, all_failed_response, attempts_header, decision_headers, error_response,
    provider_error_response, quote_input,
)
from .hotpath import HotRequest
from .metrics import CONTENT_TYPE, Metrics
from .openapi import openapi_json
from .pacing import PacingGate
from .streaming import stream_response
from .validate import Limits, chat_body, check_depth, completions_body

log = logging.getLogger("llmroute.gateway")

STRATEGY_HEADER = "x-llmroute-strategy"
TAGS_HEADER = "x-llmroute-tags"
REQUEST_ID_HEADER = "x-request-id"
_STRATEGIES = {s.value: s for s in RoutingStrategy}
_ROUTES = {"/v1/chat/completions": "POST", "/v1/completions": "POST", "/v1/models": "GET", "/health": "GET",
           "/ready": "GET", "/metrics": "GET", "/router/state": "GET", "/openapi.json": "GET"}
MODELS_PREFIX = "/v1/models/"
# A token as HTTP defines it: printable ASCII without separators, so it is safe in any header and log line.
_TOKEN_CHARS = r"!#$%&'*+\-.^_`|~0-9A-Za-z"

Handler = Callable[[web.Request], Awaitable["web.StreamResponse | Answer"]]
_MAX_TAGS = 32  # as parse_tags keeps


class KeyRefused(Exception):
    """What the request's key may not do (403), or not yet (429): refused before any provider is called."""

    def __init__(self, status: int, message: str, error_type: str, code: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.error_type, self.code, self.headers = status, message, error_type, code, headers


PROMPT_TOKENS = "prompt_tokens"
"""Where a request keeps its prompt's token estimate, made once and used by its key's tpm, budgets and routing."""


def prompt_tokens(request: web.Request, body: dict[str, Any]) -> int:
    """The request's estimated prompt tokens: computed on first use, then read from the request."""
    tokens: int | None = request.get(PROMPT_TOKENS)
    if tokens is None:
        tokens = request[PROMPT_TOKENS] = prompt_estimate(body)
    return tokens


@functools.lru_cache(maxsize=1024)
def strategy_warning(model: str, ran: str) -> str | None:
    """A warning when ``model`` looks like a misspelt strategy name, None for other names (``llama3.1-8b``).

    Cached: the common case is a handful of model names sent again and again."""
    near = difflib.get_close_matches(model.lower(), _STRATEGIES, n=1, cutoff=0.75)
    if not near:
        return None
    return f"model {quote_input(model)} is not a strategy; did you mean '{near[0]}'? ran '{ran}'"


def _header_text(value: str) -> str:
    """A header's text with invalid UTF-8 (which aiohttp keeps as surrogates) replaced, so it can be stored."""
    return value if value.isascii() else value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def result_lines(result: RouteResult, warning: str | None) -> str:
    """An answer's metadata headers, as header lines (``answer.header_lines``), in one string."""
    attempts = attempts_header(result.attempts)
    if FORBIDDEN_IN_HEADER.search(f"{result.provider}{result.strategy}{attempts}{result.request_id}{warning or ''}"):
        raise ValueError("a control character in a response header")
    lines = (f"x-llmroute-provider: {result.provider}\r\nx-llmroute-strategy: {result.strategy}\r\n"
             f"x-llmroute-cost-usd: {result.cost_usd:.9f}\r\nx-llmroute-latency-ms: {result.latency_ms:.2f}\r\n"
             f"x-llmroute-fallback: {'true' if result.fallback else 'false'}\r\nx-llmroute-attempts: {attempts}\r\n"
             f"x-request-id: {result.request_id or ''}\r\n")
    if result.quality_score is not None:
        lines += header_lines(decision_headers(result.quality_score, result.route_decision))
    if warning is not None:
        lines += f"{WARNING_HEADER}: {warning}\r\n"
    return lines


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue`` gets its interim answer; any other expectation a JSON 417. (aiohttp's own
    answer is plain text quoting the value, and fails outright on a value that is not UTF-8.)"""
    expect = request.headers.get("Expect", "")
    if request.version != HttpVersion11:
        return None
    if expect.strip().lower() == "100-continue":
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer itself has not started
        return None
    return error_response(417, f"Expect {quote_input(expect)} is not supported; send 100-continue or no Expect",
                          param="Expect", code="expectation_failed")


class Gateway:
    def __init__(self, router: LLMRouter, *, keys: KeyStore | None = None, metrics: Metrics | None = None) -> None:
        self.router = router
        self.keys = keys if keys is not None else KeyStore(router.config.gateway.keys())
        self.metrics = metrics if metrics is not None else Metrics()
        gateway = router.config.gateway
        self.key_source = self._ledger_keys(router) if keys is None else None
        shared = router.config.state.backend != "memory"
        # In memory, the key windows (two totals per key and minute) get a state of their own: they can never
        # crowd a budget's total out of the router state's bounded map.
        self.limiter = KeyLimiter(router.state if shared else InMemoryState({}), shared=shared)
        self._expected_output_tokens = router.config.expected_output_tokens
        self.max_body_bytes = gateway.max_body_bytes
        self.write_timeout_s = gateway.write_timeout_s
        self.limits = Limits(max_json_depth=gateway.max_json_depth, max_model_chars=gateway.max_model_chars,
                                      max_user_chars=gateway.max_user_chars)
        self._request_id = re.compile(f"[{_TOKEN_CHARS}]{{1,{gateway.max_request_id_chars}}}")
        self._created = int(time.time())
        self._openapi: bytes | None = None
        self._default_strategy = router.default_strategy.value
        if isinstance(router.state, InMemoryState):
            router.state.on_breaker_change = self._breaker_changed
            for name in router.providers:
                self.metrics.breaker_state.labels(name).set(0)
        if router.ledger is not None:
            router.ledger.on_drop = self.metrics.ledger_dropped.inc
            router.ledger.on_written = self.metrics.ledger_written.inc
        if router.shadow is not None:
            self.metrics.watch_shadow(router.shadow)
        self.metrics.watch_pools({name: provider.pool_stats for name, provider in router.providers.items()})
        self.budgeting = BudgetGate(router)
        self.pacing = PacingGate(router, self.budgeting.budgets)  # a config that cannot be paced fails here
        self.handle_chat = self._guard(self.chat_completions)
        self.handle_completions = self._guard(self.completions)
        self._keeps_context = (router.ledger is not None or router.shadow is not None or self.budgeting.needs_tags
                               or router.spend is not None)

    def _ledger_keys(self, router: LLMRouter) -> LedgerKeySource | None:
        """The ledger's gateway keys, read now (before serving: a failure is a start-up error) and then every
        ``gateway.keys_refresh_s``. None when the ledger is off: keys live in it."""
        location = ledger_location(router.config) if router.ledger is not None else None
        if location is None:
            return None
        source = LedgerKeySource(self.keys, location, refresh_s=router.config.gateway.keys_refresh_s,
                                 busy_timeout_s=router.config.ledger.busy_timeout_s)
        source.refresh()
        return source

    def _breaker_changed(self, provider: str, state: str, reason: str) -> None:
        self.metrics.breaker_state.labels(provider).set(STATE_VALUE[state])
        self.metrics.breaker_transitions.labels(provider, state).inc()
        log_transition(provider, state, reason)

    def app(self) -> web.Application:
        """The aiohttp application. Serve it with ``auto_decompress=False`` (as ``llmroute serve`` does): the
        handlers inflate compressed bodies themselves, bounded by ``gateway.max_body_bytes``."""
        from ..dashboard.app import gateway_routes as dashboard_routes  # it imports gateway.auth: imported here

        app = web.Application(client_max_size=self.max_body_bytes)
        routes = (
            ("POST", "/v1/chat/completions", for_aiohttp(self.handle_chat)),
            ("POST", "/v1/completions", for_aiohttp(self.handle_completions)),
            ("GET", "/v1/models", self._guard(self.models)),
            ("GET", MODELS_PREFIX + "{model_id:[\\s\\S]+}", self._guard(self.model)),
            ("GET", "/health", self.health),
            ("GET", "/ready", self.ready),
            ("GET", "/openapi.json", self.openapi),
            ("GET", "/metrics", self._guard(self.metrics_endpoint)),
            ("GET", "/router/state", self._guard(self.state)),
            *dashboard_routes(self),  # admin keys only, checked by the dashboard's own guard (it reads a cookie too)
            ("*", "/{tail:[\\s\\S]*}", self.not_found),
        )
        for method, path, handler in routes:
            if method == "GET":  # HEAD too, as aiohttp's add_get does
                app.router.add_get(path, handler, expect_handler=expect_continue)
            else:
                app.router.add_route(method, path, handler, expect_handler=expect_continue)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._close)
        return app

    def hot_routes(self) -> dict[bytes, Handler]:
        """The completion endpoints, for ``gateway.hotpath``: the same handlers as the app's routes."""
        return {b"/v1/chat/completions": self.handle_chat, b"/v1/completions": self.handle_completions}

    async def _start(self, app: web.Application) -> None:
        self.router.health.ensure_started()  # health checks run from start-up, not from the first request
        if self.router.shadow is not None:
            self.router.shadow.start()
        if self.key_source is not None:
            self.key_source.start()
        await self.budgeting.start()
        self.pacing.start()  # after the budgets read their spend so far: the first plan starts from it

    async def _close(self, app: web.Application) -> None:
        await self.pacing.aclose()
        if self.key_source is not None:
            await self.key_source.aclose()
        await self.budgeting.aclose()
        await self.router.aclose()

    # -- plumbing -------------------------------------------------------------------

    def _guard(self, handler: Handler) -> Handler:
        """Auth first; then every failure leaves as an OpenAI-shaped error, never a traceback."""

        async def guarded(request: web.Request) -> web.StreamResponse | Answer:
            if self.keys:
                key = self.keys.identify(request.headers.get("Authorization"))
                if key is None:
                    return error_response(401, "missing or invalid API key: send Authorization: Bearer <key>",
                                          "invalid_request_error", "invalid_api_key")
                request["key"] = key
            try:
                return await handler(request)
            except KeyRefused as exc:
                self.metrics.observe_rejected(exc.status, exc.code)
                return error_response(exc.status, exc.message, exc.error_type, exc.code, headers=exc.headers)
            except BadRequest as exc:
                self.metrics.observe_rejected(exc.status, exc.code)
                return error_response(exc.status, exc.message, "invalid_request_error", exc.code, exc.param)
            except AllProvidersFailed as exc:
                return all_failed_response(exc)
            except ProviderError as exc:
                return provider_error_response(exc)
            except ConnectionError as exc:  # the client left mid-answer: nothing to report and no one to tell
                log.debug("client left during %s %s: %s", request.method, request.path, exc)
                return error_response(499, "client closed the connection", code="client_closed_request")
            except Exception:
                log.exception("unexpected error handling %s %s", request.method, request.path)
                return error_response(500, "internal error in llmroute", "server_error", "internal_error")

        return guarded

    async def _read_json(self, request: web.Request) -> dict[str, Any]:
        # The hot path's requests came whole, under the limit and not compressed: their body is read already.
        raw = request.body if isinstance(request, HotRequest) else await read_body(request, self.max_body_bytes)
        if not raw:
            raise BadRequest(400, "request body is empty; send a JSON object")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise BadRequest(400, f"request body must be a JSON object, not {type(body).__name__}")
        check_depth(raw, body, self.limits.max_json_depth)
        return body

    def _strategy(self, request: web.Request, body: dict[str, Any], key: KeyIdentity | None) -> str:
        """The header wins; else a ``model`` that names a strategy; else the default, or the key's first
        strategy when it may not use the default. A key limited to some strategies gets a 403 for others."""
        header = request.headers.get(STRATEGY_HEADER)
        if header is not None:
            if header not in _STRATEGIES:
                raise BadRequest(
                    400, f"unknown {STRATEGY_HEADER} {quote_input(header)} (valid: {', '.join(_STRATEGIES)})",
                    param=STRATEGY_HEADER, code="unknown_strategy",
                )
            named: str | None = header
        else:
            model = body.get("model")
            named = model if isinstance(model, str) and model in _STRATEGIES else None
        if key is None or key.strategies is None:
            return named or self._default_strategy
        allowed = key.strategies
        if named is None:
            return self._default_strategy if self._default_strategy in allowed else key.first_strategy or ""
        if named not in allowed:
            shown = ", ".join(s for s in _STRATEGIES if s in allowed)
            raise KeyRefused(403, f"the key '{key.key_id}' may not use the strategy '{named}'; it may use: {shown}",
                             "permission_error", "strategy_not_allowed")
        return named

    async def _reserve(self, key: KeyIdentity, request: web.Request, body: dict[str, Any]) -> KeyHold:
        """Take the request from its key's rpm and tpm (a 429 when there is no room); what it took."""
        tokens = self._estimated_tokens(request, body) if key.tpm is not None else 0
        try:
            return await self.limiter.acquire(key, tokens)
        except OverLimit as exc:
            raise KeyRefused(429, str(exc), exc.unit, "rate_limit_exceeded",
                             headers={"Retry-After": str(exc.retry_after_s)}) from None

    def _estimated_tokens(self, request: web.Request, body: dict[str, Any]) -> int:
        """A request's prompt tokens (estimated) plus the most it may generate, for a key's tpm."""
        output = output_cap(body) or self._expected_output_tokens
        n = body.get("n")
        return prompt_tokens(request, body) + int(output) * (n if isinstance(n, int) and n > 0 else 1)

    def _extra_headers(self, request: web.Request) -> dict[str, str] | None:
        """Headers forwarded upstream: the client's ``x-request-id`` when it is a short token; otherwise
        none, and the router makes a new id (a bad value is neither forwarded, stored nor echoed)."""
        request_id = request.headers.get(REQUEST_ID_HEADER)
        if request_id and self._request_id.fullmatch(request_id):
            return {REQUEST_ID_HEADER: request_id}
        return None

    # -- OpenAI endpoints -----------------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse | Answer:
        body = await self._read_json(request)
        chat_body(body, self.limits)
        return await self._complete(request, body, CHAT_PATH, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse | Answer:
        body = await self._read_json(request)
        completions_body(body, self.limits)
        return await self._complete(request, body, COMPLETIONS_PATH, "completions")

    def _context(self, request: web.Request, body: dict[str, Any], endpoint: str) -> RequestContext:
        """What the ledger records about who asked: key id, user, tags, and the route they named. A key's tags
        come first and win: a request's tag with the same name as one of the key's is dropped."""
        user = body.get("user")
        model = body.get("model")
        tags_header = request.headers.get(TAGS_HEADER)
        tags = parse_tags(tags_header and _header_text(tags_header), body.get("metadata"))
        key: KeyIdentity | None = request.get("key")
        if key is not None and key.tags:
            names = key.tag_names
            tags = [*key.tags, *(t for t in tags if t.partition("=")[0] not in names)][:_MAX_TAGS]
        return RequestContext(
            route=model if isinstance(model, str) else None, endpoint=endpoint,
            key_id=key.key_id if key is not None else None, user=user if isinstance(user, str) else None, tags=tags,
        )

    async def _complete(self, request: web.Request, body: dict[str, Any], path: str,
                        endpoint: str) -> web.StreamResponse | Answer:
        key: KeyIdentity | None = request.get("key")
        strategy = self._strategy(request, body, key)
        limited = key if key is not None and key.rate_limited else None
        reserved = await self._reserve(limited, request, body) if limited is not None else NO_HOLD
        warning = self._warning(request, body, strategy)
        context = self._context(request, body, endpoint) if self._keeps_context else None  # ledger, shadow, tag budgets
        router, held = self.router, None
        if self.budgeting.applies(key):
            try:
                held, router, strategy = await self.budgeting.hold(key, body, context, strategy,
                                                                   input_tokens=prompt_tokens(request, body))
            except Exhausted as exc:
                if limited is not None:
                    self.limiter.settle(limited, reserved, 0)
                raise KeyRefused(429, exc.message, "insufficient_quota", "budget_exceeded",
                                 headers={"Retry-After": str(exc.retry_after_s)}) from None
        streamed = bool(body.get("stream"))
        paced = self.pacing.applicable(key, context) if self.pacing else ()  # budget pacing: its share, its tokens
        share = self.pacing.share(paced) if paced else None
        try:
            if streamed:  # its key's tokens and its budgets settle when the stream ends, to what it used
                settle = None if limited is None and held is None else functools.partial(
                    settle_request, self.limiter, limited, reserved, held)
                if paced:
                    settle = self.pacing.counting(paced, settle)
                return await stream_response(
                    router, self.metrics, request, body, path, strategy, endpoint,
                    write_timeout_s=self.write_timeout_s, extra_headers=self._extra_headers(request), context=context,
                    warning=warning, settle=settle, strong_share=share, prompt_tokens=prompt_tokens(request, body))
            if path == CHAT_PATH:
                result = await router.chat_request(body, strategy=strategy, extra_headers=self._extra_headers(request),
                                                   context=context, strong_share=share,
                                                   prompt_tokens=prompt_tokens(request, body))
            else:
                result = await router.completion_request(body, strategy=strategy,
                                                         extra_headers=self._extra_headers(request), context=context,
                                                         strong_share=share, prompt_tokens=prompt_tokens(request, body))
        except (AllProvidersFailed, ClientRequestError, ProviderError) as exc:
            if not streamed:
                settle_request(self.limiter, limited, reserved, held, None, getattr(exc, "attempts", None) or [])
                if paced:
                    self.pacing.count(paced, getattr(exc, "attempts", None) or [])
            self.metrics.observe_failures(getattr(exc, "attempts", []), strategy)
            self.metrics.observe_error(strategy, type(exc).__name__)
            raise
        except BaseException:
            if held is not None and not streamed:  # cancelled: what the provider billed is unknown here, so the hold stays spent
                held.keep()
            raise
        settle_request(self.limiter, limited, reserved, held, result, result.attempts)
        if paced:
            self.pacing.count(paced, result.attempts)
        self.metrics.observe(result, endpoint)
        body_json = result.raw_json if result.raw_json is not None else orjson.dumps(result.raw)
        return Answer(body_json, result_lines(result, warning))

    def _warning(self, request: web.Request, body: dict[str, Any], strategy: str) -> str | None:
        """Say so when ``model`` looks like a misspelt strategy that was not run (the default ran instead)."""
        model = body.get("model")
        if not isinstance(model, str) or model == strategy or STRATEGY_HEADER in request.headers:
            return None
        return strategy_warning(model, strategy)

    def _model_object(self, name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": self._created, "owned_by": "llmroute"}

    @staticmethod
    def _visible(request: web.Request) -> list[str]:
        """The strategies the request's key may use: the models it is shown."""
        key: KeyIdentity | None = request.get("key")
        return [n for n in _STRATEGIES if key is None or key.strategies is None or n in key.strategies]

    async def models(self, request: web.Request) -> web.Response:
        data = [self._model_object(name) for name in self._visible(request)]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")

    async def model(self, request: web.Request) -> web.Response:
        """One strategy as a model object, as ``GET /v1/models/{model}`` answers (the SDKs' ``models.retrieve``)."""
        name = request.match_info["model_id"]
        visible = self._visible(request)
        if name not in visible:
            return error_response(404, f"the model {quote_input(name)} does not exist; models here are the "
                                  f"strategies: {', '.join(visible)}", param="model", code="model_not_found")
        return web.Response(body=orjson.dumps(self._model_object(name)), content_type="application/json")

    # -- operations -----------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def openapi(self, request: web.Request) -> web.Response:
        """The gateway's OpenAPI 3 document: what it serves and what it accepts."""
        if self._openapi is None:
            self._openapi = openapi_json(self.limits)
        return web.Response(body=self._openapi, content_type="application/json")

    def _usable(self) -> list[str]:
        wall = now()
        state = self.router.state
        return [name for name in self.router.providers
                if state.cooldown_until(name) <= wall and state.breaker(name).state != "open"]

    async def ready(self, request: web.Request) -> web.Response:
        usable = self._usable()
        return web.json_response({"ready": bool(usable), "usable_providers": usable}, status=200 if usable else 503)

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        if self.budgeting.budgets.known:  # read here, when scraped: nothing on the request path
            self.metrics.observe_budgets(self.budgeting.budgets.snapshot())
        if self.router.spend is not None:
            self.metrics.observe_spend(self.router.spend.snapshot())
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def state(self, request: web.Request) -> web.Response:
        """Per provider: what the router has measured and decided. Never a key or a header value."""
        config = self.router.config
        weights = config.weights()
        wall = now()
        providers = {}
        for name, stats in self.router.state.snapshot().items():
            if name not in config.providers:
                continue
            p = config.providers[name]
            providers[name] = {
                "model": p.model,
                "latency_ms": round(stats.latency_ms, 3),
                "latency_prior_ms": p.latency_ms,
                "latency_samples": stats.samples,
                "successes": stats.successes,
                "failures": stats.failures,
                "error_rate": round(stats.error_rate, 4),
                "failures_by_kind": stats.failures_by_kind,
                "recent_failures": [{"at": t, "kind": k, "status": s} for t, k, s in stats.recent_failures],
                "cooling_down_s": round(max(0.0, stats.cooldown_until - wall), 3),
                "breaker": self.router.state.breaker(name).describe(),
                "weight": weights.get(name, 0.0),
                "quality": p.quality,
                "price_per_m": p.price_per_m.model_dump(exclude_none=True) if p.price_per_m else None,
                "price_per_gpu_second": p.price_per_gpu_second,
                "pool": self.router.providers[name].pool_stats.snapshot(),
            }
        body = {"default_strategy": self._default_strategy, "strategies": list(_STRATEGIES), "providers": providers}
        shadow = self.router.shadow
        body["shadow"] = shadow.snapshot() if shadow is not None else {"rate": 0.0}
        body["budgets"] = self.budgeting.budgets.snapshot()
        for name, pacing in self.pacing.states().items():  # each paced budget's plan: target, spend, share
            if name in body["budgets"]:
                body["budgets"][name]["pacing"] = pacing
        body["spend"] = self.router.spend.snapshot() if self.router.spend is not None else None
        body["state_backend"] = self._state_backend()
        return web.json_response(body, dumps=lambda o: orjson.dumps(o).decode())

    def _state_backend(self) -> dict[str, Any]:
        """Which state this process routes on; for a shared one, whether it reaches it now (else it serves
        from its local copy) and how many replicas it saw at its last sync."""
        backend = self.router.config.state.backend
        if backend == "memory":
            return {"backend": backend}
        state = self.router.state
        return {"backend": backend, "reachable": bool(getattr(state, "up", False)),
                "replicas": getattr(state, "replicas", None)}

    async def not_found(self, request: web.Request) -> web.Response:
        path = request.path
        expected = _ROUTES.get(path) or ("GET" if path.startswith(MODELS_PREFIX) else None)
        if expected is not None and request.method != expected:
            return error_response(405, f"{request.method} is not allowed on {quote_input(path)}; use {expected}",
                                  code="method_not_allowed", headers={"Allow": expected})
        return error_response(404, f"no route {request.method} {quote_input(path)}", code="not_found")

