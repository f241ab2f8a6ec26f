"""Writing a stream's frames a burst at a time: what its generator gives without waiting.

A run's events reach a stream in bursts: one ``XREAD`` reply of the hub can hold several entries
(``emit.lua`` writes a text's ``text_start`` and its first ``chunk`` in one step; a client that
fell behind, or resumed, has many), and each face turns an entry into frames without waiting.
Written one ``send`` each, every frame costs the gateway a write to its socket, the costliest
call of its profile under the latency phase (docs/benchmarks.md, issue 25, ninth round), and a
first chunk reaches its client one write after its ``text_start``.

:class:`gateway.sse.EventStream` takes from the frames' generator whatever it gives without
waiting, and writes it in one piece when the generator is about to wait (or ends, or past
:data:`BURST_MAX`); the last piece goes with the end of the body. No frame is held while the
generator waits, so no frame is later than it was.

How it knows: it runs the generator's next step itself (:func:`step`: ``asend(None).send(None)``,
as the event loop's task would). A step that gives a frame ends at once; a step that must wait
hands back what it waits on (a future), and is then awaited as it is, through :class:`Resumed`,
which passes what the task sends or throws in on to the step: so the step waits on its own
future, in the same task, and is cancelled (a client that left, the hub's keep-alive timeout)
exactly as if it were awaited directly. A cancellation or error that arrives while the burst is
being written belongs to the waiting step (it is the step's timeout, or the request's end): it
is thrown into the step first (``Resumed.interrupted``).

:class:`Resumed` has a generator's methods but is no generator, and the loop is written in
``EventStream.__call__``, not a coroutine of its own: an open stream waiting on its client keeps
no frame more than before (a stream's memory is a goal of issue 25).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any

from starlette.types import Send

BURST_MAX = 64 * 1024
"""Characters of frames written at the latest in one piece, waiting or not."""

GIVEN = object()
"""What :func:`step` answers, with the frame, when the generator gave one without waiting."""


def step(frames: AsyncGenerator[str, None]) -> tuple[Any, Any]:
    """Run the generator's next step: ``(GIVEN, frame)``, or ``(the step, what it waits on)``.

    Raises ``StopAsyncIteration`` when the generator ended, and what it raised otherwise.
    """
    started = frames.asend(None)
    try:
        return started, started.send(None)
    except StopIteration as given:
        return GIVEN, given.value


async def write(send: Send, burst: list[str], last: bool) -> None:
    """Send ``burst`` as one body message of the response (``last``: its end too)."""
    body = "".join(burst).encode()
    await send({"type": "http.response.body", "body": body, "more_body": not last})


class Resumed(Generator[Any, Any, str]):
    """The step of a generator, started by :func:`step`, awaited where it waits: on ``waits_on``.

    The first thing the awaiting task asks of it is what the step waits on (or, if
    ``interrupted`` was set meanwhile, that thrown into the step); then what the task sends in
    goes to the step, and what it throws in too. Its result is the frame the step gives.
    """

    __slots__ = ("fresh", "interrupted", "started", "waits_on")

    def __init__(self, started: Any, waits_on: Any) -> None:
        self.started, self.waits_on, self.fresh = started, waits_on, True
        self.interrupted: BaseException | None = None

    def __await__(self) -> Generator[Any, Any, str]:
        return self

    def send(self, value: Any) -> Any:
        """The task resumes the step (a ``StopIteration`` carries the frame it gave)."""
        if self.fresh:
            self.fresh = False
            waits_on, self.waits_on = self.waits_on, None
            if (interrupted := self.interrupted) is not None:
                self.interrupted = None
                return self.started.throw(interrupted)
            return waits_on
        return self.started.send(value)

    def throw(self, error: Any, *_: Any) -> Any:
        """The task throws ``error`` into the awaiting coroutine: it goes to the step."""
        self.fresh, self.waits_on, self.interrupted = False, None, None
        return self.started.throw(error)

    def close(self) -> None:
        """The awaiting coroutine is closed: the step too."""
        self.started.close()
