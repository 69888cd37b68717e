"""Schemathesis over the gateway's own OpenAPI document: no 5xx, and every error OpenAI-shaped.

A real ``llmroute serve`` over the emulators, fed requests generated from ``/openapi.json``, both
ones the document allows (they must be answered) and ones it forbids (they must get a 4xx). A bounded
run: the larger one is ``benchmarks/fuzz.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402  (schemathesis brings hypothesis)
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from llmroute.emulator import EmulatorThread  # noqa: E402

from ..conftest import provider  # noqa: E402
from .conftest import RunningGateway, start_gateway, stop_gateway  # noqa: E402

EXAMPLES_PER_OPERATION = 60
ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def fuzzed_gateway(cerebras_emu: EmulatorThread, runpod_emu: EmulatorThread,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    config = {
        "providers": {"cerebras": provider(cerebras_emu.base_url, "cerebras"),
                      "runpod": provider(runpod_emu.base_url, "runpod")},
        "strategy": "balanced", "balanced_weights": {"runpod": 80, "cerebras": 20}, "deadline_s": 20,
        "ledger": {"path": str(tmp / "fuzz.sqlite3")},
    }
    gateway = start_gateway(tmp, config)
    yield gateway
    assert stop_gateway(gateway) == 0
    assert "Traceback" not in gateway.log(), gateway.log()[-3000:]


OPERATIONS = [("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/v1/models"),
              ("GET", "/v1/models/{model}"), ("GET", "/health"), ("GET", "/ready")]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


@pytest.fixture(scope="module")
def gateway_schema(fuzzed_gateway: RunningGateway) -> Any:
    schema = schemathesis.openapi.from_url(fuzzed_gateway.base_url + "/openapi.json")
    schema.config.update(base_url=fuzzed_gateway.base_url)
    return schema


def test_schema_describes_every_endpoint(gateway_schema: Any, fuzzed_gateway: RunningGateway) -> None:
    described = {(op.ok().method.upper(), op.ok().path) for op in gateway_schema.get_all_operations()}
    assert described == set(OPERATIONS)
    document = httpx.get(fuzzed_gateway.base_url + "/openapi.json").json()
    chat = document["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert chat["model"]["maxLength"] == chat["user"]["maxLength"] == 256  # the config's limits
    assert "cost_optimized" in chat["model"]["description"]


# Negative requests exist only where the document constrains an input: the two completion endpoints.
CASES = [(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS] + [
    ("POST", path, GenerationMode.NEGATIVE) for path in ("/v1/chat/completions", "/v1/completions")]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=lambda v: str(getattr(v, "value", v)))
def test_generated_requests_get_no_5xx_and_openai_shaped_errors(gateway_schema: Any, method: str, path: str,
                                                                  mode: GenerationMode) -> None:
    operation = gateway_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call(timeout=30)
        assert response.status_code < 500, response.text[:500]
        if response.status_code >= 400:
            assert response.headers["content-type"][0].startswith("application/json"), response.text[:500]
            error = response.json()["error"]
            assert set(error) == ERROR_FIELDS and isinstance(error["message"], str), response.text[:500]
        case.validate_response(response, checks=CHECKS)

    run()
