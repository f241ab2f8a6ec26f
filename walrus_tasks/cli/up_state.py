"""``walrus up``'s state file, ``<home>/run/up.json``: its PID, its Redis and its children.

``walrus up`` rewrites it whenever a child starts, exits or restarts, and removes it when it
stops. Other shells read it: ``walrus status`` shows the children and their restarts, a second
``walrus up`` refuses to start beside a live one, and the commands that read Redis directly find
the embedded Redis (which listens on a port of its own) without ``WALRUS_REDIS_URL``.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from walrus_tasks.settings import get_settings

ADOPTING_COMMANDS = frozenset({"status", "doctor", "export", "import"})
"""The commands that read Redis directly, and so use a running ``walrus up``'s Redis."""


def state_path(home: Path) -> Path:
    """Where the ``walrus up`` of config directory ``home`` keeps its state."""
    return home / "run" / "up.json"


def write_state(home: Path, state: dict[str, Any]) -> None:
    """Replace the state file at once (readers never see half of it), readable by its owner only.

    The Redis URL in it may carry a password.
    """
    path = state_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(state, f, indent=1)
    os.replace(tmp, path)


def remove_state(home: Path) -> None:
    """Remove the state file (``walrus up`` stopped)."""
    with contextlib.suppress(FileNotFoundError):
        state_path(home).unlink()


def read_state(home: Path) -> dict[str, Any] | None:
    """The state of the ``walrus up`` running for ``home``; None when none runs.

    A file left by a ``walrus up`` that was killed (its PID is gone) counts as none.
    """
    try:
        state = json.loads(state_path(home).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or not _alive(state.get("pid")):
        return None
    return state


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def adopt_redis() -> None:
    """Use the running ``walrus up``'s Redis when ``WALRUS_REDIS_URL`` is not set explicitly.

    Sets it in this process's environment, so the settings and the Celery app (read from it)
    agree.
    """
    settings = get_settings()
    if "redis_url" in settings.model_fields_set:
        return
    state = read_state(settings.home.resolve())
    if state and isinstance(state.get("redis_url"), str):
        os.environ["WALRUS_REDIS_URL"] = state["redis_url"]
        get_settings.cache_clear()
