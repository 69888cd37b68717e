"""In one process, answered requests' counters reach prometheus when scraped, exactly; with several workers
(a shared collecting registry) each increment goes out at once, so any worker's scrape counts every request."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from llmroute.gateway.metrics import Metrics
from llmroute.result import Attempt, RouteResult


def answered(provider: str = "p", cost_usd: float = 0.25) -> RouteResult:
    return RouteResult(text="ok", provider=provider, model="m", strategy="cost_optimized", prompt_tokens=24,
                       completion_tokens=21, cost_usd=cost_usd, latency_ms=3.0, cost_per_m=0.02,
                       attempts=[Attempt(provider, "m", True, 2.0, cost_usd=cost_usd)])


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"strategy": "cost_optimized", "provider": "p", **labels})


def test_counters_wait_for_the_scrape_and_then_add_up_exactly() -> None:
    metrics = Metrics()
    for _ in range(3):
        metrics.observe(answered(), "chat")
    assert sample(metrics, "llmroute_requests_total", endpoint="chat") == 0  # not one inc per request
    assert sample(metrics, "llmroute_request_latency_seconds_count") == 3  # the histogram is observed at once
    text = metrics.render().decode()
    assert 'llmroute_requests_total{endpoint="chat",provider="p",strategy="cost_optimized"} 3.0' in text
    assert sample(metrics, "llmroute_tokens_total", type="prompt") == 72
    assert sample(metrics, "llmroute_tokens_total", type="completion") == 63
    assert sample(metrics, "llmroute_cost_usd_total") == pytest.approx(0.75)
    metrics.observe(answered(), "chat")
    metrics.render()
    metrics.render()  # a second scrape adds nothing twice
    assert sample(metrics, "llmroute_requests_total", endpoint="chat") == 4
    assert sample(metrics, "llmroute_cost_usd_total") == pytest.approx(1.0)


def test_with_a_shared_collecting_registry_each_request_counts_at_once() -> None:
    metrics = Metrics(CollectorRegistry(), collect_registry=CollectorRegistry())
    metrics.observe(answered(), "chat")
    assert sample(metrics, "llmroute_requests_total", endpoint="chat") == 1
    assert sample(metrics, "llmroute_tokens_total", type="prompt") == 24
    assert sample(metrics, "llmroute_cost_usd_total") == pytest.approx(0.25)
