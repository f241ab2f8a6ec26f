"""The production path, compose/, checked without a Docker engine.

The compose file is parsed and interpolated the way ``docker compose`` does it, with the values
of ``.env.example`` (secrets filled in); then every command is parsed by the real CLI, every
healthcheck is run against a real gateway and worker, and the Dockerfile's stages are read.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml

from tests.cluster import Cluster, wait_for
from walrus_tasks.redis_server import free_port, start_redis

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"

SERVICES = {"redis", "gateway", "worker", "beat", "flower"}
SECRETS = {"WALRUS_TOKEN", "REDIS_PASSWORD", "FLOWER_BASIC_AUTH"}

# $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR
_VAR_RE = re.compile(
    r"\$(?:(?P<dollar>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    """A ``${VAR:?message}`` whose variable is unset or empty."""


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """``value`` (a parsed compose document) with its variables substituted like compose does."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group("dollar"):
            return "$"
        name = m.group("braced") or m.group("bare")
        op, arg, current = m.group("op"), m.group("arg"), env.get(name)
        if op == ":-":
            return current or arg
        if op == "-":
            return arg if current is None else current
        if (op == ":?" and not current) or (op == "?" and current is None):
            raise MissingVariable(f"{name}: {arg}")
        return current or ""

    return _VAR_RE.sub(sub, value)


def variables(value: Any) -> dict[str, set[str]]:
    """Every variable a compose document reads, mapped to the operators it is read with."""
    found: dict[str, set[str]] = {}
    if isinstance(value, str):
        for m in _VAR_RE.finditer(value):
            if not m.group("dollar"):
                name = m.group("braced") or m.group("bare")
                found.setdefault(name, set()).add(m.group("op") or "")
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            for name, ops in variables(item).items():
                found.setdefault(name, set()).update(ops)
    return found


def env_example() -> dict[str, str]:
    """``KEY=value`` lines of ``.env.example``."""
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=value: {line!r}"
            pairs[key.strip()] = value.strip()
    return pairs


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as ``docker compose config`` would see it with a filled-in .env."""
    env = {**env_example(), **{name: f"secret-{name.lower()}" for name in SECRETS}}
    env["FLOWER_BASIC_AUTH"] = "admin:secret"
    return interpolate(raw_compose(), env)  # type: ignore[no-any-return]


def test_compose_defines_the_five_services(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == SERVICES


def test_every_variable_is_in_env_example_and_secrets_are_required() -> None:
    documented = env_example()
    used = variables(raw_compose())
    assert set(used) <= set(documented), f"not in .env.example: {set(used) - set(documented)}"
    required = {name for name, ops in used.items() if ":?" in ops}
    assert required >= SECRETS
    for name in required:
        assert documented[name] == "", f".env.example ships a value for the secret {name}"
    for name in required:
        with pytest.raises(MissingVariable, match=name):
            interpolate(raw_compose(), {**documented, **{n: "x" for n in required - {name}}})


def test_depends_on_waits_for_a_healthy_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on must name a condition"
        for target, spec in depends.items():
            assert spec == {"condition": "service_healthy"}, f"{name} -> {target}: {spec}"
            assert "healthcheck" in services[target], f"{name} waits on {target}: no healthcheck"
    for name in SERVICES - {"redis"}:
        assert "redis" in services[name]["depends_on"], f"{name} starts before Redis is up"


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name in ("redis", "gateway", "worker", "flower"):
        check = compose["services"][name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check.get("interval") and check.get("retries"), name


def test_redis_keeps_an_aof_on_a_volume_and_never_evicts(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    args = redis["command"]
    flags = dict(zip(args[1::2], args[2::2], strict=True))
    assert args[0] == "redis-server"
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert flags["--requirepass"] == "secret-redis_password"
    volume = next(v for v in redis["volumes"] if v.endswith(":/data"))
    assert volume.split(":")[0] in compose["volumes"], "Redis data must be on a named volume"
    # Every walrus process connects with the same password.
    for name in SERVICES - {"redis"}:
        url = compose["services"][name]["environment"]["WALRUS_REDIS_URL"]
        assert url == "redis://:secret-redis_password@redis:6379/0", name


def test_worker_scales_and_serves_every_queue(compose: dict[str, Any]) -> None:
    from walrus_tasks.celery_app import ALL_QUEUES

    worker = compose["services"]["worker"]
    assert "container_name" not in worker, "a fixed container name stops --scale worker=N"
    assert "ports" not in worker, "a published port stops --scale worker=N"
    command = worker["command"]
    queues = command[command.index("--queues") + 1].split(",")
    assert set(queues) == set(ALL_QUEUES)


def test_exactly_one_beat(compose: dict[str, Any]) -> None:
    beat = compose["services"]["beat"]
    assert beat.get("deploy", {}).get("replicas", 1) == 1
    assert beat.get("scale", 1) == 1


def test_gateway_listens_beyond_loopback_with_a_token(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    command = gateway["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert gateway["environment"]["WALRUS_TOKEN"] == "secret-walrus_token"
    assert raw_compose()["x-walrus"]["environment"]["WALRUS_TOKEN"].startswith("${WALRUS_TOKEN:?")


def test_walrus_services_share_one_image_and_the_config_dir(compose: dict[str, Any]) -> None:
    for name in SERVICES - {"redis"}:
        service = compose["services"][name]
        build = service["build"]
        assert (COMPOSE_DIR / build["context"]).resolve() == ROOT
        assert (ROOT / build["dockerfile"]).resolve() == DOCKERFILE
        assert service["image"] == compose["services"]["gateway"]["image"]
        mount = next(v for v in service["volumes"] if v.split(":")[1] == "/etc/walrus")
        assert mount.endswith(":ro")
        assert (COMPOSE_DIR / mount.split(":")[0] / "config.toml").is_file()
        assert service["environment"]["WALRUS_HOME"] == "/etc/walrus"


# --- commands: every one is a real entry point ------------------------------------------------


def commands(compose: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every walrus or celery command the compose file runs."""
    found = []
    for name, service in sorted(compose["services"].items()):
        if name != "redis":
            found.append((f"{name}.command", service["command"]))
        test = service.get("healthcheck", {}).get("test", [])
        if test and test[0] == "CMD-SHELL":
            found.append((f"{name}.healthcheck", test[1].split()))
        elif test and test[0] == "CMD" and test[1] != "python":
            found.append((f"{name}.healthcheck", test[1:]))
    return found


def test_every_command_is_a_walrus_or_celery_entry_point(compose: dict[str, Any]) -> None:
    found = commands(compose)
    assert {where for where, _ in found} >= {f"{n}.command" for n in SERVICES - {"redis"}}
    for where, argv in found:
        if where == "redis.healthcheck":
            assert argv[0] == "redis-cli"
            continue
        assert argv[0] == "walrus" or argv[:3] == ["python", "-m", "celery"], (where, argv)


def test_walrus_commands_parse_and_help(compose: dict[str, Any]) -> None:
    from walrus_tasks.cli.app import app

    commands_by_name = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    for where, argv in commands(compose):
        if argv[0] != "walrus":
            continue
        sub = commands_by_name.get(argv[1])
        assert sub is not None, f"{where}: no command walrus {argv[1]}"
        sub.make_context(argv[1], list(argv[2:]))  # raises on an unknown option or a bad value
        help_ = subprocess.run(
            [sys.executable, "-m", "walrus_tasks.cli", argv[1], "--help"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert help_.returncode == 0, f"{where}: {help_.stderr}"
        for flag in (a for a in argv[2:] if a.startswith("--")):
            assert flag in help_.stdout, f"{where}: {flag} not in walrus {argv[1]} --help"


def test_celery_commands_help(compose: dict[str, Any]) -> None:
    for where, argv in commands(compose):
        if argv[:3] != ["python", "-m", "celery"]:
            continue
        sub = argv.index("inspect") if "inspect" in argv else 3
        help_ = subprocess.run(
            [sys.executable, *argv[1 : sub + 1], "--help"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert help_.returncode == 0, f"{where}: {help_.stderr}"
        for flag in (a for a in argv[sub + 1 :] if a.startswith("-")):
            assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", help_.stdout), (where, flag)


# --- the example config and the healthchecks, against real processes -------------------------


TOKEN = "compose-test-token-0123456789"


def test_example_config_loads_and_serves_healthz(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.app import create_app
    from walrus_tasks.config import load_config
    from walrus_tasks.settings import Settings
    from worker.tools import TOOLS

    monkeypatch.setenv("WALRUS_TOKEN", TOKEN)
    home = COMPOSE_DIR / "config"
    config = load_config(home)
    assert [grant.token.get_secret_value() for grant in config.gateway.tokens] == [TOKEN]
    assert "assistant" in config.agents
    for agent in config.agents.values():
        assert set(agent.tools) <= set(TOOLS), agent.name
    app = create_app(Settings(home=home, gateway_host="0.0.0.0", gateway_port=8765), config)
    assert "/healthz" in app.openapi()["paths"]


@pytest.fixture
def compose_cluster(home: Path, tmp_path: Path) -> Iterator[Cluster]:
    """An empty cluster on a Redis of its own that, like compose's, wants a password."""
    server = start_redis(tmp_path / "redis", password="compose-redis-password")
    cluster = Cluster(redis_url=server.url, home=home, log_dir=tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop()
        server.stop()


def run_healthcheck(test: list[str], env: dict[str, str]) -> int:
    """Run a compose healthcheck here: ``CMD-SHELL`` through ``sh -c``, ``CMD`` directly."""
    if test[0] == "CMD-SHELL":
        argv = ["sh", "-c", test[1]]
    else:
        argv = [sys.executable if test[1] == "python" else test[1], *test[2:]]
    return subprocess.run(argv, env=env, capture_output=True, timeout=60).returncode


def test_the_compose_stack_serves_a_message_and_passes_its_healthchecks(
    compose: dict[str, Any], compose_cluster: Cluster
) -> None:
    """gateway, worker and beat as compose runs them (commands, config dir, token), minus Docker."""
    services = compose["services"]
    port = str(free_port())
    hostname = socket.gethostname()  # in a container, $HOSTNAME is the same name
    # Each process gets its service's environment from the compose file, with the addresses
    # that differ outside Docker: this Redis, this checkout's compose/config, a free port.
    local = {
        "WALRUS_REDIS_URL": compose_cluster.redis_url,
        "WALRUS_HOME": str(COMPOSE_DIR / "config"),
        "WALRUS_TOKEN": TOKEN,
        "WALRUS_GATEWAY_PORT": port,
        "HOSTNAME": hostname,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    env = {**compose_cluster.env(), **services["gateway"]["environment"], **local}
    for name in ("gateway", "worker", "beat"):
        argv = list(services[name]["command"])
        assert argv[0] == "walrus"
        if "--port" in argv:
            argv[argv.index("--port") + 1] = port
        service_env = {**compose_cluster.env(), **services[name]["environment"], **local}
        compose_cluster._spawn(f"compose-{name}", ["walrus_tasks.cli", *argv[1:]], service_env)

    url = f"http://127.0.0.1:{port}"
    gateway_check = services["gateway"]["healthcheck"]["test"]
    worker_check = services["worker"]["healthcheck"]["test"]

    def healthy(check: list[str]) -> bool:
        compose_cluster.check_alive()
        return run_healthcheck(check, env) == 0

    wait_for(lambda: healthy(gateway_check), 30, 0.2, "the gateway healthcheck")
    wait_for(lambda: healthy(worker_check), 60, 0.2, "the worker healthcheck")

    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/v1/agents").status_code == 401  # off loopback, tokens are enforced
        sent = client.post(
            "/v1/agents/assistant/messages", json={"content": "hi", "sender": "ops"}, headers=auth
        )
        assert sent.status_code == 202, sent.text
        run_id = sent.json()["run_id"]

        def ended() -> dict[str, Any] | None:
            info: dict[str, Any] = client.get(f"/v1/runs/{run_id}", headers=auth).json()
            return info if info["status"] in ("succeeded", "failed", "cancelled") else None

        assert wait_for(ended, 60, 0.1, f"run {run_id}")["status"] == "succeeded"
    compose_cluster.check_alive()  # beat too is still up

    # The healthchecks fail when their process is not there.
    assert run_healthcheck(gateway_check, {**env, "WALRUS_GATEWAY_PORT": str(free_port())}) != 0
    assert run_healthcheck(worker_check, {**env, "HOSTNAME": "no-such-container"}) != 0


# --- the Dockerfile ---------------------------------------------------------------------------


def dockerfile_stages() -> list[list[str]]:
    """Instructions of each stage (continuation lines joined, comments dropped)."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        if current.strip():
            lines.append(" ".join(current.split()))
        current = ""
    stages: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_dockerfile_final_stage_is_slim_non_root_without_build_tools() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: build tools must stay in the build stage"
    final = stages[-1]
    assert re.fullmatch(r"FROM python:3\.11-slim", final[0]), final[0]
    text = "\n".join(final)
    for tool in ("build-essential", "gcc", "pip install"):
        assert tool not in text, f"final stage has {tool!r}"
    # The one package the final stage installs: bubblewrap, bash's sandbox.
    for packages in re.findall(r"apt-get install ([^&\\\n]*)", text):
        assert set(packages.split()) - {"-y", "--no-install-recommends"} == {"bubblewrap"}
    users = [line.split()[1] for line in final if line.upper().startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("COPY --from=") for line in final)


def test_dockerfile_copies_every_package() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {
        part
        for stage in dockerfile_stages()
        for line in stage
        if line.startswith("COPY ") and "--from" not in line
        for part in line.split()[1:-1]
    }
    assert packages <= copied
    ignored = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert not copied & ignored, (
        f".dockerignore drops what the Dockerfile copies: {copied & ignored}"
    )
    for path in copied:
        assert (ROOT / path).exists(), path
    assert {".env", ".git"} <= ignored
