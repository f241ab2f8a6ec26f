"""An agent's working directory, and keeping a client's ``cwd`` inside it.

Shared by the gateway (which refuses a bad ``cwd`` before anything is stored) and the worker
(which checks again when it turns a stored ``cwd`` into a directory).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.errors import InvalidInput

WORKSPACES = "workspaces"
"""Default working directories live in ``<home>/workspaces/<agent>``."""


TENANTS = "tenants"
"""A named tenant's working directory is ``<the agent's>/tenants/<tenant>``."""


def agent_workdir(agent: AgentConfig, config: Config, tenant: str | None = None) -> Path:
    """The agent's own working directory: its ``workdir``, else ``<home>/workspaces/<agent>``.

    A named tenant's is its subfolder ``tenants/<tenant>`` of that: the tenant's runs work, and
    keep their paths, inside it (the default tenant's holds every tenant's subfolder).
    """
    return _workdir(agent.workdir, agent.name, config.home, tenant)


@lru_cache(maxsize=1024)
def _workdir(workdir: str | None, agent: str, home: Path, tenant: str | None) -> Path:
    """:func:`agent_workdir`, worked out once a process (no process of ours changes directory).

    A step asks for its working directory as it starts, before its first token; resolving
    the home then (a ``stat`` of every part of its path) and building the path took ~0.3 ms of
    it on a slow machine (docs/benchmarks.md, issue 25, thirteenth round).
    """
    base = Path(workdir) if workdir else Path(WORKSPACES) / agent
    base = base if base.is_absolute() else home.resolve() / base
    return base / TENANTS / tenant if tenant else base


def conversation_cwd(
    agent: AgentConfig, config: Config, requested: str, tenant: str | None = None
) -> Path:
    """``requested`` (absolute, or relative to the agent's directory) as a path inside it.

    InvalidInput (422) for anything that leads out: an absolute path elsewhere, ``..`` that
    climbs out, or a symlink (where this host sees the disk) that points out. A directory that
    does not exist yet is allowed: the tools report it when they run.
    """
    base = agent_workdir(agent, config, tenant)
    if not requested or "\0" in requested:
        raise InvalidInput("cwd must be a non-empty path")
    path = Path(os.path.normpath(base / requested))
    # realpath follows symlinks as far as the path exists on this host, and `..` after them.
    real, real_base = path.resolve(), base.resolve()
    if real != real_base and real_base not in real.parents:
        raise InvalidInput(f"cwd {requested!r} is outside the agent's working directory {base}")
    return path


def send_meta(
    config: Config, agent: str, cwd: str | None, tenant: str | None = None
) -> dict[str, str] | None:
    """The run fields of a send with ``cwd`` and ``tenant`` (``cwd`` checked in its directory).

    Every way in (HTTP, WebSocket) calls this before ``submit()``, so a bad ``cwd`` is refused
    before anything is stored, whatever the token. None when there is neither.
    """
    meta = {"tenant": tenant} if tenant else {}
    if cwd:
        conversation_cwd(config.agent(agent), config, cwd, tenant)
        meta["cwd"] = cwd
    return meta or None
