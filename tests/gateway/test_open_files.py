"""The open-file limit at start-up: raised to the hard limit, a warning when still short; and running out of
descriptors is llmroute's own limit (``pool_exhausted``), never the provider's failure. Each case runs in a
process of its own, whose limits it may lower."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

resource = pytest.importorskip("resource")


def run(*parts: str) -> dict[str, Any]:
    script = "\n".join(textwrap.dedent(part) for part in parts)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


CONFIG = """
    from llmroute.config import RouterConfig
    config = RouterConfig.model_validate({"providers": {
        "a": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "price_per_m": {"input": 1, "output": 1}},
        "b": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "price_per_m": {"input": 1, "output": 1},
              "max_connections": 100}}})
"""


def test_the_soft_limit_is_raised_to_the_hard_one_at_start() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 512:
        pytest.skip("needs a finite hard open-file limit of at least 512")
    result = run(f"""
        import json, resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, {hard}))
    """, CONFIG, """
        from llmroute.gateway.openfiles import prepare_open_files
        warning = prepare_open_files(config)
        print(json.dumps({"limits": resource.getrlimit(resource.RLIMIT_NOFILE), "warning": warning}))
    """)
    assert result["limits"] == [hard, hard]
    needed = min(hard // 2, 10_000)  # the gateway's own default cap, from the raised limit
    if needed + 4096 + 100 + 64 <= hard:
        assert result["warning"] is None


def test_a_limit_still_short_is_a_warning_that_says_what_to_raise() -> None:
    result = run("""
        import json, resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (512, 512))
    """, CONFIG, """
        from llmroute.gateway.openfiles import prepare_open_files
        print(json.dumps({"warning": prepare_open_files(config)}))
    """)
    warning = result["warning"]
    # 256 clients (half the limit), 4,096 (a's default) + 100 (b's) to providers, 64 other.
    assert warning.startswith("open-file limit 512 is below the 4516 this gateway may open per worker")
    assert "a 4096, b 100" in warning and "providers.<name>.max_connections" in warning and "ulimit -n" in warning


def test_out_of_descriptors_is_pool_exhausted_not_a_provider_failure() -> None:
    result = run("""
        import asyncio, json, os, resource
        import urllib.request  # loaded already in a gateway that has served: this test opens no file but sockets
        from llmroute.config import ProviderConfig
        from llmroute.providers import OpenAICompatProvider
        from llmroute.errors import PoolExhausted

        async def main():
            server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            provider = OpenAICompatProvider(ProviderConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m",
                                                          price_per_m={"input": 1, "output": 1}))
            resource.setrlimit(resource.RLIMIT_NOFILE, (128, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            held = []
            try:
                while True:
                    held.append(os.open(os.devnull, os.O_RDONLY))
            except OSError:
                pass
            try:
                await provider.request("/chat/completions", {"messages": []}, timeout_s=5)
            except PoolExhausted as exc:
                outcome = {"kind": exc.kind, "retryable": exc.retryable, "message": exc.message,
                           "in_use": provider.pool_stats.in_use}
            for fd in held:
                os.close(fd)
            await provider.aclose()
            server.close()
            return outcome

        print(json.dumps(asyncio.run(main())))
    """)
    assert result["kind"] == "pool_exhausted" and result["retryable"]
    assert "open-file limit" in result["message"] and result["in_use"] == 0
