"""One timer thread per process: calls due at a time, in order, instead of a thread each.

A step's lease keeper (``walrus_tasks.lease``) and its chunk flusher (``worker.chunks``) each
started a thread per task and joined it at the end: two thread starts per run, about a tenth
of a millisecond of CPU each (docs/benchmarks.md, "Where the time goes"). Both now schedule
their work here. Calls run one at a time on the timer thread, so a call must be short (one
Redis round trip) and must never wait for another timer call.

``cancel(handle, wait=seconds)`` returns once the call is neither pending nor running (or
the seconds passed): what a lease keeper needs so that nothing renews the lease after its task
ended. A forked child
(Celery's prefork pool) starts a thread of its own on first use.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger("walrus.timers")


@dataclass(order=True)
class Handle:
    """A scheduled call: ``cancel(handle)`` stops it."""

    when: float
    seq: int
    fn: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)


class Timers:
    """The process's timer thread and its queue of calls (``call_later``, ``cancel``)."""

    def __init__(self) -> None:
        self._seq = itertools.count()
        self._reset()

    def _reset(self) -> None:
        """Empty, with no thread: at start, and in a forked child.

        The parent's thread, and any lock it held at the fork, did not come along.
        """
        self._cond = threading.Condition()
        self._queue: list[Handle] = []
        self._running: Handle | None = None
        self._thread: threading.Thread | None = None

    def call_later(self, delay: float, fn: Callable[[], object]) -> Handle:
        """Call ``fn`` on the timer thread ``delay`` seconds from now."""
        handle = Handle(time.monotonic() + delay, next(self._seq), fn)
        with self._cond:
            if self._thread is None:  # first use in this process (or in a forked child)
                self._thread = threading.Thread(
                    target=self._loop, name="walrus-timers", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._queue, handle)
            if self._queue[0] is handle:
                self._cond.notify()
        return handle

    def cancel(self, handle: Handle | None, wait: float = 0) -> None:
        """Stop ``handle``'s call if it has not started; wait up to ``wait`` s if it is running.

        ``wait`` must not be used while holding a lock the call takes (from the call itself it
        does not wait).
        """
        if handle is None:
            return
        deadline = time.monotonic() + wait
        with self._cond:
            handle.cancelled = True
            while self._running is handle and threading.current_thread() != self._thread:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)

    def _loop(self) -> None:
        with self._cond:
            while True:
                if not self._queue:
                    self._cond.wait()
                    continue
                due = self._queue[0]
                wait = due.when - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._queue)
                if due.cancelled:
                    continue
                self._running = due
                self._cond.release()
                try:
                    due.fn()
                except Exception:  # one caller's bug must not stop every other caller's timers
                    log.exception("timer call %r failed", due.fn)
                finally:
                    self._cond.acquire()
                    self._running = None
                    self._cond.notify_all()


TIMERS = Timers()
"""This process's timers."""
os.register_at_fork(after_in_child=TIMERS._reset)
