"""What ``bash`` runs in: a scrubbed environment, resource limits, and the bubblewrap sandbox.

The environment is an allow-list, never the worker's (it holds provider API keys and the
``WALRUS_*`` settings). The sandbox (``walrus_tasks.sandbox_argv``) binds the agent's workspace
*root* from a descriptor opened without following symlinks, and the command changes into the
conversation's directory inside the sandbox: a symlink swapped into that path meanwhile leads
at most to what the sandbox shows, never to the walrus home or another workspace. A root
worker's commands run as ``sandbox_uid`` (``walrus_tasks.sandbox.workspace_owner``), which then
owns the workspace root.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from walrus_tasks.config import BashConfig
from walrus_tasks.sandbox import Sandbox, workspace_owner
from walrus_tasks.sandbox_argv import launcher, sandboxed
from walrus_tasks.workspace import agent_workdir
from worker.tools.base import ToolContext, ToolFailed

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSED_ON = ("LANG", "LANGUAGE", "TZ")
"""Worker variables a command may see (locale and time zone only), with every ``LC_*``."""


@dataclass(frozen=True)
class Launch:
    """How to start one command: its argv, where to start it, its environment, fds to pass."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()


def command_env(
    cwd: Path, rules: BashConfig, extra: dict[str, str], uid: int | None = None
) -> dict[str, str]:
    """The environment of a command: the allow-list, then the agent's ``env``, then the call's."""
    user = _user(os.geteuid() if uid is None else uid)
    env = {
        "PATH": SAFE_PATH,
        "HOME": str(cwd),
        "PWD": str(cwd),
        "TERM": "dumb",
        "USER": user,
        "LOGNAME": user,
        "LANG": "C.UTF-8",
    }
    env.update((k, v) for k, v in os.environ.items() if k in PASSED_ON or k.startswith("LC_"))
    env.update(rules.env)
    env.update(extra)
    return env


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@contextlib.contextmanager
def launch(
    argv: list[str], ctx: ToolContext, sandbox: Sandbox, extra: dict[str, str]
) -> Iterator[Launch]:
    """``argv`` under the agent's limits, in ``sandbox`` unless it is ``none``.

    The workspace root's descriptor stays open while the caller starts the command (it is
    passed to the launcher) and is closed on leaving.
    """
    rules = ctx.agent.bash
    if sandbox.kind != "bwrap":  # WALRUS_SANDBOX=none: the host's directory, the worker's uid
        cwd = ctx.cwd.resolve()
        yield Launch([*launcher(rules.limits), *argv], cwd, command_env(cwd, rules, extra))
        return
    root = agent_workdir(ctx.agent, ctx.config).resolve()
    inside = root / relative_cwd(ctx.cwd, agent_workdir(ctx.agent, ctx.config))
    home = ctx.config.home.resolve()
    if root == home or root in home.parents:
        raise ToolFailed(
            f"bash refuses to run: the agent's working directory {root} holds the config "
            f"directory {home} (give the agent a workdir of its own)"
        )
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ToolFailed(f"cannot open the agent's directory {root}: {e.strerror}") from None
    try:
        owner = workspace_owner()
        if owner is not None:
            try:
                claim(fd, owner)
            except OSError as e:
                raise ToolFailed(f"cannot give {root} to the sandbox's uid: {e.strerror}") from None
        env = command_env(inside, rules, extra, owner[0] if owner else None)
        # The launcher starts in "/": it never depends on a path a command could swap.
        command = sandboxed(argv, sandbox.bwrap, fd, str(root), str(inside), rules, owner)
        yield Launch(command, Path("/"), env, (fd,))
    finally:
        os.close(fd)


def relative_cwd(cwd: Path, root: Path) -> Path:
    """``cwd`` relative to the workspace ``root``, as spelled (it is followed inside the sandbox).

    The worker built ``cwd`` inside ``root`` (``working_directory``); spelled through the root's
    real path it is found by resolving. ToolFailed when it is neither.
    """
    spelled = Path(os.path.normpath(cwd))
    for base in (root, root.resolve()):
        with contextlib.suppress(ValueError):
            return spelled.relative_to(base)
    with contextlib.suppress(ValueError, OSError):  # OSError: a symlink loop, mid-swap
        return cwd.resolve().relative_to(root.resolve())
    raise ToolFailed(f"the working directory {cwd} is outside the agent's directory {root}")


def claim(fd: int, owner: tuple[int, int]) -> None:
    """Make the directory open on ``fd`` belong to ``owner`` (read, write, search for it).

    Only the root: what is already in it keeps its owner (a recursive chown by root in a tree
    a command can change is a symlink race waiting to happen); the file tools give what they
    create to the same owner.
    """
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) != owner:
        os.fchown(fd, *owner)
    if st.st_mode & 0o700 != 0o700:
        os.fchmod(fd, (st.st_mode & 0o7777) | 0o700)
