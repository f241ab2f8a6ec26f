"""The last step before a ``bash`` command's sandbox: limits, the workspace, the uid, then exec.

Run as a script (``python -I -S sandbox_exec.py [OPTIONS] -- ARGV...``), standard library only,
so it starts fast and imports nothing of walrus (``walrus doctor``'s probe runs it too). In order:

``--stage FD`` (root only)
    Enter a private mount namespace and bind the directory open on FD over ``STAGE``, then close
    FD. bubblewrap runs unprivileged and resolves its bind sources by path as the sandbox's uid,
    which cannot walk into the walrus home (it may be ``0700``); ``/mnt`` it can. The bind comes
    from the descriptor, so no symlink swapped into the path redirects it, and nothing changes
    on the host: neither the mount (private) nor any directory's permissions.
``--limit NAME=N`` (repeatable; NAME one of ``LIMITS``)
    Set the soft and hard resource limit: it holds for every process the command starts.
``--user UID:GID`` (root only)
    Drop every supplementary group, then the gid, then the uid (real, effective, saved): the
    sandbox then never holds host uid 0 nor any capability, and bubblewrap builds its user
    namespace unprivileged.

Any failure prints one line to stderr and exits 126: the command never runs half set up.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys

STAGE = "/mnt"
"""Where a root worker's launcher shows the workspace to bubblewrap (in its own mount namespace)."""
LIMITS = {
    "processes": resource.RLIMIT_NPROC,
    "address_space": resource.RLIMIT_AS,
    "file_size": resource.RLIMIT_FSIZE,
    "cpu_seconds": resource.RLIMIT_CPU,
    "open_files": resource.RLIMIT_NOFILE,
}
"""``--limit`` names (the fields of ``[bash.limits]``) and the resource each one sets."""
FAILED = 126

CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def stage(fd: int) -> None:
    """Bind the directory open on ``fd`` over ``STAGE`` in a new, private mount namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Private first: the bind below must never propagate to the host's mount table.
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "making / private")
    # The descriptor's mount belongs to the namespace left behind (the kernel refuses to bind
    # it): bind its path in this one, then check that what got bound is that very directory.
    source = os.readlink(f"/proc/self/fd/{fd}").encode()
    _check(libc.mount(source, STAGE.encode(), None, MS_BIND | MS_REC, None), f"bind on {STAGE}")
    want, got = os.fstat(fd), os.stat(STAGE)
    if (want.st_dev, want.st_ino) != (got.st_dev, got.st_ino):
        raise OSError(f"the workspace was replaced while it was bound on {STAGE}")
    os.close(fd)  # the command must not inherit a handle on the host's directory tree


def drop_to(uid: int, gid: int) -> None:
    """Become ``uid``/``gid`` for good: no supplementary group, all three ids of each."""
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid or os.getgroups():
        raise OSError(f"still uid {os.geteuid()} gid {os.getegid()} after dropping privileges")


def main(args: list[str]) -> int:
    """``[--stage FD] [--limit NAME=N]... [--user UID:GID] -- ARGV...``: set up, then exec ARGV."""
    try:
        sep = args.index("--")
    except ValueError:
        sep = -1
    options, argv = args[:sep], args[sep + 1 :]
    if sep < 0 or not argv or len(options) % 2:
        print("usage: sandbox_exec.py [--stage FD] [--limit NAME=N]... [--user UID:GID] -- ARGV",
              file=sys.stderr)  # fmt: skip
        return FAILED
    try:
        pairs = list(zip(options[::2], options[1::2], strict=True))
        unknown = {flag for flag, _ in pairs} - {"--stage", "--limit", "--user"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]}")
        for flag, value in pairs:  # the order of the docstring, whatever the order given
            if flag == "--stage":
                stage(int(value))
        for flag, value in pairs:
            if flag == "--limit":
                name, _, number = value.partition("=")
                resource.setrlimit(LIMITS[name], (int(number), int(number)))
        for flag, value in pairs:
            if flag == "--user":
                uid, _, gid = value.partition(":")
                drop_to(int(uid), int(gid))
        # Python ignores these two, and an ignored signal stays ignored across exec: a command
        # must die of a closed pipe (`yes | head`) and of a write past its file size limit.
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        os.execvp(argv[0], argv)
    except (OSError, ValueError, KeyError) as e:
        print(f"walrus sandbox: cannot start {argv[0]}: {e}", file=sys.stderr)
    return FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
