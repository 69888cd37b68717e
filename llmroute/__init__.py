"""llmroute: route LLM requests to the cheapest provider that can answer, and prove the savings.

    router = LLMRouter(strategy=RoutingStrategy.BALANCED, config="llmroute.yaml")
    result = await router.generate("Qualify this lead: ...", max_tokens=500)
    result.provider, result.cost_usd, result.latency_ms, result.fallback
"""

from .config import ProviderConfig, RouterConfig, load_config
from .errors import (
    AllProvidersFailed,
    ClientRequestError,
    ConfigError,
    ContextLengthExceeded,
    LLMRouteError,
    ProviderError,
    ProviderMisconfigured,
    StreamInterrupted,
)
from .result import Attempt, RouteResult
from .router import LLMRouter
from .stream import RouteStream
from .state import InMemoryState, RouterState
from .strategies import RoutingStrategy
from .sync import SyncRouter

__version__ = "0.1.0"

__all__ = [
    "AllProvidersFailed",
    "Attempt",
    "ClientRequestError",
    "ConfigError",
    "ContextLengthExceeded",
    "InMemoryState",
    "LLMRouteError",
    "LLMRouter",
    "ProviderConfig",
    "ProviderError",
    "ProviderMisconfigured",
    "RouteResult",
    "RouteStream",
    "RouterConfig",
    "RouterState",
    "RoutingStrategy",
    "StreamInterrupted",
    "SyncRouter",
    "load_config",
]
