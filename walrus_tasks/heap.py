"""An opt-in tracemalloc of the gateway, for finding what each open stream holds.

``WALRUS_HEAP_DIR=/some/dir`` makes the gateway answer ``SIGUSR2``: the first signal starts
:mod:`tracemalloc` (``WALRUS_HEAP_FRAMES`` frames a trace, 8 by default), and each later one
writes ``<dir>/gateway-<pid>-<n>.heap``, a :class:`tracemalloc.Snapshot` of what was allocated
since the first and is still alive. Tracing from the first signal only keeps the start-up fast
and the snapshot to what came after it: ``python -m bench --only fanout --fanout-heap DIR``
signals just before its clients connect and again once they all are, and prints the top
entries per stream (:func:`top`; docs/benchmarks.md, "Issue 25, fourth round"). Unset (the
default), nothing is imported or installed: :func:`install` returns after one lookup.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

ENV = "WALRUS_HEAP_DIR"
"""The environment variable that turns the snapshots on and names their directory."""
FRAMES_ENV = "WALRUS_HEAP_FRAMES"
SIGNAL = signal.SIGUSR2


def install(name: str) -> bool:
    """Answer ``SIGUSR2`` as the module docstring says, if ``WALRUS_HEAP_DIR`` is set."""
    directory = os.environ.get(ENV)
    if not directory:
        return False
    import tracemalloc

    Path(directory).mkdir(parents=True, exist_ok=True)
    written = 0

    def on_signal(_signum: int, _frame: Any) -> None:
        nonlocal written
        if not tracemalloc.is_tracing():
            tracemalloc.start(int(os.environ.get(FRAMES_ENV, "8")))
            return
        written += 1
        path = Path(directory) / f"{name}-{os.getpid()}-{written}.heap"
        partial = path.with_suffix(".part")
        tracemalloc.take_snapshot().dump(str(partial))
        partial.rename(path)  # whole, or not there: a reader waits for the name

    signal.signal(SIGNAL, on_signal)
    return True


def top(path: Path, per: int, limit: int = 25) -> dict[str, Any]:
    """The largest entries of snapshot ``path`` by file and by line, in KB and KB per ``per``."""
    import tracemalloc

    snapshot = tracemalloc.Snapshot.load(str(path)).filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)]
    )

    def rows(key: str) -> list[dict[str, Any]]:
        return [
            {
                "where": _short(str(s.traceback[0])),
                "kb": round(s.size / 1024, 1),
                "kb_per": round(s.size / 1024 / per, 3),
                "count": s.count,
            }
            for s in snapshot.statistics(key)[:limit]
        ]

    total = sum(s.size for s in snapshot.statistics("filename"))
    return {
        "snapshot": str(path),
        "per": per,
        "total_kb": round(total / 1024, 1),
        "total_kb_per": round(total / 1024 / per, 2),
        "by_file": rows("filename"),
        "by_line": rows("lineno"),
    }


def _short(where: str) -> str:
    """``where`` from its package on: ``uvicorn/protocols/…:61``, ``asyncio/locks.py:168``."""
    for marker in ("/site-packages/", "/lib/python3."):
        if marker in where:
            rest = where.split(marker, 1)[1]
            return rest if marker == "/site-packages/" else rest.split("/", 1)[-1]
    root = str(Path(__file__).resolve().parents[1]) + "/"
    return where.removeprefix(root)
