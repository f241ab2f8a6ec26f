"""Opening a path beneath a directory descriptor, never following a symlink out of it.

A path checked as a string and opened later can be changed in between: the agent's own
``bash`` can swap a parent directory for a symlink to anywhere (``renameat2(RENAME_EXCHANGE)``
in a loop), and ``O_NOFOLLOW`` only covers the last component. So every component is resolved
from the working directory's descriptor, at the moment of the open:

- ``openat2`` with ``RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`` (Linux 5.6+): the kernel walks
  the path and fails with ``EXDEV`` where it would leave the directory (``..`` above it, an
  absolute path or an absolute symlink, a relative symlink that climbs out).
- else a walk: one ``openat(O_NOFOLLOW)`` per component from the descriptor, ``..`` goes back
  to the descriptor it came from (never above the start), and a symlink is read
  (``readlinkat``) and its relative target walked the same way; an absolute one is ``EXDEV``.

Both follow symlinks that stay inside, refuse those that lead out, and raise ``OSError`` (the
callers turn it into what the model reads). ``WALRUS_PATHS_RESOLVE=walk`` forces the walk.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections import deque

from walrus_tasks.settings import get_settings

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
"""From ``linux/openat2.h``."""
SYS_OPENAT2 = {"x86_64": 437, "amd64": 437, "aarch64": 437, "arm64": 437}
"""The syscall number where we know it (one number on every architecture but alpha and ia64)."""
MAX_LINKS = 40
"""Symlinks one walk follows before ``ELOOP`` (the kernel's limit)."""
RETRIES = 16
"""``openat2`` answers ``EAGAIN`` when a rename raced its ``..``: tries before giving up."""


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_missing = SYS_OPENAT2.get(platform.machine().lower()) is None
"""True once the kernel said ENOSYS (or the architecture is unknown): walk from then on."""


def open_beneath(dirfd: int, path: str, flags: int, mode: int = 0o666) -> int:
    """A descriptor of ``path`` resolved beneath ``dirfd`` (``EXDEV`` where it would leave it).

    ``flags`` are ``os.open``'s (``O_CLOEXEC`` is added); symlinks inside are followed.
    """
    flags |= os.O_CLOEXEC
    if get_settings().paths_resolve == "auto" and not _missing:
        fd = _openat2(dirfd, path, flags, mode)
        if fd is not None:
            return fd
    return walk(dirfd, path, flags, mode)


def kernel_resolves() -> bool:
    """True when ``open_beneath`` uses ``openat2`` (as far as known before the first call)."""
    return get_settings().paths_resolve == "auto" and not _missing


def _openat2(dirfd: int, path: str, flags: int, mode: int) -> int | None:
    """The descriptor; None when the kernel has no ``openat2`` (then the caller walks)."""
    global _missing
    tmpfile = getattr(os, "O_TMPFILE", 0)  # which holds O_DIRECTORY: test all of its bits
    creating = flags & os.O_CREAT or (tmpfile and flags & tmpfile == tmpfile)
    how = _OpenHow(flags, mode if creating else 0, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    number = SYS_OPENAT2[platform.machine().lower()]
    raw = os.fsencode(path)
    err = errno.EAGAIN
    for _ in range(RETRIES):
        fd = _libc.syscall(
            ctypes.c_long(number),
            ctypes.c_int(dirfd),
            ctypes.c_char_p(raw),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        err = ctypes.get_errno()
        if err == errno.ENOSYS:
            _missing = True
            return None
        if err not in (errno.EAGAIN, errno.EINTR):
            break
    raise OSError(err, os.strerror(err), path)


def walk(dirfd: int, path: str, flags: int, mode: int = 0o666) -> int:
    """``open_beneath`` without the kernel's help: one component at a time, as described above."""
    if path.startswith("/"):
        raise OSError(errno.EXDEV, "an absolute path leads out", path)
    if path.endswith("/"):  # as the kernel: a trailing slash names a directory
        if flags & os.O_CREAT:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        flags |= os.O_DIRECTORY
    parts = deque(_components(path))
    held: list[int] = []  # the directories walked into; held[-1] is the current one
    links = 0
    try:
        while True:
            here = held[-1] if held else dirfd
            if not parts:  # the path named the start, or walked back to a directory
                return os.open(".", flags, mode, dir_fd=here)
            name = parts.popleft()
            if name == "..":
                if not held:
                    raise OSError(errno.EXDEV, "'..' leads out", path)
                os.close(held.pop())
                continue
            last = not parts
            step = flags | os.O_NOFOLLOW if last else os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
            try:
                fd = os.open(name, step | os.O_CLOEXEC, mode, dir_fd=here)
            except OSError as e:
                # A symlink: ELOOP (O_NOFOLLOW), or ENOTDIR (O_PATH opens the link, not a dir).
                target = _link(name, here) if e.errno in (errno.ELOOP, errno.ENOTDIR) else None
                if target is None:
                    raise
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path) from None
                if target.startswith("/"):
                    raise OSError(errno.EXDEV, "an absolute symlink leads out", path) from None
                parts.extendleft(reversed(_components(target)))
                continue
            if last:
                return fd
            held.append(fd)
    finally:
        for fd in held:
            os.close(fd)


def _components(path: str) -> list[str]:
    return [c for c in path.split("/") if c not in ("", ".")]


def _link(name: str, dirfd: int) -> str | None:
    """The target of the symlink ``name`` in ``dirfd``; None if it is not one (any more)."""
    try:
        return os.readlink(name, dir_fd=dirfd)
    except OSError:
        return None
