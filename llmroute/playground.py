"""``llmroute try``: the seed's two providers, emulated, behind the gateway, in one process and without keys.

The emulators listen on fixed ports (8001 and 8002 by default, as in ``examples/emulated.yaml``), so the
README's examples run as written while this runs; SIGINT or SIGTERM stops the gateway, then the emulators.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass

from .config import RouterConfig
from .errors import LLMRouteError

PROVIDERS = ("cerebras", "runpod")
"""The emulated pair, in port order: cerebras on the first port, runpod on the next."""
EMULATOR_PORT = 8001


def cannot_listen_message(host: str, port: int, exc: OSError) -> str:
    """One line naming the address and the reason (``address already in use``), for every command that listens."""
    reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return f"cannot listen on {host}:{port}: {reason}"


@dataclass(frozen=True)
class Playground:
    """Where everything listens once started."""

    base_url: str
    providers: dict[str, str]

    def instructions(self) -> str:
        """What to paste: the gateway's address, a curl line and the openai client's two lines."""
        providers = "\n".join(f"  {name:<9} {url}" for name, url in self.providers.items())
        return (
            f"llmroute gateway at {self.base_url} with two emulated providers (no keys needed):\n{providers}\n\n"
            "Try it:\n"
            f"  curl -s {self.base_url}/chat/completions -H 'content-type: application/json' \\\n"
            "    -d '{\"model\": \"balanced\", \"messages\": [{\"role\": \"user\", \"content\": \"Qualify this lead: TechCorp\"}]}'\n\n"
            "  from openai import OpenAI\n"
            f"  client = OpenAI(base_url=\"{self.base_url}\", api_key=\"not-needed-locally\")\n"
            "  client.chat.completions.create(model=\"balanced\", messages=[{\"role\": \"user\", \"content\": \"hi\"}])\n\n"
            "Models: balanced, cost_optimized, latency_optimized, quality_optimized, quality_aware. "
            "Ctrl-C stops everything."
        )


def playground_config(base_urls: dict[str, str], speed: float = 1.0, ledger: str | None = None) -> RouterConfig:
    """The seed's pair at ``base_urls``; traffic is recorded only in ``ledger`` if given, never in the user's ledger."""
    from .demo import emulated_config

    return emulated_config(base_urls, speed, ledger={"path": ledger} if ledger else {"enabled": False})


def emulator_ports(first: int) -> dict[str, int]:
    """cerebras on ``first``, runpod on the next port; 0 lets the system pick both."""
    return {name: first + i if first else 0 for i, name in enumerate(PROVIDERS)}


async def run(host: str, port: int, first_emulator_port: int = EMULATOR_PORT, *, speed: float = 1.0,
              ledger: str | None = None, ready: Callable[[Playground], None] | None = None) -> None:
    """Start both emulators, then the gateway; return after SIGINT/SIGTERM once all of them have stopped."""
    from .emulator import EmulatorSettings, RunningEmulator, get_profile, start
    from .gateway.server import run_gateway

    emulators: list[RunningEmulator] = []
    try:
        for seed, (name, emulator_port) in enumerate(emulator_ports(first_emulator_port).items()):
            try:
                emulators.append(await start(EmulatorSettings(get_profile(name), speed=speed, seed=seed), host,
                                             emulator_port))
            except OSError as exc:
                raise LLMRouteError(cannot_listen_message(host, emulator_port, exc)) from None
        urls = {e.emulator.profile.name: e.base_url for e in emulators}
        config = playground_config(urls, speed, ledger)
        shown = f"[{host}]" if ":" in host else host

        def announce(bound: int) -> None:
            if ready is not None:
                ready(Playground(f"http://{shown}:{bound}/v1", urls))

        try:
            await run_gateway(config, host, port, ready=announce)
        except OSError as exc:
            raise LLMRouteError(cannot_listen_message(host, port, exc)) from None
    finally:
        await asyncio.gather(*(e.stop() for e in emulators))
