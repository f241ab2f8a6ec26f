"""The supervisor of one ``bash`` call: it ends the command's whole process tree, whatever happens.

Run as a script (``python -I -S supervise.py STATUS_FD DEADLINE -- ARGV...``, standard library
only, so it starts fast and imports nothing of the worker). It starts ARGV in a session of its
own and is its *child subreaper*, so every process the command starts stays its descendant
(``setsid`` children and double-forked daemons included). It kills all of them when:

- the command exits (its leftovers: background jobs, daemons),
- the worker writes ``kill`` on stdin (a timeout or a kill of the run: SIGTERM, then SIGKILL),
- the worker's stdin closes (the worker died),
- the lease deadline passes without a newer one on stdin (the worker is frozen or cut off from
  Redis). Each line on stdin is the ``time.monotonic()`` by which the run's lease expires; the
  clock is the host's, shared by both processes. The conversation is only taken over after that
  deadline plus a reaper sweep, so the command is dead before anybody runs the call again.

Its last act is one status line on STATUS_FD: ``exit N``, ``signal N``, ``killed``, ``expired``
or ``orphaned``. Its own exit code is 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
TERM_GRACE = 0.5
"""Seconds a killed command gets to exit on SIGTERM before the whole tree gets SIGKILL."""
KILL_MARGIN = 0.25
"""Seconds before the lease deadline at which the tree is killed (killing takes a moment)."""
REAP_LIMIT = 10.0
"""Seconds spent killing and reaping before giving up on a process that will not die."""


def become_subreaper() -> None:
    """Make orphaned descendants reparent to this process instead of to init."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")


def descendants(root: int) -> list[int]:
    """Every live descendant of ``root``, found by walking ``/proc`` (parents before children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        # The name (field 2) may hold spaces and parentheses: the fields follow the last ')'.
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def signal_tree(sig: int) -> None:
    """Send ``sig`` to every descendant of this process."""
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


class Supervisor:
    """The command's process, its exit status, and the lease deadline it must not outlive."""

    def __init__(self, argv: list[str], deadline: float) -> None:
        self.deadline = deadline
        self.status: int | None = None
        self.terminated = False
        self.pid = self._spawn(argv)

    @staticmethod
    def _spawn(argv: list[str]) -> int:
        pid = os.fork()
        if pid == 0:  # the child: its own session, stdin empty, stdout/stderr inherited
            try:
                os.setsid()
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.execvp(argv[0], argv)
            except OSError as e:
                os.write(2, f"cannot start {argv[0]}: {e}\n".encode())
            os._exit(127)
        return pid

    def terminate(self, *_: object) -> None:
        """SIGTERM handler: end the command as if the worker had said ``kill``."""
        self.terminated = True

    def reap(self) -> bool:
        """Reap every exited child; True while any child is left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.pid:
                self.status = status

    def watch(self, wakeup: int) -> str:
        """Wait for the command to end or for a reason to end it; the reason (not yet acted on)."""
        with selectors.DefaultSelector() as sel:
            sel.register(0, selectors.EVENT_READ)
            sel.register(wakeup, selectors.EVENT_READ)
            pending = b""
            while True:
                self.reap()
                if self.status is not None:
                    return "exit"
                if self.terminated:
                    return "killed"
                left = self.deadline - KILL_MARGIN - time.monotonic()
                if left <= 0:
                    return "expired"
                for key, _ in sel.select(None if left == float("inf") else left):
                    if key.fd == wakeup:
                        with contextlib.suppress(BlockingIOError):
                            os.read(wakeup, 512)
                        continue
                    data = os.read(0, 4096)
                    if not data:
                        return "orphaned"
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip() == b"kill":
                            return "killed"
                        if line.strip():
                            self.deadline = float(line)

    def end(self, reason: str) -> None:
        """Kill every descendant (the command first gets SIGTERM if it was killed) and reap all."""
        if reason == "killed" and self.status is None:
            signal_tree(signal.SIGTERM)
            give_up = time.monotonic() + TERM_GRACE
            while self.reap() and self.status is None and time.monotonic() < give_up:
                time.sleep(0.01)
        give_up = time.monotonic() + REAP_LIMIT
        # Kill, reap, repeat: a child forked during the sweep is reparented here and found on
        # the next pass. No child left means no descendant left.
        while time.monotonic() < give_up:
            signal_tree(signal.SIGKILL)
            if not self.reap():
                return
            time.sleep(0.005)

    def outcome(self, reason: str) -> str:
        """The status line: how the command ended."""
        if reason != "exit" or self.status is None:
            return reason
        if os.WIFSIGNALED(self.status):
            return f"signal {os.WTERMSIG(self.status)}"
        return f"exit {os.waitstatus_to_exitcode(self.status)}"


def main(args: list[str]) -> int:
    """``STATUS_FD DEADLINE -- ARGV...``: run ARGV under supervision; report on STATUS_FD."""
    status_fd, deadline, sep, *argv = args
    if sep != "--" or not argv:
        raise SystemExit("usage: supervise.py STATUS_FD DEADLINE -- ARGV...")
    os.set_inheritable(int(status_fd), False)
    become_subreaper()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the select
    supervisor = Supervisor(argv, float(deadline))
    # Terminated itself (a shutdown), it must not leave the tree behind.
    signal.signal(signal.SIGTERM, supervisor.terminate)
    reason = supervisor.watch(wake_r)
    supervisor.end(reason)
    os.write(int(status_fd), (supervisor.outcome(reason) + "\n").encode())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
