"""An opt-in cProfile of a whole process, for finding where the hot path spends its time.

``WALRUS_PROFILE_DIR=/some/dir`` makes the gateway, a worker's parent and each prefork pool
process profile themselves with :mod:`cProfile` from their start and write
``<dir>/<name>-<pid>.prof`` as they stop (the gateway after uvicorn returns from a SIGTERM; a
pool process on Celery's ``worker_process_shutdown``; any of them at interpreter exit). Read
the files with :mod:`pstats` (docs/benchmarks.md, "Where the time goes"). Unset (the default),
nothing is imported or started: :func:`start` returns after one environment lookup.
``WALRUS_PROFILE_CLOCK=cpu`` times each call on the thread's CPU clock (``time.thread_time``)
instead of the wall clock, so waits on sockets and pipes drop out and what is left is CPU.

cProfile's cost is per call, so it inflates code made of many small calls (redis-py's argument
encoding, say) against code that calls into C once. ``WALRUS_PROFILE_CLOCK=samples`` profiles
statistically instead: ``SIGPROF`` every millisecond of the process's CPU (the kernel checks
CPU timers once a tick, so at most ``HZ`` a second: 250 here) samples the main thread's stack,
written as folded stacks to ``<dir>/<name>-<pid>.folded`` (one ``frame;frame count`` line
each: flamegraph.pl and speedscope read it; ``python -m walrus_tasks.profiling <file>...``
prints the top entries). A sample falls on the main thread's stack whichever thread spent the
CPU, at the next bytecode boundary after the tick.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

ENV = "WALRUS_PROFILE_DIR"
"""The environment variable that turns profiling on and names the directory of the dumps."""
CLOCK_ENV = "WALRUS_PROFILE_CLOCK"
"""``cpu`` for the thread's CPU clock, ``samples`` for a sampled profile; else the wall clock."""
SAMPLE_EVERY = 0.001
"""Seconds of the process's CPU between two samples (``WALRUS_PROFILE_CLOCK=samples``)."""

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
    clock = os.environ.get(CLOCK_ENV)
    if clock == "samples":
        _profiler = Sampler(SAMPLE_EVERY)
    elif clock == "cpu":
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
    suffix = "folded" if isinstance(profiler, Sampler) else "prof"
    profiler.dump_stats(str(Path(os.environ[ENV]) / f"{_name}-{os.getpid()}.{suffix}"))


class Sampler:
    """The main thread's stack, counted every ``every`` seconds of the process's CPU."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.stacks: Counter[tuple[str, ...]] = Counter()
        self._labels: dict[CodeType, str] = {}

    def enable(self) -> None:
        """Start the timer (``ITIMER_PROF``: the process's user and system CPU)."""
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.every, self.every)

    def disable(self) -> None:
        """Stop the timer; a tick already pending is ignored."""
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_IGN)

    def _sample(self, _signum: int, frame: FrameType | None) -> None:
        labels, stack = self._labels, []
        while frame is not None:
            code = frame.f_code
            label = labels.get(code)
            if label is None:
                label = labels[code] = _label(code)
            stack.append(label)
            frame = frame.f_back
        stack.reverse()
        self.stacks[tuple(stack)] += 1

    def dump_stats(self, path: str) -> None:
        """Folded stacks, the outermost frame first: ``a;b;c 12``."""
        lines = [";".join(stack) + f" {n}" for stack, n in self.stacks.most_common()]
        Path(path).write_text("\n".join(lines) + "\n" if lines else "")


def _label(code: CodeType) -> str:
    """``function (file.py:line)``, the file's name relative to its package's parent."""
    filename = code.co_filename
    parts = Path(filename).parts
    if "site-packages" in parts:
        filename = "/".join(parts[parts.index("site-packages") + 1 :])
    elif len(parts) > 2:
        filename = "/".join(parts[-2:])
    return f"{code.co_qualname} ({filename}:{code.co_firstlineno})".replace(";", ",")


def top(paths: list[str], n: int = 25) -> str:
    """The functions most often on the CPU (self) and on the stack (total) in folded files."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for path in paths:
        for line in Path(path).read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames, k = stack.split(";"), int(count)
            samples += k
            own[frames[-1]] += k
            for frame in set(frames):
                total[frame] += k
    out = [f"{samples} samples"]
    for title, counts in (("self", own), ("total", total)):
        out.append(f"\n{title:>6} %  function")
        for frame, k in counts.most_common(n):
            out.append(f"{100 * k / max(samples, 1):8.1f}  {frame}")
    return "\n".join(out)


if __name__ == "__main__":
    print(top(sys.argv[1:]))


def on_worker_process_init() -> None:
    """Profile each prefork pool process from its start to its shutdown (when switched on)."""
    if not os.environ.get(ENV):
        return
    from celery.signals import worker_process_init, worker_process_shutdown

    worker_process_init.connect(lambda **_: start("worker-child"), weak=False)
    worker_process_shutdown.connect(lambda **_: dump(), weak=False)
