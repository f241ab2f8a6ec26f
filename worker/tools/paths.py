"""Where a run works, and keeping every path a file tool touches inside it.

Paths are never checked as strings and opened later: the working directory is opened once per
call (resolved beneath the agent's own directory) and every path is opened beneath that
descriptor (``worker.tools.beneath``), so a symlink swapped in meanwhile cannot lead out.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.workspace import agent_workdir, conversation_cwd
from worker.tools.base import ToolContext, ToolFailed
from worker.tools.beneath import open_beneath


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


def relative(cwd: Path, raw: str) -> str:
    """``raw`` as a path relative to ``cwd``: an absolute one must name ``cwd`` or below.

    Only a translation: ``..`` and symlinks are left to ``open_beneath``, which refuses them
    where they lead out.
    """
    if not isinstance(raw, str) or not raw or "\0" in raw:
        raise ToolFailed("path must be a non-empty string")
    path = PurePosixPath(raw)
    if not path.is_absolute():
        return raw
    for base in (cwd, cwd.resolve()):
        with contextlib.suppress(ValueError):
            rest = str(path.relative_to(base))
            return rest + "/" if raw.endswith("/") and rest != "." else rest
    raise ToolFailed(f"path {raw!r} is outside the working directory {cwd}")


@contextlib.contextmanager
def workspace(ctx: ToolContext) -> Iterator[int]:
    """A descriptor of the working directory, resolved beneath the agent's own directory.

    The conversation's ``cwd`` is a subdirectory the agent's ``bash`` can swap for a symlink
    too; the agent's directory itself comes from the config. A ``cwd`` elsewhere (only tests
    build one) is opened as it is.
    """
    base = agent_workdir(ctx.agent, ctx.config)
    try:
        rest = str(ctx.cwd.relative_to(base))
    except ValueError:
        base, rest = ctx.cwd, "."
    flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        top = os.open(base, flags)
        try:
            fd = open_beneath(top, rest, flags) if rest != "." else os.dup(top)
        finally:
            os.close(top)
    except OSError as e:
        if e.errno == errno.EXDEV:
            raise ToolFailed(f"the working directory {ctx.cwd} leads outside {base}") from None
        raise ToolFailed(f"the working directory {ctx.cwd} does not exist") from None
    try:
        yield fd
    finally:
        os.close(fd)


def refusal(e: OSError, raw: str, cwd: Path) -> ToolFailed:
    """What the model reads when opening ``raw`` failed with ``e``."""
    if e.errno == errno.EXDEV:
        return ToolFailed(
            f"path {raw!r} is outside the working directory {cwd}: it leads out by '..', an "
            "absolute path or a symlink (only relative symlinks that stay inside are followed)"
        )
    why = {
        errno.ENOENT: f"{raw} does not exist",
        errno.EISDIR: f"{raw} is a directory; list it with bash (ls)",
        errno.ENOTDIR: f"a parent of {raw} is not a directory",
        errno.ELOOP: f"{raw} goes through too many symlinks",
        errno.ENXIO: f"{raw} is not a regular file",
        errno.EAGAIN: f"{raw} kept changing while being opened; try again",
    }.get(e.errno or 0)
    return ToolFailed(why or f"cannot open {raw}: {e.strerror}")


def make_parents(root: int, rel: str, owner: tuple[int, int] | None) -> None:
    """Create the missing directories of ``rel``'s parent beneath ``root`` (``mkdir -p``).

    Each is made with ``mkdirat`` in a parent opened beneath ``root`` and, when ``owner`` is
    set (bash runs as another user), given to that user so that a later command can change it.
    """
    parts = rel.split("/")[:-1]
    for i, name in enumerate(parts):
        if name in ("", ".", ".."):
            continue
        try:
            os.close(open_beneath(root, "/".join(parts[: i + 1]), os.O_PATH | os.O_DIRECTORY))
            continue
        except FileNotFoundError:
            pass
        parent = open_beneath(root, "/".join(parts[:i]) or ".", os.O_PATH | os.O_DIRECTORY)
        try:
            try:
                os.mkdir(name, 0o777, dir_fd=parent)
            except FileExistsError:
                continue  # made meanwhile; the next step opens whatever it is, beneath root
            if owner is not None:
                os.chown(name, *owner, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
