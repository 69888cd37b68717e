"""HTTP adapters for providers. Every provider llmroute supports speaks the OpenAI wire format."""

from .events import Deliver
from .openai_compat import OpenAICompatProvider, ProviderResponse

__all__ = ["Deliver", "OpenAICompatProvider", "ProviderResponse"]
