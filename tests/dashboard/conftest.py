from ..gateway.conftest import gateway_factory  # noqa: F401  (a real ``llmroute serve`` process)
