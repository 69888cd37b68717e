"""The deployment files describe one topology, and it runs.

``deploy/compose.yaml`` is the source: the Dockerfile, ``deploy/nginx.conf`` and ``deploy/k8s/`` must agree
with it (command, port, environment, probes, config). Then the topology starts here as processes from those
same definitions (no container engine): three ``llmroute serve`` replicas with compose's command and
environment, the config file compose mounts, real Postgres (and Redis when installed), nginx from its own
config with only addresses rewritten, emulated providers standing in for the paid ones.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml


from .conftest import emulator, free_port, require
from .ledger.test_postgres import postgres_dsn  # noqa: F401 (fixture: a real server on loopback)

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# What deploy/.env would hold: the values compose interpolates. The emulators require these provider keys,
# so an answer proves the key went from the environment through the config to the provider.
DOTENV = {
    "LLMROUTE_API_KEYS": "gw-key-sales,gw-key-support",
    "POSTGRES_PASSWORD": "not-a-real-password",
    "CEREBRAS_API_KEY": "csk-deploy-test-key",
    "VLLM_API_KEY": "vllm-deploy-test-key",
}
SECRET_NAME = re.compile(r"KEY|PASSWORD|TOKEN|LEDGER")


# -- reading the files -------------------------------------------------------------------------------


@dataclass
class Dockerfile:
    """The final stage's instructions, and every stage's COPY sources from the build context."""

    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    expose: list[int] = field(default_factory=list)
    user: str = ""
    healthcheck: list[str] = field(default_factory=list)
    context_sources: list[str] = field(default_factory=list)
    bases: list[str] = field(default_factory=list)


def read_dockerfile() -> Dockerfile:
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    result = Dockerfile()
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        word, _, rest = line.strip().partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "FROM":
            result.bases.append(rest.split()[0])
            result.env, result.expose, result.user = {}, [], ""  # only the last stage is the image
        elif word == "ENV":
            result.env.update(part.split("=", 1) for part in shlex.split(rest))
        elif word == "EXPOSE":
            result.expose = [int(p.split("/")[0]) for p in rest.split()]
        elif word == "USER":
            result.user = rest
        elif word in ("ENTRYPOINT", "CMD"):
            setattr(result, word.lower(), json.loads(rest))  # exec form only: shell form would break signals
        elif word == "HEALTHCHECK":
            result.healthcheck = json.loads(rest[rest.index("CMD") + 3:])
        elif word == "COPY" and "--from=" not in rest:
            result.context_sources += shlex.split(rest)[:-1]
    return result


def load_compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def gateway_services(compose: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The services running the image built from the Dockerfile."""
    return {name: s for name, s in compose["services"].items() if s.get("build", {}).get("dockerfile") == "Dockerfile"}


def load_k8s() -> dict[tuple[str, str], dict[str, Any]]:
    docs = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs[(doc.get("kind"), (doc.get("metadata") or {}).get("name"))] = doc
    return docs


def gateway_container(docs: Mapping[tuple[str, str], Any]) -> dict[str, Any]:
    (deployment,) = [d for (kind, _), d in docs.items() if kind == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


_COMPOSE_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op and op.endswith("?"):
            raise KeyError(f"{name}: {arg}")
        return arg if op else ""

    return _COMPOSE_VAR.sub(substitute, value)


def config_variables(text: str) -> set[str]:
    """Variables the config needs a value for (no default), as llmroute's loader reads ``${VAR}``."""
    live = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    return {m.group(1) for m in re.finditer(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}", live) if not m.group(2)}


# -- the files agree -----------------------------------------------------------------------------------


def test_compose_dockerfile_and_k8s_run_the_same_gateway() -> None:
    image, compose, docs = read_dockerfile(), load_compose(), load_k8s()
    gateways = gateway_services(compose)
    assert len(gateways) == 3
    first = next(iter(gateways.values()))
    assert all(service == first for service in gateways.values()), "the replicas must be defined alike"
    container = gateway_container(docs)

    # One command: the image's entry point with the same arguments everywhere.
    assert image.entrypoint == ["llmroute", "serve"]
    assert "command" not in container, "k8s must keep the image's entry point"
    assert first["command"] == image.cmd == container["args"]
    port = int(option(first["command"], "--port"))
    assert option(first["command"], "--host") == "0.0.0.0"
    assert "--insecure" not in first["command"]

    # One port.
    assert image.expose == [port]
    assert [p["containerPort"] for p in container["ports"]] == [port]
    (service,) = [d for (kind, _), d in docs.items() if kind == "Service"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [container["ports"][0]["name"]]
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", (DEPLOY / "nginx.conf").read_text(), flags=re.M)
    assert sorted(upstreams) == sorted((name, str(port)) for name in gateways)

    # One health check, on /health; readiness on /ready.
    assert first["healthcheck"]["test"] == ["CMD", *image.healthcheck]
    assert f"http://127.0.0.1:{port}/health" in " ".join(image.healthcheck)
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"

    # One environment: every name compose sets is set on k8s, secrets only through the Secret.
    compose_env = first["environment"]
    plain = {e["name"]: e.get("value") for e in container["env"]}
    secret_names = {ref["secretRef"]["name"] for ref in container["envFrom"]}
    secret_keys = {k for (kind, name), d in docs.items() if kind == "Secret" and name in secret_names
                   for k in d["stringData"]}
    assert set(compose_env) == set(plain) | secret_keys
    assert not set(plain) & secret_keys
    assert all(not SECRET_NAME.search(name) for name in plain), plain
    assert {n for n in compose_env if SECRET_NAME.search(n)} <= secret_keys

    # One config file, at the path LLMROUTE_CONFIG names in the image, in compose and on k8s.
    config_path = image.env["LLMROUTE_CONFIG"]
    assert compose_env["LLMROUTE_CONFIG"] == plain["LLMROUTE_CONFIG"] == config_path
    assert f"./llmroute.yaml:{config_path}:ro" in first["volumes"]
    (configmap,) = [d for (kind, _), d in docs.items() if kind == "ConfigMap"]
    config_text = (DEPLOY / "llmroute.yaml").read_text()
    assert configmap["data"]["llmroute.yaml"] == config_text
    (mount,) = [m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in docs[("Deployment", "llmroute")]["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert [i["path"] for i in volume["configMap"]["items"]] == [config_path.removeprefix(mount["mountPath"] + "/")]
    assert config_variables(config_text) <= set(compose_env) and config_variables(config_text) <= set(plain) | secret_keys

    # The same non-root user.
    pod_security = docs[("Deployment", "llmroute")]["spec"]["template"]["spec"]["securityContext"]
    assert image.user == f"{pod_security['runAsUser']}:{pod_security['runAsGroup']}"
    assert pod_security["runAsUser"] != 0

    # The ledger DSN names compose's Postgres service, user and database.
    dsn = urllib.parse.urlsplit(interpolate(compose_env["LLMROUTE_LEDGER"], DOTENV))
    postgres = compose["services"][dsn.hostname]["environment"]
    assert (dsn.username, dsn.path.lstrip("/")) == (postgres["POSTGRES_USER"], postgres["POSTGRES_DB"])
    assert urllib.parse.urlsplit(compose_env["LLMROUTE_REDIS_URL"]).hostname in compose["services"]


def test_dockerignore_keeps_what_the_image_is_built_from() -> None:
    rules = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]

    def sent(path: str) -> bool:  # Docker's rule: the last pattern that matches decides
        keep = True
        for rule in rules:
            negated = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            parts = path.split("/")
            if any(fnmatch.fnmatch("/".join(parts[:i]), pattern.removeprefix("**/")) if pattern.startswith("**/")
                   else fnmatch.fnmatch("/".join(parts[:i]), pattern) for i in range(1, len(parts) + 1)):
                keep = negated
        return keep

    image = read_dockerfile()
    assert image.context_sources == ["pyproject.toml", "README.md", "llmroute"]
    packaged = [p.relative_to(REPO).as_posix() for p in (REPO / "llmroute").rglob("*")
                if p.is_file() and "__pycache__" not in p.parts]
    assert packaged and all(sent(p) for p in packaged)
    assert sent("pyproject.toml") and sent("README.md")
    assert not any(sent(p) for p in ("tests/conftest.py", ".git/HEAD", "benchmarks/x.py", "deploy/.env",
                                     "llmroute/__pycache__/cli.cpython-311.pyc"))
    assert all(base.startswith("python:") and base.endswith("-slim") for base in image.bases)


def test_k8s_manifests_are_well_formed() -> None:
    docs = load_k8s()
    api = {"Deployment": "apps/v1", "Service": "v1", "HorizontalPodAutoscaler": "autoscaling/v2",
           "Secret": "v1", "ConfigMap": "v1", "PodDisruptionBudget": "policy/v1"}
    for (kind, name), doc in docs.items():
        assert doc.get("apiVersion") == api.get(kind), (kind, name)
        assert name and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec", "data", "stringData", "type"}
    assert {kind for kind, _ in docs} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "Secret", "ConfigMap"}

    deployment = docs[("Deployment", "llmroute")]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in spec["containers"]:
        assert container["name"] and container["image"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports
        requests = container["resources"]["requests"]
        assert requests["cpu"] and requests["memory"], "the HPA on CPU needs a CPU request"
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"]["drop"] == ["ALL"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert set(mounts.values()) <= set(volumes)
        if security.get("readOnlyRootFilesystem"):
            assert "emptyDir" in volumes[mounts["/tmp"]], "--workers needs a writable /tmp"
        for ref in container.get("envFrom", []):
            assert ("Secret", ref["secretRef"]["name"]) in docs
    for volume in volumes.values():
        if "configMap" in volume:
            configmap = docs[("ConfigMap", volume["configMap"]["name"])]
            assert {i["key"] for i in volume["configMap"]["items"]} <= set(configmap["data"])

    service = docs[("Service", "llmroute")]
    assert service["spec"]["selector"].items() <= labels.items()
    hpa = docs[("HorizontalPodAutoscaler", "llmroute")]["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "llmroute")
    assert hpa["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["maxReplicas"]
    assert [m["resource"]["name"] for m in hpa["metrics"] if m["type"] == "Resource"] == ["cpu"]
    pdb = docs[("PodDisruptionBudget", "llmroute")]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items() and pdb["minAvailable"] < hpa["minReplicas"]
    secret = docs[("Secret", "llmroute-secrets")]
    assert secret["stringData"] and all(v == "" for v in secret["stringData"].values()), "placeholders only"


# -- the topology as processes ---------------------------------------------------------------------------


def entrypoint_argv(image: Dockerfile, args: list[str]) -> list[str]:
    """The image's entry point, run with this interpreter (the console script ``llmroute`` is ``llmroute.cli``)."""
    assert image.entrypoint[0] == "llmroute"
    return [sys.executable, "-m", "llmroute.cli", *image.entrypoint[1:], *args]


def container_env(image: Dockerfile, service: Mapping[str, Any], dotenv: Mapping[str, str],
                  addresses: Mapping[str, str]) -> dict[str, str]:
    """The environment the container would see: the image's ENV, then compose's, interpolated from ``dotenv``;
    mounted paths mapped to the files compose mounts, service host:port to where they listen here."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        mounts[target] = str((DEPLOY / source).resolve())
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMROUTE_") and k not in service["environment"]}
    env.update({k: v for k, v in image.env.items() if k not in ("PATH", "XDG_DATA_HOME")})
    for name, value in service["environment"].items():
        value = interpolate(str(value), dotenv)
        for target, source in mounts.items():
            value = value.replace(target, source)
        for address, local in addresses.items():
            value = value.replace(f"@{address}/", f"@{local}/").replace(f"//{address}/", f"//{local}/")
        env[name] = value
    return env


@dataclass
class Replica:
    name: str
    port: int
    process: subprocess.Popen[str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start_replica(name: str, argv: list[str], env: dict[str, str], log: Path) -> Replica:
    port = int(option(argv, "--port"))
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env, cwd=REPO)
    return Replica(name, port, process, log)


def wait_listening(replica: Replica) -> None:
    """Its start-up line, or its error: a replica that exits (a config or ledger error) ends the wait."""
    line = replica.process.stdout.readline() if replica.process.stdout else ""
    if f"listening on http://0.0.0.0:{replica.port}" not in line:
        replica.process.kill()
        raise AssertionError(f"{replica.name} did not start: {line!r}\n{replica.log.read_text()}")


def wait_until(check: Any, what: str, timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if result:
                return result
        except (OSError, httpx.HTTPError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def redis_ping(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 6379), timeout=2) as conn:
        conn.sendall(b"PING\r\n")
        return conn.recv(64).startswith(b"+PONG")


def requests_served(replica: Replica, key: str) -> float:
    text = httpx.get(replica.url + "/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("llmroute_requests_total{"))


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[Any]]]:
    started: list[subprocess.Popen[Any]] = []
    yield started
    for process in reversed(started):
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def test_image_command_fails_closed_on_placeholder_secrets(tmp_path: Path) -> None:
    """With the k8s Secret's placeholders (all empty) the gateway stops at once, naming what is missing, and
    without gateway keys it refuses the public address rather than serve anyone."""
    image, compose, docs = read_dockerfile(), load_compose(), load_k8s()
    service = next(iter(gateway_services(compose).values()))
    argv = entrypoint_argv(image, service["command"])
    env = container_env(image, service, {**DOTENV, "VLLM_BASE_URL": "http://127.0.0.1:9/v1"},
                        {"postgres:5432": "127.0.0.1:9"})
    placeholders = docs[("Secret", "llmroute-secrets")]["stringData"]
    proc = subprocess.run(argv, env={**env, **placeholders}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    for name in ("CEREBRAS_API_KEY", "VLLM_API_KEY", "LLMROUTE_LEDGER"):
        assert name in proc.stderr
    proc = subprocess.run(argv, env={**env, "LLMROUTE_API_KEYS": ""}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "refusing to listen on 0.0.0.0 without API keys" in proc.stderr


def test_topology_serves_through_the_load_balancer(tmp_path: Path, postgres_dsn: str,  # noqa: F811
                                                   processes: list[subprocess.Popen[Any]]) -> None:
    import openai
    import psycopg

    require(os.access(NGINX, os.X_OK), "nginx (Debian: apt-get install nginx-light)")
    image, compose = read_dockerfile(), load_compose()
    gateways = gateway_services(compose)
    dotenv = dict(DOTENV)

    # Postgres as the image initialises it: POSTGRES_DB created for POSTGRES_USER.
    server = urllib.parse.urlsplit(postgres_dsn)
    database = compose["services"]["postgres"]["environment"]["POSTGRES_DB"]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
        conn.execute(f'CREATE DATABASE "{database}"')
    addresses = {"postgres:5432": f"127.0.0.1:{server.port}"}

    redis = shutil.which("redis-server")
    if redis:  # optional until shared state lands: started from compose's command, as the gateway will use it
        redis_port = free_port()
        command = compose["services"]["redis"]["command"]
        processes.append(subprocess.Popen([redis, *command[1:], "--port", str(redis_port), "--bind", "127.0.0.1",
                                           "--dir", str(tmp_path)], stdout=subprocess.DEVNULL))
        addresses["redis:6379"] = f"127.0.0.1:{redis_port}"

    with emulator("cerebras", api_key=dotenv["CEREBRAS_API_KEY"]) as cerebras, \
            emulator("runpod", api_key=dotenv["VLLM_API_KEY"], seed=1) as vllm:
        dotenv.update(CEREBRAS_BASE_URL=cerebras.base_url, VLLM_BASE_URL=vllm.base_url)
        replicas = []
        for name, service in gateways.items():
            args = list(service["command"])
            args[args.index("--port") + 1] = str(free_port())
            env = container_env(image, service, dotenv, addresses)
            replica = start_replica(name, entrypoint_argv(image, args), env, tmp_path / f"{name}.log")
            processes.append(replica.process)
            replicas.append(replica)
        for replica in replicas:  # all three started at once, as compose does: they migrate one ledger
            wait_listening(replica)
        if redis:
            assert wait_until(lambda: redis_ping(env["LLMROUTE_REDIS_URL"]), "redis")

        # nginx from deploy/nginx.conf, with only the addresses rewritten.
        lb_port = free_port()
        conf = (DEPLOY / "nginx.conf").read_text()
        conf, listens = re.subn(r"listen 8080;", f"listen 127.0.0.1:{lb_port};", conf)
        assert listens == 1
        for replica in replicas:
            conf, n = re.subn(rf"server {replica.name}:8080", f"server 127.0.0.1:{replica.port}", conf)
            assert n == 1
        (tmp_path / "nginx.conf").write_text(conf)
        nginx = [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
                 "-g", f"daemon off; pid {tmp_path}/nginx.pid;"]
        check = subprocess.run([*nginx, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        processes.append(subprocess.Popen(nginx, stdout=(tmp_path / "access.log").open("w"),
                                          stderr=(tmp_path / "nginx.log").open("w")))
        lb = f"http://127.0.0.1:{lb_port}"
        wait_until(lambda: httpx.get(lb + "/health", timeout=2).status_code == 200, "nginx")

        for replica in replicas:
            assert httpx.get(replica.url + "/health", timeout=5).json() == {"status": "ok"}
            ready = httpx.get(replica.url + "/ready", timeout=5)
            assert ready.status_code == 200 and sorted(ready.json()["usable_providers"]) == ["cerebras", "vllm"]

        key = dotenv["LLMROUTE_API_KEYS"].split(",")[1]
        client = openai.OpenAI(base_url=lb + "/v1", api_key=key, max_retries=0)

        def ask(i: int) -> tuple[str, str]:
            raw = client.chat.completions.with_raw_response.create(
                model="balanced", max_tokens=20, messages=[{"role": "user", "content": f"Qualify lead {i}"}])
            assert raw.parse().choices[0].message.content
            return raw.headers["x-request-id"], raw.headers["x-llmroute-provider"]

        with ThreadPoolExecutor(6) as pool:
            answered = list(pool.map(ask, range(45)))
        raw = client.chat.completions.with_raw_response.create(
            model="balanced", max_tokens=20, stream=True, messages=[{"role": "user", "content": "Summarise it"}])
        text = "".join(chunk.choices[0].delta.content or "" for chunk in raw.parse() if chunk.choices)
        assert text
        answered.append((raw.headers["x-request-id"], raw.headers["x-llmroute-provider"]))
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=lb + "/v1", api_key="not-a-gateway-key", max_retries=0).models.list()

        # A stream is counted once its last byte is written, just after the client has it: wait for that.
        def counted() -> dict[str, float] | None:
            counts = {r.name: requests_served(r, key) for r in replicas}
            return counts if sum(counts.values()) == len(answered) else None

        served = wait_until(counted, "every request counted in the replicas' /metrics")
        assert all(count > 0 for count in served.values()), served
        assert {provider for _, provider in answered} == {"cerebras", "vllm"}
        assert cerebras.emulator.stats["ok"] > 0 and vllm.emulator.stats["ok"] > cerebras.emulator.stats["ok"]

        # SIGTERM, as compose and k8s stop a container: requests finish and the ledger is committed.
        for replica in replicas:
            replica.process.send_signal(signal.SIGTERM)
        assert [r.process.wait(timeout=30) for r in replicas] == [0, 0, 0]

        gone = httpx.post(lb + "/v1/chat/completions", json={"model": "balanced", "messages": []},
                          headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert gone.status_code == 503 and gone.headers["retry-after"] == "1"
        assert gone.json()["error"]["code"] == "gateway_unavailable"

    ledger = f"postgresql://{server.netloc}/{database}"
    with psycopg.connect(ledger) as conn:
        rows = conn.execute("SELECT request_id, provider, status, cost_usd, key_id FROM requests").fetchall()
    assert sorted(r[0] for r in rows) == sorted(request_id for request_id, _ in answered)
    assert {(r[0], r[1]) for r in rows} == set(answered)
    assert all(r[2] == "ok" and r[3] > 0 and r[4] == "env-2" for r in rows), rows
