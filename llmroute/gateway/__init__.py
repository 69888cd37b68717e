"""``llmroute serve``: an OpenAI-compatible HTTP gateway in front of ``LLMRouter``."""

from .app import Gateway
from .auth import KeyStore, is_loopback
from .metrics import Metrics
from .server import run_gateway, serve

__all__ = ["Gateway", "KeyStore", "Metrics", "is_loopback", "run_gateway", "serve"]
