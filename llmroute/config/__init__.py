"""Config: the schema (``schema.py``, one provider's section in ``providers.py``) and reading it from YAML with
clear errors (``loading.py``).

The lowest layer: it imports nothing of llmroute above it, only leaves (``budget_period``, ``errors``/``result``,
``graders``), so every other layer may import it.
"""

from .enums import RoutingStrategy
from .evaluation import GRADER_NAMES, GraderRule, JudgeConfig, ShadowConfig, grader_for
from .loading import CONFIG_ENV_VAR, DEFAULT_CONFIG_NAME, default_config_path, load_config, parse_config
from .providers import BreakerConfig, ColdStartConfig, HealthCheckConfig, Price, ProviderConfig
from .schema import (
    GatewayConfig,
    GatewayKey,
    HedgeConfig,
    LedgerConfig,
    QualityAwareConfig,
    QualityTarget,
    RouterConfig,
)

__all__ = [
    "GRADER_NAMES",
    "GraderRule",
    "JudgeConfig",
    "ShadowConfig",
    "grader_for",
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG_NAME",
    "BreakerConfig",
    "ColdStartConfig",
    "GatewayConfig",
    "GatewayKey",
    "HealthCheckConfig",
    "HedgeConfig",
    "LedgerConfig",
    "Price",
    "ProviderConfig",
    "QualityAwareConfig",
    "QualityTarget",
    "RouterConfig",
    "RoutingStrategy",
    "default_config_path",
    "load_config",
    "parse_config",
]
