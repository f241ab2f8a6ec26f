"""Where a run works, and keeping every path a tool touches inside it."""

from __future__ import annotations

from pathlib import Path

from walrus_tasks.config import AgentConfig, Config
from worker.tools.base import ToolFailed

WORKSPACES = "workspaces"
"""Default working directories live in ``<home>/workspaces/<agent>``."""


def working_directory(agent: AgentConfig, config: Config, requested: str = "") -> Path:
    """The run's working directory.

    ``requested`` (the conversation's ``cwd``; relative to the agent's default), else the
    agent's ``workdir``, else ``<home>/workspaces/<agent>``. The default is created on first
    use; a requested one must exist (tools report it if not).
    """
    base = Path(agent.workdir) if agent.workdir else Path(WORKSPACES) / agent.name
    if not base.is_absolute():
        base = config.home.resolve() / base
    if not requested:
        base.mkdir(parents=True, exist_ok=True)
        return base
    path = Path(requested)
    return path if path.is_absolute() else base / path


def resolve_inside(root: Path, path: str) -> Path:
    """``path`` (relative to ``root``, or absolute) resolved with symlinks followed.

    ToolFailed unless the result is ``root`` or below it: ``..`` traversal, absolute paths
    elsewhere and symlinks that lead out are all refused.
    """
    if not isinstance(path, str) or not path or "\0" in path:
        raise ToolFailed("path must be a non-empty string")
    try:
        real_root = root.resolve(strict=True)
    except OSError:
        raise ToolFailed(f"the working directory {root} does not exist") from None
    candidate = Path(path)
    real = (candidate if candidate.is_absolute() else real_root / candidate).resolve()
    if real != real_root and real_root not in real.parents:
        raise ToolFailed(f"path {path!r} is outside the working directory {real_root}")
    return real
