"""What a new user meets in the first hour, run as they run it: the ``llmroute`` command in a subprocess."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from llmroute import RoutingStrategy
from llmroute.config import load_config
from llmroute.config.loading import redact_url, shown_url

from .test_cli import REPO, llmroute

BARE_ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS",)}
KEY = "AIzaSyThisKeyMustNotBePrinted-42"
PASSWORD = "hunter2-must-not-show"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


PROVIDER = """
    model: m
    price_per_m: {input: 0.1, output: 0.1}
"""


# -- secrets in URLs (E20) ----------------------------------------------------------------------------------

def test_check_config_redacts_a_key_in_the_url_query_and_userinfo(tmp_path: Path) -> None:
    config = write(tmp_path / "gemini.yaml", f"""
providers:
  gemini:
    base_url: https://proxy:${{PROXY_PASSWORD}}@generativelanguage.example.com/v1beta/${{PROJECT}}?key=${{GEMINI_KEY}}&api-version=2024-02-01
{PROVIDER}
""")
    env = {**BARE_ENV, "GEMINI_KEY": KEY, "PROXY_PASSWORD": PASSWORD, "PROJECT": "proj-7"}
    proc = llmroute("check-config", str(config), env=env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert KEY not in out and PASSWORD not in out
    # Still readable: the host, the path (an id, not a credential) and a plain query value.
    assert "https://***@generativelanguage.example.com/v1beta/proj-7?key=***&api-version=2024-02-01" in out
    for fmt in ("json", "csv"):
        proc = llmroute("check-config", str(config), "--format", fmt, env=env)
        assert proc.returncode == 0 and KEY not in proc.stdout and PASSWORD not in proc.stdout
        assert "?key=***&api-version=2024-02-01" in proc.stdout


def test_url_redaction_covers_literal_keys_and_values_read_from_the_environment() -> None:
    config = load_config({"providers": {"p": {
        "base_url": "https://h.example/v1?sig=literal-signature&tenant=${TENANT}&x=${TOKEN_VALUE}",
        "model": "m", "price_per_m": {"input": 1, "output": 1}}}},
        env={"TENANT": "acme", "TOKEN_VALUE": "tok-123456"})
    shown = shown_url(config.providers["p"])
    assert "literal-signature" not in shown and "tok-123456" not in shown
    assert "tenant=***" in shown  # read from ${VAR}: may be a secret whatever its name
    assert redact_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"


def test_status_never_prints_a_key_in_its_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    proc = llmroute("status", "--url", f"http://admin:{PASSWORD}@127.0.0.1:{port}/?token={KEY}", env=BARE_ENV)
    assert proc.returncode == 1
    assert "cannot reach the gateway" in proc.stderr
    assert KEY not in proc.stderr and PASSWORD not in proc.stderr


# -- every missing variable at once (F31) -------------------------------------------------------------------

def test_every_missing_environment_variable_is_named_in_one_run() -> None:
    env = {k: v for k, v in BARE_ENV.items() if k not in ("CEREBRAS_API_KEY", "RUNPOD_API_KEY", "RUNPOD_ENDPOINT_ID")}
    proc = llmroute("check-config", "examples/llmroute.yaml", env=env)
    assert proc.returncode == 2
    for key, var in (("providers.cerebras.api_key", "CEREBRAS_API_KEY"), ("providers.runpod.base_url", "RUNPOD_ENDPOINT_ID"),
                     ("providers.runpod.api_key", "RUNPOD_API_KEY")):
        assert f"key '{key}': {var}" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- Rich must not eat text (G28) ---------------------------------------------------------------------------

@pytest.fixture
def without_plot_and_train_extras(tmp_path: Path) -> dict[str, str]:
    """An environment where matplotlib and scikit-learn cannot be imported, as after a plain ``pip install llmroute``."""
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    for name in ("matplotlib", "sklearn"):
        write(blocked / f"{name}.py", f"raise ImportError({'No module named ' + name!r})\n")
    return {**BARE_ENV, "PYTHONPATH": os.pathsep.join(p for p in (str(blocked), str(REPO), os.environ.get("PYTHONPATH"))
                                                       if p)}


def labelled(tmp_path: Path, n: int = 60) -> Path:
    rows = [{"prompt": f"{'Integrate x^' + str(i) if i % 3 == 0 else 'Name a city'} number {i}",
             "benchmark": "b", "scores": {"weak": 0.0 if i % 3 == 0 else 1.0, "strong": 1.0}} for i in range(n)]
    return write(tmp_path / "data.jsonl", "".join(json.dumps(r) + "\n" for r in rows))


def test_install_hints_print_with_their_brackets(tmp_path: Path, without_plot_and_train_extras: dict[str, str]) -> None:
    data = labelled(tmp_path)
    proc = llmroute("router", "eval", "--data", str(data), "--plot", str(tmp_path / "curve.png"),
                    env=without_plot_and_train_extras)
    assert proc.returncode == 2
    assert "pip install 'llmroute[plot]'" in proc.stderr
    proc = llmroute("router", "train", "--data", str(data), "--out", str(tmp_path / "m.json.gz"),
                    env=without_plot_and_train_extras)
    assert proc.returncode == 2
    assert "pip install 'llmroute[train]'" in proc.stderr


def test_user_input_in_messages_prints_as_typed(tmp_path: Path) -> None:
    missing = tmp_path / "conf[prod][bold].yaml"
    proc = llmroute("check-config", str(missing), env=BARE_ENV)
    assert proc.returncode == 2 and f"{missing}: file not found" in proc.stderr
    config = write(tmp_path / "weights.yaml", "providers:\n  a[x]:\n    base_url: http://127.0.0.1:1/v1\n" + PROVIDER
                   + "  b:\n    base_url: http://127.0.0.1:2/v1\n" + PROVIDER)
    proc = llmroute("check-config", str(config), env=BARE_ENV)
    assert proc.returncode == 0, proc.stderr
    assert "a[x]" in proc.stdout


# -- a busy port (G29) --------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["emulate", "serve"])
def test_a_busy_port_is_one_line_and_exit_2(command: str, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("providers:\n  a:\n    base_url: http://127.0.0.1:1/v1\n" + PROVIDER + "ledger: {enabled: false}\n")
    args = ["--config", str(config)] if command == "serve" else []
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = llmroute(command, "--port", str(port), *args, env=BARE_ENV, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: cannot listen on 127.0.0.1:{port}: address already in use"]


# -- strategy names (F30) -----------------------------------------------------------------------------------

def test_an_unknown_strategy_lists_the_valid_names() -> None:
    with pytest.raises(ValueError) as caught:
        RoutingStrategy("cheapest")
    for name in RoutingStrategy:
        assert name.value in str(caught.value)
    with pytest.raises(ValueError, match="did you mean 'cost_optimized'"):
        RoutingStrategy("cost_optimised")
    assert RoutingStrategy("balanced") is RoutingStrategy.BALANCED


def test_the_cli_says_the_same_for_an_unknown_strategy() -> None:
    proc = llmroute("replay", "--strategy", "cheapest", "--ledger", "unused.sqlite3", env=BARE_ENV)
    assert proc.returncode == 2
    assert "--strategy: unknown strategy 'cheapest' (valid: cost_optimized, latency_optimized, quality_optimized, " \
           "balanced, quality_aware)" in proc.stderr


# -- flags every command shares (F31) -----------------------------------------------------------------------

def test_version_flag_and_command() -> None:
    from llmroute import __version__

    assert llmroute("--version", env=BARE_ENV).stdout.strip() == __version__
    assert llmroute("version", env=BARE_ENV).stdout.strip() == __version__


def test_shell_completion_script_and_completions() -> None:
    # Name the shell rather than let typer detect it from the parent processes: under a runner started in the
    # background no parent is a shell, and detection then fails whatever llmroute does.
    proc = llmroute("--show-completion", "bash", env={**BARE_ENV, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert proc.returncode == 0 and "_LLMROUTE_COMPLETE=complete_bash" in proc.stdout
    completing = {**BARE_ENV, "_LLMROUTE_COMPLETE": "complete_bash", "COMP_WORDS": "llmroute rep", "COMP_CWORD": "1"}
    assert set(llmroute(env=completing).stdout.split()) == {"report", "replay"}
    completing.update(COMP_WORDS="llmroute plan --format ", COMP_CWORD="3")
    assert set(llmroute(env=completing).stdout.split()) == {"table", "json", "csv"}


def test_plan_speaks_table_json_and_csv_and_keeps_json() -> None:
    args = ("plan", "--monthly-tokens", "10M")
    as_json = json.loads(llmroute(*args, "--format", "json", env=BARE_ENV).stdout)
    assert json.loads(llmroute(*args, "--json", env=BARE_ENV).stdout) == as_json
    rows = list(csv.DictReader(io.StringIO(llmroute(*args, "--format", "csv", env=BARE_ENV).stdout)))
    assert [r["strategy"] for r in rows] == [s["strategy"] for s in as_json["strategies"]]
    assert float(rows[3]["total_usd"]) == pytest.approx(as_json["strategies"][3]["total_usd"])
    assert "Traffic Distribution Analysis" in llmroute(*args, env=BARE_ENV).stdout


@pytest.mark.parametrize("command", [("check-config", "examples/emulated.yaml"), ("plan", "--monthly-tokens", "10M"), ("status",), ("report",),
                                     ("replay", "--strategy", "balanced"), ("demo",), ("router", "eval", "--data", "x")])
def test_every_data_command_takes_the_same_format_choices(command: tuple[str, ...]) -> None:
    proc = llmroute(*command, "--format", "xml", env=BARE_ENV)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --format must be table, json or csv, not 'xml'"]
    assert "--format" in llmroute(*command[:2 if command[0] == "router" else 1], "--help", env=BARE_ENV).stdout


# -- router eval (F32) --------------------------------------------------------------------------------------

def test_eval_names_the_shipped_model_and_flags_in_sample_data(tmp_path: Path) -> None:
    data = labelled(tmp_path, 120)
    model = tmp_path / "model.json.gz"
    assert llmroute("router", "train", "--data", str(data), "--out", str(model), env=BARE_ENV).returncode == 0
    proc = llmroute("router", "eval", "--data", str(data), "--model", str(model), "--format", "json", env=BARE_ENV)
    assert proc.returncode == 0, proc.stderr
    assert any("trained on exactly this data" in w and "in-sample" in w for w in json.loads(proc.stdout)["warnings"])
    assert "warning:" in proc.stderr and "in-sample" in proc.stderr

    part = write(tmp_path / "part.jsonl", "".join(data.read_text().splitlines(keepends=True)[:30])
                 + json.dumps({"prompt": "a prompt it never saw", "scores": {"weak": 1, "strong": 1}}) + "\n")
    warnings = json.loads(llmroute("router", "eval", "--data", str(part), "--model", str(model), "--format", "json",
                                   env=BARE_ENV).stdout)["warnings"]
    assert any(w.startswith("30 of these 31 prompts were in") for w in warnings)

    fresh = json.loads(llmroute("router", "eval", "--data", str(part), "--format", "json", env=BARE_ENV).stdout)
    assert fresh["model"].endswith("default_model.json.gz")
    assert any(w.startswith("no --model given: this is the model shipped with llmroute") for w in fresh["warnings"])


def test_a_model_without_fingerprints_is_still_caught_on_its_exact_data(tmp_path: Path) -> None:
    """Models trained before fingerprints were stored still carry ``data_sha256``: the exact file is recognised."""
    data = labelled(tmp_path, 120)
    model = tmp_path / "model.json.gz"
    assert llmroute("router", "train", "--data", str(data), "--out", str(model), env=BARE_ENV).returncode == 0
    older = json.loads(gzip.decompress(model.read_bytes()))
    del older["meta"]["prompt_fingerprints"]
    old_model = write(tmp_path / "old-model.json", json.dumps(older))
    warnings = json.loads(llmroute("router", "eval", "--data", str(data), "--model", str(old_model), "--format", "json",
                                   env=BARE_ENV).stdout)["warnings"]
    assert any("trained on exactly this data" in w for w in warnings)


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "train.jsonl"


@pytest.mark.skipif(not SHARED.exists(), reason="the shared routing data is not beside this checkout")
def test_a_split_of_the_shipped_models_own_data_is_reported_in_sample(tmp_path: Path) -> None:
    """The reported case: `router split` of the shipped data, then `router eval` of the held-out part without --model."""
    lines = SHARED.read_text().splitlines(keepends=True)
    held = write(tmp_path / "valid.jsonl", "".join(lines[::50]))
    proc = llmroute("router", "eval", "--data", str(held), env=BARE_ENV)
    assert proc.returncode == 0, proc.stderr
    stderr = " ".join(proc.stderr.split())
    assert f"all {len(lines[::50]):,} of these prompts were in" in stderr and "in-sample" in stderr
    assert "no --model given" in stderr


@pytest.mark.parametrize(("name", "magic"), [("curve.png", b"\x89PNG"), ("curve.svg", b"<svg"), ("curve.pdf", b"%PDF"),
                                             ("curve.html", b"<!doctype html>")])
def test_eval_plot_follows_the_file_extension(tmp_path: Path, name: str, magic: bytes) -> None:
    out = tmp_path / name
    proc = llmroute("router", "eval", "--data", str(labelled(tmp_path)), "--plot", str(out), env=BARE_ENV)
    assert proc.returncode == 0, proc.stderr
    content = out.read_bytes()
    assert magic in content[:400]
    if name.endswith(".html"):
        assert b"data:image/png;base64," in content and b"<table" in content


def test_eval_plot_refuses_an_unknown_extension_before_doing_anything(tmp_path: Path) -> None:
    out = tmp_path / "curve.gif"
    proc = llmroute("router", "eval", "--data", str(tmp_path / "absent.jsonl"), "--plot", str(out), env=BARE_ENV)
    assert proc.returncode == 2
    assert "--plot" in proc.stderr and ".png, .svg, .pdf or .html" in proc.stderr
    assert not out.exists()


def test_python_m_runs_the_same_app() -> None:
    proc = subprocess.run([sys.executable, "-m", "llmroute.cli", "--help"], capture_output=True, text=True,
                          cwd=REPO, env=BARE_ENV, timeout=60)
    assert proc.returncode == 0 and "try" in proc.stdout and "demo" in proc.stdout


# -- port ranges ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("command", "option", "value", "limit"), [
    ("emulate", "--port", "70000", "65535"),
    ("serve", "--port", "70000", "65535"),
    ("try", "--port", "70000", "65535"),
    ("try", "--port", "-1", "0"),
    ("try", "--emulator-port", "65535", "65534"),  # runpod's emulator takes the next port
])
def test_a_port_out_of_range_is_a_usage_error(command: str, option: str, value: str, limit: str) -> None:
    """Not a traceback from bind(), and not a silent listen on the port modulo 65536."""
    proc = llmroute(command, option, value, env=BARE_ENV, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "OverflowError" not in proc.stderr
    assert f"Invalid value for '{option}'" in proc.stderr and limit in proc.stderr
    assert proc.stdout == ""
