"""Where a run works, and keeping every path a tool touches inside it."""

from __future__ import annotations

from pathlib import Path

from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.workspace import agent_workdir, conversation_cwd
from worker.tools.base import ToolFailed


def working_directory(
    agent: AgentConfig, config: Config, requested: str = "", tenant: str | None = None
) -> Path:
    """The run's working directory.

    ``requested`` (the conversation's ``cwd``; relative to the agent's default), else the
    agent's ``workdir``, else ``<home>/workspaces/<agent>``. The default is created on first
    use; a requested one must exist (tools report it if not). A requested one outside the
    agent's directory is InvalidInput: the gateway refuses those, this is the second line.
    In a named ``tenant`` all of it is the tenant's subfolder of the agent's directory.
    """
    if requested:
        return conversation_cwd(agent, config, requested, tenant)
    base = agent_workdir(agent, config, tenant)
    base.mkdir(parents=True, exist_ok=True)
    return base


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
