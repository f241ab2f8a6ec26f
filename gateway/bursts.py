"""Writing a stream's frames a burst at a time: what its generator gives without waiting.

A run's events reach a stream in bursts: one ``XREAD`` reply of the hub can hold several entries
(``emit.lua`` writes a text's ``text_start`` and its first ``chunk`` in one step; a client that
fell behind, or resumed, has many), and each face turns an entry into frames without waiting.
Written one ``send`` each, every frame costs the gateway a write to its socket, the costliest
call of its profile under the latency phase (docs/benchmarks.md, issue 25, ninth round), and a
first chunk reaches its client one write late, after its ``text_start``.

:func:`write_bursts` takes from the frames' generator whatever it gives without waiting, and
writes it in one piece when the generator is about to wait (or ends, or past
:data:`BURST_MAX`); the last piece goes with the end of the body. No frame is held while the
generator waits, so no frame is later than it was.

How it knows: it runs the generator's next step itself (``asend(None).send(None)``, as the
event loop's task would). A step that gives a frame ends at once (``StopIteration``); a step
that must wait hands back what it waits on (a future). Then the burst so far is written, and the
step is awaited as it is, through :class:`_Resumed`, which passes what the task sends or
throws in on to the step: so the step waits on its own future, in the same task, and is
cancelled (a client that left, or the hub's keep-alive timeout) exactly as if it were awaited
directly. A cancellation or error that arrives while the burst is being written belongs to the
waiting step (it is the step's timeout, or the request's end): it is thrown into the step.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import Any

from starlette.types import Send

BURST_MAX = 64 * 1024
"""Characters of frames written at the latest in one piece, waiting or not."""


async def write_bursts(frames: AsyncGenerator[str, None], send: Send) -> None:
    """Send ``frames`` as the response's body, a burst a message; the last one ends the body."""
    burst: list[str] = []
    size = 0
    while True:
        step = frames.asend(None)
        try:
            waits_on = step.send(None)
        except StopIteration as given:  # a frame, given without waiting
            burst.append(given.value)
            size += len(given.value)
            if size >= BURST_MAX:
                await _write(send, burst, False)
                burst, size = [], 0
            continue
        except StopAsyncIteration:
            break
        interrupted: BaseException | None = None
        if burst:
            try:
                await _write(send, burst, False)
            except BaseException as e:  # the waiting step's: thrown into it
                interrupted = e
            burst, size = [], 0
        try:
            frame = await _Resumed(step, waits_on, interrupted)
        except StopAsyncIteration:
            break
        burst.append(frame)
        size += len(frame)
    await _write(send, burst, True)


async def _write(send: Send, burst: list[str], last: bool) -> None:
    body = "".join(burst).encode()
    await send({"type": "http.response.body", "body": body, "more_body": not last})


class _Resumed:
    """An awaitable of a generator step already started: it waits on ``waits_on``.

    What the task sends in goes to the step (``send``), what it throws in too (``throw``); the
    first thing thrown in is ``interrupted`` when one is given.
    """

    __slots__ = ("interrupted", "step", "waits_on")

    def __init__(self, step: Any, waits_on: Any, interrupted: BaseException | None = None) -> None:
        self.step, self.waits_on, self.interrupted = step, waits_on, interrupted

    def __await__(self) -> Generator[Any, Any, str]:
        step = self.step
        try:
            if self.interrupted is not None:
                waits_on = step.throw(self.interrupted)
            else:
                waits_on = self.waits_on
            while True:
                try:
                    sent = yield waits_on
                except BaseException as e:  # the step's to handle
                    waits_on = step.throw(e)
                else:
                    waits_on = step.send(sent)
        except StopIteration as given:
            frame: str = given.value
            return frame
