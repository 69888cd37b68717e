from __future__ import annotations

import logging
from pathlib import Path

import pytest

from llmroute import ConfigError, LLMRouter, RoutingStrategy, load_config

REPO = Path(__file__).resolve().parent.parent
SECRET = "sk-live-Zq8ThisMustNeverShow"
SEED_ENV = {"CEREBRAS_API_KEY": SECRET, "RUNPOD_API_KEY": "rp-" + SECRET, "RUNPOD_ENDPOINT_ID": "abc123"}

SEED_YAML = """\
providers:
  cerebras:
    base_url: https://api.cerebras.ai/v1
    api_key: ${CEREBRAS_API_KEY}
    model: llama3.1-8b
    price_per_m: {input: 0.10, output: 0.10}
    latency_ms: 945
    quality: 2
    timeout_s: 30
  runpod:
    base_url: https://api.runpod.ai/v2/${RUNPOD_ENDPOINT_ID}/openai/v1
    api_key: ${RUNPOD_API_KEY}
    model: meta-llama/Meta-Llama-3.1-8B-Instruct
    price_per_m: {input: 0.02, output: 0.02}
    latency_ms: 1200
    quality: 1
strategy: balanced
balanced_weights: {runpod: 80, cerebras: 20}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llmroute.yaml"
    path.write_text(text)
    return path


def test_seed_config_loads_with_env(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SEED_YAML), env=SEED_ENV)
    assert config.providers["runpod"].base_url == "https://api.runpod.ai/v2/abc123/openai/v1"
    assert config.providers["cerebras"].api_key.get_secret_value() == SECRET
    assert config.providers["cerebras"].api_key_env == "CEREBRAS_API_KEY"
    assert config.providers["cerebras"].timeout_s == 30
    assert config.providers["runpod"].timeout_s == 30  # the default
    assert config.providers["runpod"].connect_timeout_s < config.providers["runpod"].timeout_s
    assert config.strategy is RoutingStrategy.BALANCED
    assert config.weights() == {"cerebras": 20.0, "runpod": 80.0}
    assert config.baseline() == "cerebras"


def test_shipped_examples_are_valid(tmp_path: Path) -> None:
    examples = sorted((REPO / "examples").glob("*.yaml"))
    assert len(examples) >= 3
    env = {**SEED_ENV, "VLLM_API_KEY": "x", "VLLM_BASE_URL": "http://10.0.0.5:8000/v1"}
    for path in examples:
        load_config(path, env=env)
    seed = load_config(REPO / "examples" / "llmroute.yaml", env=env)
    assert seed.providers["cerebras"].price_per_m.input == 0.10
    assert seed.providers["runpod"].price_per_m.output == 0.02


def test_default_weights_give_cheapest_80(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SEED_YAML.replace("balanced_weights: {runpod: 80, cerebras: 20}\n", "")), env=SEED_ENV)
    assert config.weights() == {"cerebras": 20.0, "runpod": 80.0}


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        ("    quality: 2\n", "    quality: 2\n    timeout: 5\n", "providers.cerebras.timeout", "unknown key; did you mean 'timeout_s'?"),
        ("strategy: balanced", "strategy: balanced\nstratgy: cost", "stratgy", "did you mean 'strategy'?"),
        ("    latency_ms: 1200", "    latency_ms: fast", "providers.runpod.latency_ms", "valid number"),
        ("{input: 0.02, output: 0.02}", "{input: -0.02, output: 0.02}", "providers.runpod.price_per_m.input", "greater than or equal to 0"),
        ("{runpod: 80, cerebras: 20}", "{runpod: 80, groq: 20}", "balanced_weights.groq", "unknown provider 'groq'"),
        ("strategy: balanced", "strategy: cheapest", "strategy", "'cost_optimized'"),
        ("    model: llama3.1-8b\n", "", "providers.cerebras.model", "required key is missing"),
        ("https://api.cerebras.ai/v1", "api.cerebras.ai/v1", "providers.cerebras.base_url", "http:// or https://"),
        ("strategy: balanced", "strategy: quality_aware\nquality_aware: {strong: groq}", "quality_aware.strong",
         "unknown provider 'groq'"),
        ("strategy: balanced", "quality_aware: {target: {strong_share: 0.2, min_quality: 0.95}}", "quality_aware.target",
         "set exactly one of strong_share, max_price_per_m, min_quality"),
        ("strategy: balanced", "quality_aware: {target: {strong_share: 1.5}}", "quality_aware.target.strong_share",
         "less than or equal to 1"),
        ("strategy: balanced", "quality_aware: {strong: runpod, weak: runpod}", "quality_aware",
         "strong and weak must be different providers"),
    ],
)
def test_errors_name_file_key_and_problem(tmp_path: Path, old: str, new: str, key: str, problem: str) -> None:
    assert old in SEED_YAML
    path = write(tmp_path, SEED_YAML.replace(old, new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, env=SEED_ENV)
    message = str(info.value)
    assert str(path) in message
    assert f"'{key}'" in message
    assert problem in message
    assert SECRET not in message


def test_missing_env_var_names_variable_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_YAML)
    env = {k: v for k, v in SEED_ENV.items() if k != "RUNPOD_API_KEY"}
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    assert info.value.key == "providers.runpod.api_key"
    assert info.value.file == str(path)
    assert "RUNPOD_API_KEY is not set" in str(info.value)


def test_lenient_env_keeps_placeholder(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, SEED_YAML), env={}, strict_env=False)
    assert "${RUNPOD_ENDPOINT_ID}" in config.providers["runpod"].base_url
    assert config.providers["runpod"].price_per_m.input == 0.02


def test_env_default_syntax(tmp_path: Path) -> None:
    text = SEED_YAML.replace("${RUNPOD_ENDPOINT_ID}", "${RUNPOD_ENDPOINT_ID:-fallback-id}")
    config = load_config(write(tmp_path, text), env={"CEREBRAS_API_KEY": "a", "RUNPOD_API_KEY": "b"})
    assert "/v2/fallback-id/" in config.providers["runpod"].base_url


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "providers:\n  a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"invalid YAML at line \d+"):
        load_config(path)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="empty"):
        load_config(write(tmp_path, ""))
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_several_problems_reported_together(tmp_path: Path) -> None:
    text = SEED_YAML.replace("latency_ms: 945", "latency_ms: -1").replace("quality: 1", "quality: high")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=SEED_ENV)
    assert "2 problems" in str(info.value)
    assert "providers.cerebras.latency_ms" in str(info.value)
    assert "providers.runpod.quality" in str(info.value)


def test_secrets_never_in_repr_errors_or_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = load_config(write(tmp_path, SEED_YAML), env=SEED_ENV)
    assert SECRET not in repr(config)
    assert SECRET not in str(config.model_dump())
    router = LLMRouter(config=config)
    assert SECRET not in repr(router.providers)
    # A secret in the wrong place (a non-string type error) must not be echoed back.
    text = SEED_YAML.replace("quality: 2", "quality: ${CEREBRAS_API_KEY}")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env=SEED_ENV)
    assert SECRET not in str(info.value)
    assert SECRET not in caplog.text


def test_gpu_second_pricing_and_ledger_keys(tmp_path: Path) -> None:
    text = SEED_YAML.replace(
        "    price_per_m: {input: 0.02, output: 0.02}\n",
        "    price_per_gpu_second: 0.00076\n    idle_share: 0.2\n",
    ) + "ledger:\n  path: /tmp/x.sqlite3\n  flush_interval_s: 0.5\n"
    config = load_config(write(tmp_path, text), env=SEED_ENV)
    runpod = config.providers["runpod"]
    assert runpod.gpu_priced and runpod.price_per_m is None
    # Routing estimate before any measurement: 1,000 tokens in the latency prior, idle share included.
    assert runpod.routing_price.input == pytest.approx(0.00076 / 0.8 * 1.2 * 1000)
    assert config.ledger.path == "/tmp/x.sqlite3" and config.ledger.flush_interval_s == 0.5


@pytest.mark.parametrize(("replace", "key", "problem"), [
    ("    price_per_m: {input: 0.02, output: 0.02}\n", "providers.runpod",
     "needs price_per_m, or price_per_gpu_second"),
    ("    price_per_m: {input: 0.02, output: 0.02}\n", "providers.runpod.idle_share",
     "less than 1"),
    ("strategy: balanced\n", "ledger.dsn", "must start with postgresql://"),
    ("strategy: balanced\n", "ledger.queue_size", "greater than 0"),
])
def test_pricing_and_ledger_errors_name_the_key(tmp_path: Path, replace: str, key: str, problem: str) -> None:
    extra = {"providers.runpod": "", "providers.runpod.idle_share": "    price_per_gpu_second: 0.001\n    idle_share: 1.5\n",
             "ledger.dsn": "strategy: balanced\nledger: {dsn: 'mysql://x'}\n",
             "ledger.queue_size": "strategy: balanced\nledger: {queue_size: 0}\n"}[key]
    path = write(tmp_path, SEED_YAML.replace(replace, extra))
    with pytest.raises(ConfigError) as info:
        load_config(path, env=SEED_ENV)
    message = str(info.value)
    assert str(path) in message and f"key '{key}'" in message and problem in message
    assert "mysql://x" not in message or key != "ledger.dsn"


@pytest.mark.parametrize(("new", "key", "problem"), [
    ("{input: .inf, output: 0.02}", "providers.runpod.price_per_m.input", "finite number"),
    ("{input: 0.02, output: .nan}", "providers.runpod.price_per_m.output", "finite number"),
    ("{input: 0.02, output: 0.02, cached_input: -.inf}", "providers.runpod.price_per_m.cached_input", "finite number"),
    ("{input: 1e308, output: 0.02}", "providers.runpod.price_per_m.input", "less than or equal to 1000000"),
    ("{input: 0.02, output: 0.02}\n    price_per_gpu_second: .inf", "providers.runpod.price_per_gpu_second",
     "finite number"),
    ("{input: 0.02, output: 0.02}\n    price_per_gpu_second: 5000", "providers.runpod.price_per_gpu_second",
     "less than or equal to 1000"),
    ("{input: 0.02, output: 0.02}\n    timeout_s: .inf", "providers.runpod.timeout_s", "finite number"),
])
def test_prices_and_numbers_must_be_finite_and_sane(tmp_path: Path, new: str, key: str, problem: str) -> None:
    """An infinite or absurd price would make every cost, metric and report inf or nan."""
    path = write(tmp_path, SEED_YAML.replace("{input: 0.02, output: 0.02}", new, 1))
    with pytest.raises(ConfigError) as info:
        load_config(path, env=SEED_ENV)
    message = str(info.value)
    assert str(path) in message and f"'{key}'" in message and problem in message


def test_top_level_numbers_must_be_finite(tmp_path: Path) -> None:
    path = write(tmp_path, SEED_YAML + "deadline_s: .inf\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env=SEED_ENV)
    assert "'deadline_s'" in str(info.value) and "finite number" in str(info.value)


@pytest.mark.parametrize(("content", "problem"), [
    ("garbage\n", "is not a PEM bundle of CA certificates: no PEM certificate found"),
    ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "is not a PEM bundle"),
    ("", "is not a PEM bundle"),
])
def test_ca_bundle_must_hold_certificates(tmp_path: Path, content: str, problem: str) -> None:
    """Refused at load, not later as a ``tls`` failure on every request."""
    bundle = tmp_path / "ca.pem"
    bundle.write_text(content)
    path = write(tmp_path, SEED_YAML.replace("    quality: 1\n", f"    quality: 1\n    ca_bundle: {bundle}\n"))
    with pytest.raises(ConfigError) as info:
        load_config(path, env=SEED_ENV)
    message = str(info.value)
    assert str(path) in message and "'providers.runpod.ca_bundle'" in message and problem in message


def test_ca_bundle_with_a_certificate_loads(tmp_path: Path) -> None:
    import ssl

    bundle = ssl.get_default_verify_paths().cafile
    if bundle is None or not Path(bundle).is_file():
        pytest.skip("no system CA file to use as a valid bundle")
    path = write(tmp_path, SEED_YAML.replace("    quality: 1\n", f"    quality: 1\n    ca_bundle: {bundle}\n"))
    assert load_config(path, env=SEED_ENV).providers["runpod"].ca_bundle == bundle
