"""Which sandbox ``bash`` runs in: bubblewrap that holds no host privilege, or none by choice.

``WALRUS_SANDBOX=auto`` (the default) and ``bwrap`` mean bubblewrap or refuse: a worker that
cannot build the sandbox refuses every ``bash`` command (and ``walrus doctor`` says why). Only
an explicit ``WALRUS_SANDBOX=none`` runs commands unsandboxed. The probe runs the very command
line ``bash`` uses (``sandbox_argv``) and checks what the sandbox holds: its host uid (never 0
when the worker is root), its uid map and its capabilities (none).

Here (not in ``worker/``) so that ``walrus doctor`` can report it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache

from walrus_tasks.config import BashConfig
from walrus_tasks.sandbox_argv import sandboxed
from walrus_tasks.settings import get_settings

PROBE_TIMEOUT = 10.0
"""Seconds the trial run of the sandbox may take."""
PROBE_FILE = ".walrus-probe"
PROBE_COMMAND = (
    f"cat /proc/self/uid_map && grep -E '^(Uid|CapEff):' /proc/self/status && : > {PROBE_FILE}"
)
"""What the trial run does inside: show its uid map, uids and capabilities; make a file."""


@dataclass(frozen=True)
class Sandbox:
    """The sandbox in force: ``bwrap`` (its path), ``none``, or ``unavailable``; and why."""

    kind: str
    detail: str
    bwrap: str = ""

    @property
    def refused(self) -> bool:
        """True when no sandbox can be built and none was chosen: bash refuses every command."""
        return self.kind == "unavailable"


def probe_bwrap(path: str, owner: tuple[int, int] | None) -> tuple[str, str]:
    """Run the sandbox of ``bash`` once with ``path`` as ``owner``: ``(why it fails, report)``.

    ``why`` is empty when the sandbox works and holds no host privilege; ``report`` says what
    it holds: the host uid its files get, its uid map, its effective capabilities.
    """
    with tempfile.TemporaryDirectory(prefix="walrus-probe-") as work:
        if owner is not None:
            os.chown(work, *owner)
        fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            argv = sandboxed(["bash", "-c", PROBE_COMMAND], path, fd, work, work, BashConfig(),
                             owner)  # fmt: skip
            done = subprocess.run(argv, capture_output=True, timeout=PROBE_TIMEOUT, check=False,
                                  cwd="/", pass_fds=(fd,), env={"PATH": os.defpath})  # fmt: skip
        except (OSError, subprocess.TimeoutExpired) as e:
            return str(e), ""
        finally:
            os.close(fd)
        out = done.stdout.decode(errors="replace")
        if done.returncode:
            err = done.stderr.decode(errors="replace").strip()
            return err or f"exit code {done.returncode}", ""
        host_uid = os.lstat(os.path.join(work, PROBE_FILE)).st_uid
    uid_map = " | ".join(" ".join(line.split()) for line in out.splitlines()[:-2])
    caps = re.search(r"^CapEff:\s*([0-9a-f]+)", out, re.M)
    report = f"host uid {host_uid}, uid_map {uid_map!r}, CapEff {caps[1] if caps else '?'}"
    if host_uid == 0:
        return f"its processes would run as host uid 0 ({report})", report
    if not caps or int(caps[1], 16):
        return f"its processes would keep capabilities ({report})", report
    return "", report


@lru_cache(maxsize=1)
def current() -> Sandbox:
    """The sandbox of this host under ``WALRUS_SANDBOX`` (probed once per process)."""
    wanted = get_settings().sandbox
    if wanted == "none":
        return Sandbox("none", "WALRUS_SANDBOX=none: bash runs unsandboxed, as the worker's user")
    path = shutil.which("bwrap")
    owner = _owner_if_root()
    why, report = probe_bwrap(path, owner) if path else ("bwrap is not on PATH", "")
    if not why:
        return Sandbox("bwrap", f"bubblewrap ({path}): {report}", bwrap=str(path))
    return Sandbox(
        "unavailable",
        f"WALRUS_SANDBOX={wanted} but the sandbox cannot run: {why}. bash refuses every "
        "command (install bubblewrap, e.g. apt install bubblewrap, and allow unprivileged user "
        "namespaces; or set WALRUS_SANDBOX=none to run bash unsandboxed)",
    )


def _owner_if_root() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    settings = get_settings()
    return settings.sandbox_uid, settings.sandbox_gid


def workspace_owner() -> tuple[int, int] | None:
    """The host ``(uid, gid)`` that ``bash`` runs as when it is not the worker's own user.

    A root worker drops ``bash`` to ``sandbox_uid``/``sandbox_gid`` (never host uid 0, which
    keeps every capability); what the file tools create must then belong to that user so a
    command can change it. ``None`` when bash runs as the worker's user (a non-root worker,
    or ``WALRUS_SANDBOX=none``).
    """
    if current().kind != "bwrap":
        return None
    return _owner_if_root()
