"""walrus_tasks/timers.py: one thread per process runs the calls due, in order."""

from __future__ import annotations

import multiprocessing
import threading
import time

from walrus_tasks.timers import TIMERS, Timers


def test_calls_run_in_the_order_they_fall_due_on_one_thread() -> None:
    timers, seen, done = Timers(), [], threading.Event()
    threads: set[str] = set()

    def call(name: str) -> None:
        seen.append(name)
        threads.add(threading.current_thread().name)
        if len(seen) == 3:
            done.set()

    # Due times from one base, 0.1 s apart: how long the three calls take to schedule (a
    # loaded machine has taken over 20 ms between two) does not reorder them.
    base = time.monotonic()
    for name, at in (("c", 0.3), ("a", 0.1), ("b", 0.2)):
        timers.call_later(base + at - time.monotonic(), lambda name=name: call(name))
    assert done.wait(3)
    assert seen == ["a", "b", "c"] and threads == {"walrus-timers"}


def test_a_cancelled_call_never_runs_and_a_failing_one_stops_nothing() -> None:
    timers, seen, done, gate = Timers(), [], threading.Event(), threading.Event()
    # The timer thread is held until the cancel is made: on a loaded machine this thread may
    # otherwise stall past the call's due time before it cancels it (seen in make check).
    timers.call_later(0, lambda: gate.wait(2))
    handle = timers.call_later(0.02, lambda: seen.append("cancelled"))
    timers.cancel(handle)
    gate.set()
    timers.call_later(0.01, lambda: 1 / 0)
    timers.call_later(0.05, done.set)
    assert done.wait(2) and seen == []


def test_cancel_with_wait_returns_only_after_a_running_call_ended() -> None:
    timers, started, ended = Timers(), threading.Event(), []

    def slow() -> None:
        started.set()
        time.sleep(0.3)
        ended.append(time.monotonic())

    handle = timers.call_later(0, slow)
    assert started.wait(2)
    timers.cancel(handle, wait=5)
    assert ended, "cancel(wait=5) returned while the call was still running"


def _in_child(out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    done = threading.Event()
    TIMERS.call_later(0.01, done.set)
    out.put(done.wait(2))


def test_a_forked_child_runs_its_calls_on_a_thread_of_its_own() -> None:
    parent = threading.Event()
    TIMERS.call_later(0.01, parent.set)  # the parent's thread is running when the child forks
    assert parent.wait(2)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_in_child, args=(out,))
    child.start()
    try:
        assert out.get(timeout=10) is True
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
    assert child.exitcode == 0
