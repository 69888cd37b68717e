"""Route from Python, without the gateway, to the emulators `llmroute try` started (examples/emulated.yaml)."""

import asyncio

from llmroute import LLMRouter, RoutingStrategy


async def main() -> None:
    async with LLMRouter(strategy=RoutingStrategy.BALANCED, config="examples/emulated.yaml") as router:
        result = await router.generate("Qualify this lead: TechCorp, 500 employees, SaaS industry", max_tokens=100)
        print(result.text)
        print(result.provider, result.cost_usd, result.latency_ms, result.fallback)


asyncio.run(main())
