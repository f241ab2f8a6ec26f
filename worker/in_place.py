"""A run task starts its conversation's next run itself while its slice lasts.

When a run ends and its conversation has a message queued, ``finish.lua`` starts the next run
and ``runtime.finish`` sends that run's step 0 as a task of its own. A drain or step task
whose slice (``WALRUS_NEXT_RUN_IN_PLACE_MS`` from the task's start) has not run out takes that
step instead, claimed by the script that ended the run (``runs.finish``'s ``first``; on a
cluster it is claimed apart), and runs it after the step that ended the run
(``runtime.run_taken``): no task message, and none of the consumer's work for one (its fetch,
its bookkeeping and its events cost a worker more CPU than a short run's own step). A run
slower than the slice, as a real model's runs are, is sent as before, so the conversation goes
to the back of the queue between runs and a long backlog holds a pool process for at most one
slice and one run.

A run taken and not run (the task failed first) is sent when the slice ends: every next
run is run here or sent, never neither (docs/design.md, invariant 28). A step run in place
shares its task's Celery time limits, which count from the task's start: it has at most one
slice less of them than a task of its own would give it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from walrus_tasks.celery_app import send_step
from walrus_tasks.lease import Fence
from walrus_tasks.settings import get_settings

if TYPE_CHECKING:
    from walrus_tasks.runs import StepStart
    from worker.runtime import Attempt

    Begun = tuple[Attempt, StepStart]

log = logging.getLogger("walrus.run")


@dataclass
class Slice:
    """One task's time to run its conversation's next runs itself."""

    until: float
    """``time.monotonic()`` past which a next run is sent, not taken."""
    taken: tuple[Fence, Begun | None] | None = None
    """The next run taken and not run yet, with its step 0's claim if made."""
    ran: list[str] = field(default_factory=list)
    """The runs this task ran in place, in order (its result names them, for Flower)."""

    @property
    def result(self) -> str:
        """What the task's result says of them: ``then in place <run id> …``."""
        return "then in place " + " ".join(self.ran)


_SLICE: ContextVar[Slice | None] = ContextVar("walrus_in_place_slice", default=None)


@contextmanager
def task_slice() -> Iterator[Slice]:
    """The slice of a drain or step task, from now; sends whatever it took and did not run."""
    ms = get_settings().next_run_in_place_ms
    held = Slice(time.monotonic() + ms / 1000)
    reset = _SLICE.set(held)
    try:
        yield held
    finally:
        _SLICE.reset(reset)
        if held.taken is not None:  # the task failed before it ran it: queue it as before
            send_queued(held.taken[0])


def wants() -> bool:
    """Whether the current task would take a next run now (its end then claims its step 0)."""
    held = _SLICE.get()
    return held is not None and held.taken is None and time.monotonic() < held.until


def take(fence: Fence, begun: Begun | None = None) -> bool:
    """Whether the current task takes the next run ``fence`` (else its caller sends it).

    A run whose step 0 was claimed for this task (``begun``, asked for when :func:`wants`
    said so) is taken whatever the time: the claim is this task's.
    """
    held = _SLICE.get()
    if held is None or held.taken is not None:
        return False
    if begun is None and time.monotonic() >= held.until:
        return False
    held.taken = (fence, begun)
    return True


def send_queued(fence: Fence) -> None:
    """Send step 0 of the next run ``fence`` as its own task (a failure is the reaper's)."""
    try:
        send_step(fence, 0)
    except Exception:  # its lease, in the dispatch grace, expires and the reaper resumes it
        log.exception("step 0 of run %s not sent; the reaper will resume it", fence.run_id)
