"""Hostile structured-output requests and labels files against the emulator: each is a 400 in the
provider's error shape or a valid answer, never a 500, a hang or unbounded memory; over HTTP to an
emulator on loopback."""

from __future__ import annotations

import json
import random
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import openai
import orjson
import pytest

from llmroute.emulator import EmulatorThread, Labels
from llmroute.emulator.schema import MAX_CHARS, SchemaError, generate

from .conftest import emulator

PROMPT = [{"role": "user", "content": "Answer as JSON"}]
# A client timeout only turns a hang of the old code into a failure; nothing here is timed.
HTTP = httpx.Client(timeout=60)


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorThread]:
    with emulator("cerebras") as running:
        yield running


def _post(emu: EmulatorThread, **body: Any) -> httpx.Response:
    return HTTP.post(emu.base_url + "/chat/completions", json={"model": "m", "messages": PROMPT, **body})


def _refused(resp: httpx.Response, param: str) -> str:
    assert resp.status_code == 400, resp.text[:300]
    error = resp.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    return error["message"]


def _schema(schema: Any) -> dict[str, Any]:
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}


def _healthy(emu: EmulatorThread) -> None:
    """The emulator still answers after the hostile request."""
    resp = _post(emu, **_schema({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}))
    assert resp.status_code == 200 and isinstance(json.loads(resp.json()["choices"][0]["message"]["content"])["a"], int)


# Schemas valid JSON Schema accepts values for: the answer must be one of them.
SATISFIABLE = {
    "ref to a boolean schema": {"$defs": {"Any": True}, "$ref": "#/$defs/Any"},
    "ref into an array": {"$defs": {"T": {"prefixItems": [{"type": "integer"}]}}, "$ref": "#/$defs/T/prefixItems/0"},
    "multiple of 2 at most -5": {"type": "number", "maximum": -5, "multipleOf": 2},
    "integer just past 2**60": {"type": "integer", "minimum": 2**60 + 1, "maximum": 2**60 + 3},
    "pattern over a surrogate range": {"type": "string", "pattern": "^[\ud7f0-\ue010]{3}$"},
    "pattern with anchors and classes": {"type": "string", "pattern": r"(?i)^[^a]\d{2}\b-[^\W\d]+$"},
}


@pytest.mark.parametrize("schema", list(SATISFIABLE.values()), ids=list(SATISFIABLE))
def test_satisfiable_schemas_get_a_valid_answer(emu: EmulatorThread, schema: Any) -> None:
    resp = _post(emu, **_schema(schema))
    assert resp.status_code == 200, resp.text[:300]
    value = json.loads(resp.json()["choices"][0]["message"]["content"])
    assert jsonschema_rs.validator_for(schema).is_valid(value), value


# Schemas no value satisfies, or that ask for more than the emulator generates: a 400, promptly.
REFUSED = {
    "ref to a string": {"type": "object", "$ref": "#/type"},
    "ref to a list": {"required": ["a"], "$ref": "#/required"},
    "allOf properties that are a list": {"allOf": [{"properties": [1]}]},
    "allOf required that is a number": {"allOf": [{"required": 5}]},
    "multipleOf below what a float divides by": {"type": "integer", "minimum": 1, "multipleOf": 1e-320},
    "number multipleOf tiny with a huge bound": {"type": "number", "minimum": 1e300, "multipleOf": 1e-10},
    "format that is not a string": {"type": "string", "format": ["date"]},
    "pattern nested 5000 deep": {"type": "string", "pattern": "(" * 5000 + ")" * 5000},
    "catastrophic backtracking": {"type": "string", "pattern": r"^(a+){25}\b\B"},
    "polynomial backtracking": {"type": "string", "pattern": r"(\w*){40}!\B\b"},
    "repeats past any memory": {"type": "string", "pattern": "((a{65535}){65535}){65535}"},
    "empty group repeated 4e9 times": {"type": "string", "pattern": "(?:){4294967294}x\\B\\b"},
    "answer of 2.6 MB": {"type": "array", "minItems": 40, "items": {"type": "string", "minLength": 65536}},
    "lookahead": {"type": "string", "pattern": "(?=a)a"},
}


@pytest.mark.parametrize("schema", list(REFUSED.values()), ids=list(REFUSED))
def test_hostile_schemas_are_a_400_and_the_emulator_survives(emu: EmulatorThread, schema: Any) -> None:
    for stream in (False, True):
        _refused(_post(emu, stream=stream, **_schema(schema)), "response_format")
    _healthy(emu)


def test_answers_stay_within_the_documented_size(emu: EmulatorThread) -> None:
    fits = {"type": "array", "minItems": 10, "items": {"type": "string", "minLength": MAX_CHARS // 20}}
    resp = _post(emu, **_schema(fits))
    assert resp.status_code == 200 and len(json.loads(resp.json()["choices"][0]["message"]["content"])) == 10
    too_big = {**fits, "minItems": 21}
    assert str(MAX_CHARS) in _refused(_post(emu, **_schema(too_big)), "response_format")


@pytest.mark.parametrize("schema", [{"type": "integer", "minimum": 10**400}, {"const": 2**70},
                                    {"type": "integer", "minimum": 2**63}],
                         ids=["minimum past any float", "const past 64 bits", "integers past 64 bits"])
def test_python_integers_json_cannot_carry_are_refused(schema: dict[str, Any]) -> None:
    """Over HTTP such numbers arrive as floats; a Python caller of ``generate`` can pass them as ints."""
    with pytest.raises(SchemaError):
        orjson.dumps(generate(schema, random.Random(0)))


def _tool(name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters or {"type": "object"}}}


@pytest.mark.parametrize("name", ["get.weather", "has space", "x" * 65, "", "naïve"])
def test_function_names_a_provider_refuses_are_a_400(emu: EmulatorThread, name: str) -> None:
    _refused(_post(emu, tools=[_tool("ok"), _tool(name)]), "tools[1].function.name")


def test_more_tools_than_a_provider_takes_are_a_400(emu: EmulatorThread) -> None:
    assert "128" in _refused(_post(emu, tools=[_tool(f"f{i}") for i in range(10_000)]), "tools")
    resp = _post(emu, tools=[_tool(f"f{i}") for i in range(128)], tool_choice="required")
    assert resp.status_code == 200 and resp.json()["choices"][0]["finish_reason"] == "tool_calls"
    _healthy(emu)


def test_all_tools_of_a_request_share_one_generation_budget(emu: EmulatorThread) -> None:
    """Each schema alone fits the node budget; 100 of them would take 100 times the work."""
    heavy = {"type": "object", "required": ["xs"],
             "properties": {"xs": {"type": "array", "minItems": 5000, "items": {"type": "integer"}}}}
    message = _refused(_post(emu, tools=[_tool(f"f{i}", heavy) for i in range(100)]), "tools[3].function.parameters")
    assert "nodes" in message  # the 4th schema's 5,002 nodes take the request past 20,000
    resp = _post(emu, tools=[_tool("only", heavy)], tool_choice="required")
    assert len(json.loads(resp.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])["xs"]) >= 5000


def test_streamed_tool_arguments_reassemble_with_the_openai_client(emu: EmulatorThread) -> None:
    """Arguments with non-ASCII text, escapes and nesting come back whole from the deltas."""
    params = {"type": "object", "required": ["city", "notes", "deep"],
              "properties": {"city": {"const": "Zürich \"Altstadt\" \\ 東京 \u2028"},
                             "notes": {"type": "array", "minItems": 3, "items": {"type": "string", "pattern": "^[é-ü]{5}$"}},
                             "deep": {"type": "object", "required": ["a"], "properties": {"a": {"const": [[{"b": None}]]}}}}}
    client = openai.OpenAI(base_url=emu.base_url, api_key="unused", max_retries=0)
    body = {"model": "m", "messages": PROMPT, "tools": [_tool("lookup", params)], "tool_choice": "required"}
    whole = client.chat.completions.create(**body).choices[0].message.tool_calls[0].function.arguments
    parts: dict[int, str] = {}
    for chunk in client.chat.completions.create(**body, stream=True):
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            parts[call.index] = parts.get(call.index, "") + (call.function.arguments or "")
    assert parts == {0: whole}
    value = json.loads(whole)
    assert jsonschema_rs.validator_for(params).is_valid(value) and value["city"].startswith("Zürich")


# -- labelled mode -------------------------------------------------------------------------------------------


def test_a_labelled_prompt_matches_in_any_unicode_normal_form(tmp_path: Path) -> None:
    """The file says "Café" composed; a client (or a macOS file name pasted in) sends it decomposed."""
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps({"prompt": "Où est le Café de Flore ?", "answer": "Paris",
                                "correct": {"cerebras": True}}, ensure_ascii=False) + "\n", encoding="utf-8")
    labels = Labels.load(path)
    decomposed = unicodedata.normalize("NFD", "Où est le Café de Flore ?")
    assert decomposed != "Où est le Café de Flore ?" and labels.is_correct("cerebras", decomposed) is True
    with emulator("cerebras", labels=labels) as emu:
        messages = [{"role": "user", "content": decomposed}]
        resp = HTTP.post(emu.base_url + "/chat/completions", json={"model": "m", "messages": messages})
        assert resp.json()["choices"][0]["message"]["content"] == "Paris"


@pytest.mark.parametrize(("line", "says"), [
    (b"\xff\xfe not utf-8\n", "line 2"),
    (b"[" * 100_000 + b"\n", "line 2"),
    (b'{"prompt": "big", "answer": {"n": 1180591620717411303424}}\n', "line 2"),
])
def test_a_bad_labels_line_is_named_whatever_breaks_it(tmp_path: Path, line: bytes, says: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"prompt": "ok", "answer": "yes"}\n' + line)
    with pytest.raises(ValueError, match="bad.jsonl") as info:
        Labels.load(path)
    assert says in str(info.value)


def test_a_labels_file_saved_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "Capital of France?", "answer": "Paris"}\n')
    assert Labels.load(path).grade("Capital of France?", "paris.") is True
