"""Structured output from the emulator: JSON for ``response_format`` and well-formed ``tool_calls``,
checked with the clients people use (openai's ``parse``, LangChain), over HTTP to emulators on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

import httpx
import jsonschema_rs
import openai
import pytest
from pydantic import BaseModel, Field

from llmroute.emulator import EmulatorThread

from .conftest import emulator
from .gateway.conftest import start_gateway, stop_gateway


class Address(BaseModel):
    city: str
    postcode: str = Field(min_length=4, max_length=8)


class Lead(BaseModel):
    label: Literal["hot", "warm", "cold"]
    score: int = Field(ge=1, le=10)
    reason: str
    contacts: list[str] = Field(min_length=1, max_length=3)
    address: Address
    budget_usd: Optional[float] = None


class Node(BaseModel):
    name: str
    children: list[Node] = []


class GetWeather(BaseModel):
    """Current weather in a city."""

    city: str
    unit: Literal["celsius", "fahrenheit"]


PROMPT = [{"role": "user", "content": "Qualify this lead as JSON: TechCorp, 500 employees, SaaS"}]

SCHEMAS: list[dict[str, Any]] = [
    Lead.model_json_schema(),
    Node.model_json_schema(),  # recursive, through $defs and $ref
    {"type": "object", "additionalProperties": False, "required": ["tags", "kind", "n", "ok", "none"],
     "properties": {"tags": {"type": "array", "items": {"enum": [1, 2, 3]}, "uniqueItems": True, "minItems": 2},
                    "kind": {"type": ["string", "null"], "format": "email"},
                    "n": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                    "ok": {"type": "boolean"}, "none": {"type": "null"},
                    "pair": {"type": "array", "prefixItems": [{"type": "integer", "multipleOf": 5}, {"const": "x"}],
                             "items": False},
                    "code": {"type": "string", "pattern": "^[a-z]+$"},
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d{4}(-[a-z]{2})?$"},
                    "any": {"anyOf": [{"type": "integer", "minimum": 3, "maximum": 3}, {"type": "string"}]}}},
    {"type": "array", "items": {"allOf": [{"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                                          {"properties": {"b": {"type": "string"}}, "required": ["b"]}]},
     "minItems": 1},
]


def oai(emu: EmulatorThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.base_url, api_key="unused", max_retries=0)


def test_parse_with_a_pydantic_model(emus: dict[str, EmulatorThread]) -> None:
    for emu in emus.values():
        completion = oai(emu).chat.completions.parse(model="m", messages=PROMPT, response_format=Lead)
        lead = completion.choices[0].message.parsed
        assert isinstance(lead, Lead) and 1 <= lead.score <= 10 and lead.label in ("hot", "warm", "cold")
        again = oai(emu).chat.completions.parse(model="m", messages=PROMPT, response_format=Lead)
        assert again.choices[0].message.parsed == lead  # deterministic per prompt and seed
        assert completion.usage.completion_tokens > 0


def test_the_seed_and_the_prompt_change_the_value() -> None:
    with emulator("cerebras", seed=0) as a, emulator("cerebras", seed=5) as b:
        values = {json.dumps(oai(e).chat.completions.parse(model="m", messages=m, response_format=Lead)
                             .choices[0].message.parsed.model_dump(), sort_keys=True)
                  for e in (a, b) for m in (PROMPT, [{"role": "user", "content": "another lead"}])}
    assert len(values) > 1


def _stream_text(emu: EmulatorThread, body: dict[str, Any]) -> tuple[str, str | None]:
    text, finish = "", None
    for chunk in oai(emu).chat.completions.create(**body, stream=True):
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


@pytest.mark.parametrize("schema", SCHEMAS, ids=["pydantic", "recursive", "keywords", "allOf"])
def test_json_schema_answers_validate_in_json_and_streams(emus: dict[str, EmulatorThread], schema: dict[str, Any]) -> None:
    validator = jsonschema_rs.validator_for(schema)
    for emu in emus.values():
        for i in range(8):
            messages = [{"role": "user", "content": f"request {i}"}]
            body = {"model": "m", "messages": messages,
                    "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": schema, "strict": True}}}
            completion = oai(emu).chat.completions.create(**body)
            value = json.loads(completion.choices[0].message.content)
            assert validator.is_valid(value), (value, list(validator.iter_errors(value))[:1])
            streamed, finish = _stream_text(emu, body)
            assert json.loads(streamed) == value and finish == "stop"


def test_json_object_is_an_object(emus: dict[str, EmulatorThread]) -> None:
    body = {"model": "m", "messages": PROMPT, "response_format": {"type": "json_object"}}
    for emu in emus.values():
        assert isinstance(json.loads(oai(emu).chat.completions.create(**body).choices[0].message.content), dict)
        assert isinstance(json.loads(_stream_text(emu, body)[0]), dict)


@pytest.mark.parametrize(("extra", "param"), [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer", "minimum": 5,
                                                                                          "maximum": 3}}}},
     "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {
        "type": "object", "required": ["a"], "additionalProperties": False}}}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#"}}}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"enum": []}}}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string",
                                                                                          "pattern": "(?=x)y"}}}},
     "response_format"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": "x"}}, "response_format.json_schema"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "wat"}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools[0].function.name"),
    ({"tools": {"f": 1}}, "tools"),
    ({"tool_choice": "auto"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function",
                                                                                 "function": {"name": "g"}}},
     "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"}, "tool_choice"),
])
def test_what_cannot_be_satisfied_is_a_400_never_a_500(emus: dict[str, EmulatorThread], extra: dict[str, Any],
                                                       param: str) -> None:
    for name, emu in emus.items():
        for stream in (False, True):
            resp = httpx.post(emu.base_url + "/chat/completions",
                              json={"model": "m", "messages": PROMPT, "stream": stream, **extra})
            assert resp.status_code == 400, resp.text
            error = resp.json() if name == "runpod" else resp.json()["error"]
            assert error["param"] == param


def _tools() -> list[Any]:
    return [openai.pydantic_function_tool(GetWeather),
            {"type": "function", "function": {"name": "lookup_lead", "parameters": Lead.model_json_schema()}}]


@pytest.mark.parametrize("choice", ["auto", "required", {"type": "function", "function": {"name": "lookup_lead"}}])
def test_tool_calls_are_well_formed(emus: dict[str, EmulatorThread], choice: Any) -> None:
    validators = {t["function"]["name"]: jsonschema_rs.validator_for(t["function"]["parameters"]) for t in _tools()}
    for emu in emus.values():
        seen = set()
        for i in range(6):
            completion = oai(emu).chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"weather or lead {i}"}], tools=_tools(), tool_choice=choice)
            choice0 = completion.choices[0]
            assert choice0.finish_reason == "tool_calls" and choice0.message.content is None
            (call,) = choice0.message.tool_calls
            assert call.type == "function" and call.id.startswith("call_")
            assert validators[call.function.name].is_valid(json.loads(call.function.arguments))
            seen.add(call.function.name)
        if isinstance(choice, dict):
            assert seen == {"lookup_lead"}


def test_parse_gives_parsed_tool_arguments(emus: dict[str, EmulatorThread]) -> None:
    completion = oai(emus["cerebras"]).chat.completions.parse(
        model="m", messages=PROMPT, tools=[openai.pydantic_function_tool(GetWeather)], tool_choice="required")
    parsed = completion.choices[0].message.tool_calls[0].function.parsed_arguments
    assert isinstance(parsed, GetWeather)


def test_streamed_tool_calls_come_as_openai_sends_them(emus: dict[str, EmulatorThread]) -> None:
    body = {"model": "m", "messages": PROMPT, "tools": _tools(), "tool_choice": "required"}
    for emu in emus.values():
        whole = oai(emu).chat.completions.create(**body).choices[0].message.tool_calls[0]
        chunks = [c for c in oai(emu).chat.completions.create(**body, stream=True) if c.choices]
        calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
        first, rest = calls[0][0], [c[0] for c in calls[1:]]
        assert first.id == whole.id and first.function.name == whole.function.name and first.type == "function"
        assert first.function.arguments == "" and len(rest) > 1
        assert all(d.id is None and d.function.name is None and d.index == 0 for d in rest)
        assert "".join(d.function.arguments for d in rest) == whole.function.arguments
        assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_no_tool_call_for_none_or_after_a_tool_answered(emus: dict[str, EmulatorThread]) -> None:
    c = oai(emus["runpod"])
    answer = c.chat.completions.create(model="m", messages=PROMPT, tools=_tools(), tool_choice="none").choices[0]
    assert answer.finish_reason == "stop" and answer.message.content and not answer.message.tool_calls
    first = c.chat.completions.create(model="m", messages=PROMPT, tools=_tools()).choices[0].message
    follow_up = [*PROMPT, first.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": "sunny, 21C"}]
    answer = c.chat.completions.create(model="m", messages=follow_up, tools=_tools()).choices[0]
    assert answer.finish_reason == "stop" and answer.message.content


def test_langchain_structured_output_and_tools(emus: dict[str, EmulatorThread]) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    for emu in emus.values():
        llm = langchain_openai.ChatOpenAI(base_url=emu.base_url, api_key="unused", model="m", max_retries=0)
        for method in ("json_schema", "function_calling"):
            assert isinstance(llm.with_structured_output(Lead, method=method).invoke("Qualify TechCorp, as JSON"), Lead)
        message = llm.bind_tools([GetWeather]).invoke("What is the weather in Paris?")
        (call,) = message.tool_calls
        assert call["name"] == "GetWeather" and GetWeather(**call["args"])
        streamed = None
        for piece in llm.bind_tools([GetWeather], tool_choice="GetWeather").stream("Weather in Paris?"):
            streamed = piece if streamed is None else streamed + piece
        assert streamed is not None and GetWeather(**streamed.tool_calls[0]["args"])


def test_langchain_through_the_gateway(seed_config: dict[str, Any], tmp_path: Path) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    gateway = start_gateway(tmp_path, seed_config)
    try:
        llm = langchain_openai.ChatOpenAI(base_url=gateway.base_url + "/v1", api_key="unused", model="m", max_retries=0)
        assert isinstance(llm.with_structured_output(Lead).invoke("Qualify TechCorp"), Lead)
        streamed = None
        for piece in llm.bind_tools([GetWeather], tool_choice="GetWeather").stream("Weather in Paris?"):
            streamed = piece if streamed is None else streamed + piece
        assert streamed is not None and GetWeather(**streamed.tool_calls[0]["args"])
    finally:
        stop_gateway(gateway)
