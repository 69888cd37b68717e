"""Config: the schema (``schema.py``) and reading it from YAML with clear errors (``loading.py``)."""

from .enums import RoutingStrategy
from .evaluation import GRADER_NAMES, GraderRule, JudgeConfig, ShadowConfig, grader_for
from .loading import CONFIG_ENV_VAR, DEFAULT_CONFIG_NAME, default_config_path, load_config, parse_config
from .schema import (
    BreakerConfig,
    ColdStartConfig,
    GatewayConfig,
    GatewayKey,
    HealthCheckConfig,
    HedgeConfig,
    LedgerConfig,
    Price,
    ProviderConfig,
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
