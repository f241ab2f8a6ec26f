"""``read``, ``write`` and ``edit``: files inside the conversation's working directory.

Every path is opened beneath the working directory's descriptor (``worker.tools.paths``): no
``..`` above it, no absolute path elsewhere, no symlink that leads out, not even one swapped in
while the call runs; everything after the open (size, type, link count, reading, writing) is
done on the descriptor. ``edit`` only changes a file the conversation has read or written, so
the model edits what it has seen: the real paths of the files read are a Redis SET of the
conversation.
"""

from __future__ import annotations

import codecs
import os
import stat
from typing import Any, BinaryIO

from walrus_tasks import keys
from walrus_tasks.sandbox import workspace_owner
from worker.providers.base import ToolSpec
from worker.tools.base import ToolContext, ToolFailed, arg, register, schema
from worker.tools.beneath import open_beneath
from worker.tools.paths import make_parents, refusal, relative, workspace

MAX_READ = 256 * 1024
"""Bytes ``read`` returns at most per call (the model pages on with ``offset``)."""
MAX_EDIT = 4 * 1024 * 1024
"""Largest file ``edit`` rewrites (it holds the whole file in memory)."""
SNIFF = 8192
"""Bytes at the start of a file that decide whether it is text."""
_CHUNK = 64 * 1024

_PATH = {"type": "string", "description": "file path, relative to the working directory"}


def read_set(ctx: ToolContext) -> str:
    """The conversation's SET of resolved paths it has read or written."""
    return keys.conv(keys.cid(ctx.agent.name, ctx.sender), "read")


@register(
    ToolSpec(
        name="read",
        description=(
            "Read a text file in the working directory. Returns its lines as they are; use "
            "offset (first line, 1-based) and limit (number of lines) for a part of a long "
            f"file. At most {MAX_READ // 1024} KiB per call; the output says where to continue. "
            "A file must be read before it can be edited."
        ),
        parameters=schema(
            {
                "path": _PATH,
                "offset": {"type": "integer", "minimum": 1, "description": "first line (1-based)"},
                "limit": {"type": "integer", "minimum": 1, "description": "lines to return"},
            },
            ["path"],
        ),
    )
)
def read(args: dict[str, Any], ctx: ToolContext) -> str:
    """The file's lines from ``offset``, at most ``limit`` of them and ``MAX_READ`` bytes."""
    raw = arg(args, "path", str)
    offset = arg(args, "offset", int, 1)
    limit = arg(args, "limit", int, None)
    if offset < 1 or (limit is not None and limit < 1):
        raise ToolFailed("offset and limit must be 1 or more")
    fd, path = _open_existing(ctx, raw, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        if _binary(f.read(SNIFF)):
            raise ToolFailed(f"{raw} is a binary file, not text; inspect it with bash instead")
        f.seek(0)
        if not _skip_lines(f, offset - 1):
            raise ToolFailed(f"offset {offset} is past the end of {raw}")
        data = f.read(MAX_READ + 1)
    ctx.redis.sadd(read_set(ctx), path)
    if not data:
        return f"({raw} is empty)" if offset == 1 else f"(no lines from line {offset} on)"
    truncated = len(data) > MAX_READ
    lines = _split_lines(data[:MAX_READ])
    if truncated and len(lines) > 1 and not lines[-1].endswith(b"\n"):
        lines.pop()  # show no half line: the next call starts at it
    more = limit is not None and len(lines) > limit
    lines = lines[:limit]
    text = b"".join(lines).decode("utf-8", errors="replace")
    last = offset + len(lines) - 1
    if truncated and not more and not lines[-1].endswith(b"\n"):
        text += f"\n[line {last} is cut at {MAX_READ // 1024} KiB]"
    elif truncated or more:
        text += f"\n[lines {offset}-{last} shown; more follow: continue with offset={last + 1}]"
    return text


@register(
    ToolSpec(
        name="write",
        description=(
            "Create or overwrite a file in the working directory with the given content "
            "(UTF-8). Parent directories are created."
        ),
        parameters=schema(
            {"path": _PATH, "content": {"type": "string", "description": "the whole new content"}},
            ["path", "content"],
        ),
    )
)
def write(args: dict[str, Any], ctx: ToolContext) -> str:
    """Write the whole file; it counts as read (the model knows its content)."""
    raw = arg(args, "path", str)
    data = _encode(arg(args, "content", str))
    rel = relative(ctx.cwd, raw)
    owner = workspace_owner()
    with workspace(ctx) as root:
        try:
            make_parents(root, rel, owner)
        except OSError as e:
            why = refusal(e, raw, ctx.cwd)
            raise ToolFailed(f"cannot create the directory of {raw}: {why}") from None
        fd = _open_for_write(ctx, root, rel, raw, owner)
    with os.fdopen(fd, "wb") as f:
        path = _real_path(f.fileno(), ctx, rel)
        f.truncate()
        f.write(data)
    ctx.redis.sadd(read_set(ctx), path)
    return f"wrote {len(data)} bytes to {raw}"


@register(
    ToolSpec(
        name="edit",
        description=(
            "Replace one exact occurrence of old_string with new_string in a file read (or "
            "written) earlier in this conversation. old_string must appear exactly once, "
            "whitespace included: add surrounding lines to make it unique."
        ),
        parameters=schema(
            {
                "path": _PATH,
                "old_string": {"type": "string", "description": "the exact text to replace"},
                "new_string": {"type": "string", "description": "the text to put in its place"},
            },
            ["path", "old_string", "new_string"],
        ),
    )
)
def edit(args: dict[str, Any], ctx: ToolContext) -> str:
    """Replace the unique ``old_string``; refuse files not read in this conversation."""
    raw = arg(args, "path", str)
    old = arg(args, "old_string", str)
    new = arg(args, "new_string", str)
    if not old:
        raise ToolFailed("old_string is empty; to write a whole file use write")
    if old == new:
        raise ToolFailed("old_string and new_string are the same: nothing to change")
    fd, path = _open_existing(ctx, raw, os.O_RDWR)
    # One descriptor from the check to the write: what was read is what is rewritten.
    with os.fdopen(fd, "r+b") as f:
        if not ctx.redis.sismember(read_set(ctx), path):
            raise ToolFailed(f"read {raw} first: edit only changes files read in this conversation")
        if os.fstat(fd).st_size > MAX_EDIT:
            raise ToolFailed(
                f"{raw} is larger than {MAX_EDIT // (1024 * 1024)} MiB; edit it with bash"
            )
        try:
            text = f.read().decode("utf-8")
        except UnicodeDecodeError:
            raise ToolFailed(f"{raw} is not UTF-8 text") from None
        count = _occurrences(text, old)
        if count == 0:
            raise ToolFailed(f"old_string not found in {raw}")
        if count > 1:
            raise ToolFailed(f"old_string appears {count} times in {raw}; give more context")
        f.seek(0)
        f.truncate()
        f.write(_encode(text.replace(old, new, 1)))
    return f"edited {raw}: replaced 1 occurrence"


def _open_existing(ctx: ToolContext, raw: str, flags: int) -> tuple[int, str]:
    """A descriptor of the regular file ``raw`` and its real path; ToolFailed otherwise."""
    rel = relative(ctx.cwd, raw)
    with workspace(ctx) as root:
        try:
            # O_NONBLOCK: a FIFO put there must not hang the call (a regular file ignores it).
            fd = open_beneath(root, rel, flags | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as e:
            raise refusal(e, raw, ctx.cwd) from None
    try:
        _check_regular(fd, raw)
    except ToolFailed:
        os.close(fd)
        raise
    return fd, _real_path(fd, ctx, rel)


def _open_for_write(
    ctx: ToolContext, root: int, rel: str, raw: str, owner: tuple[int, int] | None
) -> int:
    """A descriptor of ``rel`` to overwrite, made (and given to ``owner``) if it is missing.

    Not truncated: that waits for the link count check.
    """
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY
    created = False
    try:
        try:
            fd = open_beneath(root, rel, flags)
        except FileNotFoundError:
            try:
                fd = open_beneath(root, rel, flags | os.O_CREAT | os.O_EXCL)
                created = True
            except FileExistsError:  # a symlink inside to a missing file, or made meanwhile
                fd = open_beneath(root, rel, flags | os.O_CREAT)
                st = os.fstat(fd)
                created = st.st_size == 0 and st.st_uid == os.geteuid() and st.st_nlink == 1
    except OSError as e:
        raise refusal(e, raw, ctx.cwd) from None
    try:
        _check_regular(fd, raw)
        if created and owner is not None:
            os.fchown(fd, *owner)  # bash runs as this user: a later command may change the file
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_regular(fd: int, raw: str) -> None:
    """ToolFailed unless ``fd`` is a regular file with no other hard link."""
    st = os.fstat(fd)
    why = ""
    if stat.S_ISDIR(st.st_mode):
        why = f"{raw} is a directory; list it with bash (ls)"
    elif not stat.S_ISREG(st.st_mode):
        why = f"{raw} is not a regular file"
    elif st.st_nlink > 1:
        # A second hard link may be a file outside the working directory linked in: checked on
        # the open file, so no link made after a path check gets through.
        why = (
            f"{raw} has {st.st_nlink} hard links; refusing it (it may be a file outside the "
            "working directory); copy it with bash if you need it"
        )
    if why:
        raise ToolFailed(why)


def _real_path(fd: int, ctx: ToolContext, rel: str) -> str:
    """Where the open file is (its name in the conversation's read SET)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: the path as given names it well enough
        return os.path.normpath(os.path.join(ctx.cwd, rel))


def _binary(head: bytes) -> bool:
    """NUL bytes or invalid UTF-8 (a sequence cut by the sniff's end is fine)."""
    if b"\0" in head:
        return True
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return True
    return False


def _skip_lines(f: BinaryIO, count: int) -> bool:
    """Move ``f`` past ``count`` newlines; False if the file has fewer (or nothing after them)."""
    while count:
        block = f.read(_CHUNK)
        if not block:
            return False
        found = block.count(b"\n")
        if found < count:
            count -= found
            continue
        end = -1
        for _ in range(count):
            end = block.index(b"\n", end + 1)
        f.seek(end + 1 - len(block), os.SEEK_CUR)
        count = 0
    if f.read(1):
        f.seek(-1, os.SEEK_CUR)
        return True
    return f.tell() == 0  # an empty file has line 1 (empty), nothing else


def _split_lines(data: bytes) -> list[bytes]:
    """Lines cut after each newline (as ``_skip_lines`` counts them), newlines kept."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def _occurrences(text: str, old: str) -> int:
    """How often ``old`` occurs, overlaps included (``aa`` occurs twice in ``aaa``)."""
    count, at = 0, text.find(old)
    while at != -1:
        count, at = count + 1, text.find(old, at + 1)
    return count


def _encode(content: str) -> bytes:
    try:
        return content.encode("utf-8")
    except UnicodeEncodeError:
        raise ToolFailed("content is not valid Unicode text (lone surrogates)") from None
