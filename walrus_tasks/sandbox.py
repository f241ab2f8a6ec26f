"""Which sandbox ``bash`` runs in: bubblewrap when it is installed and works, else none.

Here (not in ``worker/``) so that ``walrus doctor`` can report it; ``worker.tools.sandbox``
builds the command line.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

from walrus_tasks.settings import get_settings

PROBE_TIMEOUT = 5.0
"""Seconds the trial run of bwrap may take."""


@dataclass(frozen=True)
class Sandbox:
    """The sandbox in force: ``bwrap`` (its path) or ``none``, and why."""

    kind: str
    detail: str
    bwrap: str = ""

    @property
    def refused(self) -> bool:
        """True when bwrap was asked for but cannot run: bash then refuses every command."""
        return self.kind == "unavailable"


def probe_bwrap(path: str) -> str:
    """Why ``path`` cannot build the sandbox (user namespaces, mounts); empty when it can."""
    argv = [path, "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    argv += ["--unshare-pid", "--unshare-net", "--die-with-parent", "--new-session", "true"]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    if done.returncode:
        return done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
    return ""


@lru_cache(maxsize=1)
def current() -> Sandbox:
    """The sandbox of this host under ``WALRUS_SANDBOX`` (probed once per process)."""
    wanted = get_settings().sandbox
    if wanted == "none":
        return Sandbox("none", "WALRUS_SANDBOX=none: bash runs unsandboxed")
    path = shutil.which("bwrap")
    why = probe_bwrap(path) if path else "bwrap is not on PATH (Debian: apt install bubblewrap)"
    if not why:
        return Sandbox("bwrap", f"bubblewrap ({path})", bwrap=str(path))
    if wanted == "bwrap":
        return Sandbox("unavailable", f"WALRUS_SANDBOX=bwrap but it cannot run: {why}")
    return Sandbox("none", f"no sandbox: {why}")


def workspace_owner() -> tuple[int, int] | None:
    """The host ``(uid, gid)`` that ``bash`` runs as when it is not the worker's own user.

    A root worker drops ``bash`` to ``sandbox_uid``/``sandbox_gid`` (never host uid 0, which
    keeps every capability); what the file tools create must then belong to that user so a
    command can change it. ``None`` when bash runs as the worker's user (a non-root worker,
    or ``WALRUS_SANDBOX=none``).
    """
    if os.geteuid() != 0 or current().kind != "bwrap":
        return None
    settings = get_settings()
    return settings.sandbox_uid, settings.sandbox_gid
