"""The gateway's OpenAPI 3 document, served at ``GET /openapi.json``.

Hand-written, close to OpenAI's own schemas for the endpoints the gateway serves. A field has a type or
a bound here only where the gateway checks it (``validate.py``); other OpenAI fields are described but
left open, because they pass through to the provider, which judges them. So the document says exactly
what gets a 400 from the gateway itself, and a fuzzer reading it can tell a wrong answer from a right one.
"""

from __future__ import annotations

from typing import Any

import orjson

from .. import __version__
from ..strategies import RoutingStrategy
from .validate import MAX_INT, Limits

JSON = "application/json"
STRATEGIES = [s.value for s in RoutingStrategy]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "nullable": True}


def _positive_int(description: str) -> dict[str, Any]:
    return _nullable({"type": "integer", "minimum": 1, "maximum": MAX_INT, "description": description})


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {JSON: {"schema": _ref(schema)}}}


def _answer(description: str, schema: str, media: str = JSON) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": _ref(schema)}}}


_ERROR = {"default": _answer("An OpenAI-shaped error", "Error")}

_ROUTING_HEADERS = [
    {"name": "x-llmroute-strategy", "in": "header", "required": False,
     "description": "The strategy to run; wins over a strategy named in `model`.",
     "schema": {"type": "string", "enum": STRATEGIES}},
    {"name": "x-request-id", "in": "header", "required": False,
     "description": "The request's id in the answer, upstream and in the ledger when it is a short token "
                    "(printable ASCII without separators); otherwise the gateway makes its own.",
     "schema": {"type": "string"}},
    {"name": "x-llmroute-tags", "in": "header", "required": False,
     "description": "Comma-separated tags (`team=sales,urgent`) recorded in the ledger.",
     "schema": {"type": "string"}},
]


def _completion_params(limits: Limits) -> dict[str, Any]:
    """Fields both completion endpoints share."""
    return {
        "model": _nullable({"type": "string", "maxLength": limits.max_model_chars,
                            "description": f"A strategy ({', '.join(STRATEGIES)}); any other name runs the default."}),
        "user": _nullable({"type": "string", "maxLength": limits.max_user_chars,
                           "description": "Recorded in the ledger."}),
        "n": _positive_int("How many choices; passed to the provider."),
        "stream": _nullable({"type": "boolean", "description": "Answer as server-sent events."}),
        "stream_options": _nullable({
            "type": "object",
            "properties": {"include_usage": _nullable({"type": "boolean"})},
        }),
        "temperature": _nullable({"type": "number", "minimum": 0, "maximum": 2}),
        "top_p": _nullable({"type": "number", "minimum": 0, "maximum": 1}),
        "metadata": {"description": "An object whose string, number and boolean values are recorded as tags."},
        "stop": {"description": "Passed to the provider."},
        "seed": {"description": "Passed to the provider."},
        "presence_penalty": {"description": "Passed to the provider."},
        "frequency_penalty": {"description": "Passed to the provider."},
    }


def document(limits: Limits) -> dict[str, Any]:
    """The whole document for a gateway with these limits."""
    common = _completion_params(limits)
    content_part = {"oneOf": [
        {"type": "object", "required": ["type", "text"], "description": "Text, which routing reads",
         "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}},
        {"type": "object", "required": ["type"], "description": "Another kind (image_url, input_audio, file...)",
         "properties": {"type": {"type": "string", "not": {"enum": ["text"]}}, "text": {"type": "string"}}},
    ]}
    message = {
        "type": "object", "required": ["role"],
        "properties": {
            "role": {"type": "string", "description": "system, developer, user, assistant or tool"},
            "content": _nullable({"oneOf": [{"type": "string"}, {"type": "array", "items": _ref("ContentPart")}]}),
            "name": {"description": "Passed to the provider."},
            "tool_calls": {"description": "Passed to the provider."},
            "tool_call_id": {"description": "Passed to the provider."},
        },
    }
    chat_request = {
        "type": "object", "required": ["messages"],
        "properties": {
            "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
            **common,
            "max_tokens": _positive_int("Most tokens to generate (older name)."),
            "max_completion_tokens": _positive_int("Most tokens to generate."),
            "tools": {"description": "Passed to the provider."},
            "tool_choice": {"description": "Passed to the provider."},
            "response_format": {"description": "Passed to the provider."},
        },
    }
    completion_request = {
        "type": "object", "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string"},
            **common,
            "max_tokens": _positive_int("Most tokens to generate."),
        },
    }
    usage = {"type": "object", "properties": {
        "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
    }}
    completion = {
        "type": "object", "required": ["choices"],
        "properties": {
            "id": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"},
            "model": {"type": "string"}, "choices": {"type": "array", "items": {"type": "object"}}, "usage": usage,
        },
    }
    model = {
        "type": "object", "required": ["id", "object", "created", "owned_by"],
        "properties": {"id": {"type": "string", "enum": STRATEGIES}, "object": {"type": "string", "enum": ["model"]},
                       "created": {"type": "integer"}, "owned_by": {"type": "string"}},
    }
    error = {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["message", "type", "param", "code"],
            "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                           "param": {"type": "string", "nullable": True},
                           "code": {"oneOf": [{"type": "string"}, {"type": "integer"}], "nullable": True}},
        }},
    }
    completion_answers = {
        "200": {"description": "The first good answer, with `x-llmroute-*` headers saying who answered and at what "
                               "cost; `text/event-stream` when `stream` is true.",
                "content": {JSON: {"schema": _ref("Completion")}, "text/event-stream": {"schema": _ref("Event")}}},
        **_ERROR,
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "llmroute gateway", "version": __version__,
                 "description": "OpenAI-compatible endpoints that route each request to a provider by strategy."},
        "paths": {
            "/v1/chat/completions": {"post": {
                "operationId": "createChatCompletion", "summary": "Chat completion, routed by strategy",
                "parameters": _ROUTING_HEADERS, "requestBody": _body("ChatCompletionRequest"),
                "responses": completion_answers,
            }},
            "/v1/completions": {"post": {
                "operationId": "createCompletion", "summary": "Legacy completion, routed by strategy",
                "parameters": _ROUTING_HEADERS, "requestBody": _body("CompletionRequest"),
                "responses": completion_answers,
            }},
            "/v1/models": {"get": {
                "operationId": "listModels", "summary": "The strategies, as models",
                "responses": {"200": _answer("The strategies", "ModelList"), **_ERROR},
            }},
            "/v1/models/{model}": {"get": {
                "operationId": "retrieveModel", "summary": "One strategy, as a model",
                "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {"200": _answer("The strategy", "Model"), **_ERROR},
            }},
            "/health": {"get": {
                "operationId": "health", "summary": "The process is up",
                "responses": {"200": {"description": "Up", "content": {JSON: {"schema": {
                    "type": "object", "properties": {"status": {"type": "string"}}}}}}},
            }},
            "/ready": {"get": {
                "operationId": "ready", "summary": "At least one provider is usable (no open breaker, no cool-down)",
                "responses": {code: {"description": text, "content": {JSON: {"schema": {
                    "type": "object", "properties": {"ready": {"type": "boolean"},
                                                     "usable_providers": {"type": "array",
                                                                          "items": {"type": "string"}}}}}}}
                    for code, text in (("200", "Ready"), ("503", "No provider is usable"))},
            }},
        },
        "components": {"schemas": {
            "ChatCompletionRequest": chat_request, "CompletionRequest": completion_request,
            "ChatMessage": message, "ContentPart": content_part, "Completion": completion,
            "Model": model, "ModelList": {"type": "object", "properties": {
                "object": {"type": "string"}, "data": {"type": "array", "items": _ref("Model")}}},
            "Error": error,
            "Event": {"type": "object", "description": "One server-sent event: a chunk as JSON, or [DONE]",
                      "properties": {"data": {"type": "string"}, "event": {"type": "string"}}},
        }},
    }


def openapi_json(limits: Limits) -> bytes:
    return orjson.dumps(document(limits))
