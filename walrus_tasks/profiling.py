"""An opt-in cProfile of a whole process, for finding where the hot path spends its time.

``WALRUS_PROFILE_DIR=/some/dir`` makes the gateway, a worker's parent and each prefork pool
process profile themselves with :mod:`cProfile` from their start and write
``<dir>/<name>-<pid>.prof`` as they stop (the gateway after uvicorn returns from a SIGTERM; a
pool process on Celery's ``worker_process_shutdown``; any of them at interpreter exit). Read
the files with :mod:`pstats` (docs/benchmarks.md, "Where the time goes"). Unset (the default),
nothing is imported or started: :func:`start` returns after one environment lookup.
``WALRUS_PROFILE_CLOCK=cpu`` times each call on the thread's CPU clock (``time.thread_time``)
instead of the wall clock, so waits on sockets and pipes drop out and what is left is CPU.
"""

from __future__ import annotations

import atexit
import os
import signal
from pathlib import Path
from typing import Any

ENV = "WALRUS_PROFILE_DIR"
"""The environment variable that turns profiling on and names the directory of the dumps."""
CLOCK_ENV = "WALRUS_PROFILE_CLOCK"
"""``cpu`` for the thread's CPU clock; anything else (the default) for the wall clock."""

_profiler: Any = None
_name = ""


def start(name: str) -> bool:
    """Profile this process from now on as ``name`` if ``WALRUS_PROFILE_DIR`` is set."""
    global _profiler, _name
    directory = os.environ.get(ENV)
    if not directory:
        return False
    import cProfile

    if _profiler is not None:  # a forked pool process: drop the parent's profile
        _profiler.disable()
    Path(directory).mkdir(parents=True, exist_ok=True)
    _name = name
    if os.environ.get(CLOCK_ENV) == "cpu":
        import time

        _profiler = cProfile.Profile(time.thread_time)
    else:
        _profiler = cProfile.Profile()
    _profiler.enable()
    atexit.register(dump)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # uvicorn re-raises the SIGTERM it stopped on once it has shut down: dump, then die of it.
        signal.signal(signal.SIGTERM, _dump_and_die)
    return True


def _dump_and_die(signum: int, _frame: Any) -> None:
    dump()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def dump() -> None:
    """Stop the profile and write it (once; later calls do nothing)."""
    global _profiler
    profiler, _profiler = _profiler, None
    if profiler is None:
        return
    profiler.disable()
    profiler.dump_stats(str(Path(os.environ[ENV]) / f"{_name}-{os.getpid()}.prof"))


def on_worker_process_init() -> None:
    """Profile each prefork pool process from its start to its shutdown (when switched on)."""
    if not os.environ.get(ENV):
        return
    from celery.signals import worker_process_init, worker_process_shutdown

    worker_process_init.connect(lambda **_: start("worker-child"), weak=False)
    worker_process_shutdown.connect(lambda **_: dump(), weak=False)
