"""The command line of a ``bash`` call: the launcher (limits, uid), bubblewrap, the command.

Here (not in ``worker/``) so that ``walrus doctor`` probes exactly what ``bash`` runs. The
bubblewrap sandbox shows the command the workspace root (read-write, bound from an open
descriptor), the system (``/usr``, ``/etc``, read-only), a private ``/tmp`` and ``/dev/shm``,
``/proc`` and ``/dev``, and nothing else: not the config directory, not other workspaces, not
``/home``.
"""

from __future__ import annotations

import os
import sys

from walrus_tasks import sandbox_exec
from walrus_tasks.config import BashConfig, BashLimits

SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Top-level directories bound read-only (or recreated as the symlinks into /usr they are)."""
HIDDEN_ETC = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
"""Files of /etc replaced by an empty file (the sandbox's uid cannot read them anyway)."""


def launcher(
    limits: BashLimits, owner: tuple[int, int] | None = None, stage_fd: int | None = None
) -> list[str]:
    """The launcher's command line up to ``--``: stage the workspace, set limits, drop to owner."""
    out = [sys.executable, "-I", "-S", sandbox_exec.__file__]
    if stage_fd is not None:
        out += ["--stage", str(stage_fd)]
    for name in sandbox_exec.LIMITS:
        out += ["--limit", f"{name}={getattr(limits, name)}"]
    if owner is not None:
        out += ["--user", f"{owner[0]}:{owner[1]}"]
    return [*out, "--"]


def bwrap_options(
    bwrap: str, root_fd: int, root: str, cwd: str, rules: BashConfig, staged: bool
) -> list[str]:
    """The bubblewrap part of the command line, up to ``--``.

    The workspace root (open on ``root_fd``) appears at ``root``: from ``STAGE`` when a root
    worker's launcher staged it there, else straight from the descriptor (``--bind-fd``, which
    bubblewrap checks against a swap). The command starts in ``cwd``, resolved *inside* the
    sandbox: a symlink swapped into it leads at most to what the sandbox shows.
    """
    out = [bwrap, "--unshare-user", "--disable-userns", "--ro-bind", "/usr", "/usr"]
    for top in SYSTEM_DIRS:
        if os.path.islink(top):
            out += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            out += ["--ro-bind", top, top]
    out += ["--ro-bind", "/etc", "/etc"]
    for secret in HIDDEN_ETC:
        if os.path.exists(secret):
            out += ["--ro-bind", os.devnull, secret]
    # The tmpfs mounts hold RAM: each is bounded (by file_size), and /dev is read-only (its
    # device nodes still work) but for a bounded /dev/shm.
    size = ["--size", str(rules.limits.file_size)]
    out += [*size, "--tmpfs", "/tmp", "--proc", "/proc"]
    out += ["--dev", "/dev", "--remount-ro", "/dev", *size, "--tmpfs", "/dev/shm"]
    # After /tmp: a workspace under /tmp is bound on top of the fresh one.
    if staged:
        out += ["--bind", sandbox_exec.STAGE, root]
    else:
        out += ["--bind-fd", str(root_fd), root]
    out += ["--chdir", cwd]
    out += ["--remount-ro", "/"]  # the sandbox's own root: only the workspace and /tmp take writes
    out += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"]
    out += ["--new-session"]  # no TIOCSTI into a terminal the worker may have
    if not rules.network:
        out.append("--unshare-net")
    return [*out, "--"]


def sandboxed(
    argv: list[str],
    bwrap: str,
    root_fd: int,
    root: str,
    cwd: str,
    rules: BashConfig,
    owner: tuple[int, int] | None,
) -> list[str]:
    """``argv`` run in bubblewrap as ``owner`` (None: the worker's own uid, not root)."""
    staged = owner is not None
    head = launcher(rules.limits, owner, root_fd if staged else None)
    return [*head, *bwrap_options(bwrap, root_fd, root, cwd, rules, staged), *argv]
