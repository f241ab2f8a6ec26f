"""Children that die with their parent: Linux's ``PR_SET_PDEATHSIG``, set between fork and exec.

``walrus up`` starts Redis, the gateway, workers and beat in sessions of their own (so a
terminal's Ctrl-C reaches only it). If it is itself killed with SIGKILL (the OOM killer does
that) nothing would stop them: an embedded ``redis-server`` kept its port. The kernel sends the
signal asked for here when the thread that forked the child exits, so children must be started
from a thread that lives as long as their parent (the main thread).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from functools import lru_cache

PR_SET_PDEATHSIG = 1
"""``prctl`` option: the signal this process gets when its parent (thread) exits."""


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    """libc, loaded in the parent: a forked child of a threaded process must not dlopen."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get ``sig`` when this process dies; None off Linux.

    The child exits at once if its parent is already gone when it runs (the race between fork
    and ``prctl``).
    """
    libc = _libc()
    if libc is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec
