"""Creating, replacing and deleting ``agents/<name>.toml`` in the config directory, safely.

Every change is validated first: the files ``load_config`` reads are copied to a temporary
directory, the change is applied there and the copy loaded, so a change that would break the
config is an :class:`InvalidInput` (422) and nothing on disk moves. Then the real file is
written to a temporary name and renamed over (``os.replace``): a reader sees the old file or
the new one, never half of one. One lock file serializes changes, across processes too.

The TOML holds the whole agent, its ``system_prompt`` included, so an ``agents/<name>.md``
(read only when the TOML has no prompt) is removed when its agent is written or deleted.
Callers then reload (``gateway.admin.reload_config``) so every process sees the change.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import tomli_w

from walrus_tasks.config import AgentConfig, Config, load_config
from walrus_tasks.errors import ConfigError, Conflict, InvalidInput, NotFound
from walrus_tasks.names import agent_name

_ENV_REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
"""What ``load_config`` expands from the environment (``walrus_tasks.config.expand_env``)."""

LOCK_FILE = ".lock"
"""In ``agents/``: held (``flock``) while a change is validated and written."""


def _files(home: Path, name: str) -> tuple[Path, Path]:
    return home / "agents" / f"{name}.toml", home / "agents" / f"{name}.md"


def _no_env_refs(value: Any, where: str = "") -> None:
    """Refuse ``${VAR}`` anywhere in ``value``.

    The loader would fill in the server's environment, which an API client must neither set nor
    read back (``GET /v1/agents/{agent}`` shows the description).
    """
    if isinstance(value, str) and (m := _ENV_REF.search(value)):
        raise InvalidInput(
            f"{where or 'body'}: {m[0]} would be read from the server's environment; "
            "environment references cannot be set through the API"
        )
    if isinstance(value, dict):
        for k, v in value.items():
            _no_env_refs(v, f"{where}.{k}" if where else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _no_env_refs(v, f"{where}[{i}]")


def toml_text(agent: AgentConfig) -> str:
    """The ``agents/<name>.toml`` of ``agent``: the fields it was given, and its prompt."""
    data = agent.model_dump(mode="json", exclude={"name"}, exclude_unset=True, exclude_none=True)
    data["system_prompt"] = agent.system_prompt  # always: so no stale <name>.md is read
    _no_env_refs(data)
    return tomli_w.dumps(data)


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    (home / "agents").mkdir(parents=True, exist_ok=True)
    with (home / "agents" / LOCK_FILE).open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _copy(home: Path, into: Path) -> None:
    """Copy what ``load_config`` reads (not workspaces or anything else in ``home``)."""
    if (home / "config.toml").is_file():
        shutil.copy2(home / "config.toml", into / "config.toml")
    (into / "agents").mkdir()
    for path in (home / "agents").glob("*"):
        if path.suffix in (".toml", ".md") and path.is_file():
            shutil.copy2(path, into / "agents" / path.name)
    for skill in (home / "skills").glob("*/SKILL.md") if (home / "skills").is_dir() else []:
        (into / "skills" / skill.parent.name).mkdir(parents=True)
        shutil.copy2(skill, into / "skills" / skill.parent.name / "SKILL.md")


def _validated(home: Path, change: Callable[[Path], None]) -> Config:
    """The config ``home`` would have after ``change(dir)``, tried on a copy; else InvalidInput."""
    with tempfile.TemporaryDirectory(prefix="walrus-config-") as tmp:
        _copy(home, Path(tmp))
        change(Path(tmp))
        try:
            return load_config(Path(tmp))
        except ConfigError as e:
            raise ConfigError(e.message.replace(tmp, str(home))) from None


def _write(path: Path, text: str) -> None:
    """Write ``path`` atomically: a temporary file in the same directory, then a rename."""
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _put(home: Path, agent: AgentConfig, text: str) -> None:
    toml, prompt = _files(home, agent.name)
    _write(toml, text)
    prompt.unlink(missing_ok=True)


def save(home: Path, agent: AgentConfig, *, create: bool) -> None:
    """Write ``agents/<name>.toml`` for ``agent`` once the whole config validates with it.

    ``create``: Conflict if the agent exists; else (replace) NotFound if it does not.
    """
    agent_name(agent.name)
    text = toml_text(agent)
    home = Path(home)
    with _locked(home):
        exists = _files(home, agent.name)[0].is_file()
        if create and exists:
            raise Conflict(f"agent {agent.name!r} already exists; replace it with PUT")
        if not create and not exists:
            raise NotFound(f"unknown agent {agent.name!r}")
        _validated(home, lambda tmp: _put(tmp, agent, text))
        _put(home, agent, text)


def delete(home: Path, name: str) -> None:
    """Delete ``agents/<name>.toml`` and ``.md`` once the config validates without them.

    NotFound if the agent is unknown, Conflict while another agent lists it in ``members``.
    """
    agent_name(name)
    home = Path(home)

    def remove(where: Path) -> None:
        for path in _files(where, name):
            path.unlink(missing_ok=True)

    with _locked(home):
        if not _files(home, name)[0].is_file():
            raise NotFound(f"unknown agent {name!r}")
        current = _validated(home, lambda tmp: None)
        if users := sorted(a.name for a in current.agents.values() if name in a.members):
            listed = ", ".join(users)
            raise Conflict(f"agent {name!r} is a member of {listed}; remove it there first")
        _validated(home, remove)
        remove(home)
