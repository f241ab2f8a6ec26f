"""The import rules of docs/design.md, enforced by the import-linter contracts in pyproject.toml."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_hold() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_gateway_process_never_loads_agent_code() -> None:
    code = (
        "import sys, gateway.app; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('worker', 'beat', 'openai', "
        "'anthropic')]; print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


CLIENT_MAY_LOAD = {
    "walrus_tasks",
    "walrus_tasks.errors",
    "walrus_tasks.models",
    "walrus_tasks.names",
    "walrus_tasks.tenancy",
    "walrus_tasks.reply_text",
    "walrus_tasks.event_types",
}
"""The core modules the client SDK may load besides its own package (``walrus_tasks.client``)."""

IMPORT_THE_CLIENT = """
import importlib, json, pkgutil, sys
import walrus_tasks.client
from walrus_tasks import AsyncClient, Client, RunStatus
for m in pkgutil.iter_modules(walrus_tasks.client.__path__, "walrus_tasks.client."):
    importlib.import_module(m.name)
print(json.dumps(sorted(sys.modules)))
"""


def test_importing_the_client_loads_no_state_machine_lua_config_or_redis() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_THE_CLIENT], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    loaded = json.loads(result.stdout)
    bad = [
        m
        for m in loaded
        if m
        in (
            "walrus_tasks.runs",
            "walrus_tasks.scripts",
            "walrus_tasks.keys",
            "walrus_tasks.config",
            "walrus_tasks.settings",
        )
        or m.split(".")[0] in ("redis", "celery", "kombu")
    ]
    assert bad == []
    core = {m for m in loaded if m.split(".")[0] == "walrus_tasks"}
    assert "walrus_tasks.client.sync" in core and "walrus_tasks.client.aio" in core
    own = {m for m in core if m == "walrus_tasks.client" or m.startswith("walrus_tasks.client.")}
    assert core - own <= CLIENT_MAY_LOAD


def test_the_worker_s_task_bodies_load_no_provider_sdk_until_a_call_needs_one() -> None:
    # A worker imports the SDKs before its pool forks only when WALRUS_WORKER_PRELOAD_SDKS says
    # so (worker.__main__); the test clusters' workers, and any CLI, never pay for them.
    code = (
        "import sys, worker.tasks; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('openai', 'anthropic', 'mcp')]; "
        "from worker import providers; providers.import_sdks(); "
        "loaded = {'openai', 'anthropic'} <= set(sys.modules); "
        "print(bad, loaded); sys.exit(1 if bad or not loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
