"""A response as Server-Sent Events, and a response read to its end.

Each event is ``event: <type>`` and ``data: <JSON with "type" and "sequence_number">``, no SSE
``id`` (a stream is resumed by sequence number: ``GET /v1/responses/{id}?stream=true&
starting_after=N``). The stream ends after the response's terminal event (``response.
completed``, ``.incomplete`` or ``.failed``) with ``data: [DONE]``. Written through
``gateway.sse.face_stream``: Redis away past ``WALRUS_SSE_REDIS_GRACE`` (or the gateway
stopping) ends it with an ``error`` event (:func:`stream_error`) whose ``sequence_number`` is the
last one sent, so resuming ``starting_after`` it misses nothing.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

from gateway import operations as ops
from gateway.hub import Hub
from gateway.openai_compat import DONE
from gateway.response_operations import ResponseView
from gateway.responses.translate import Translator
from gateway.sse import KEEP_ALIVE, ErrorRender, typed_frame

Finish = Callable[[ResponseView, dict[str, Any]], Any]
"""Called (awaited) once the response has ended, with its final object (kept, or not)."""


def stream_error(t: Translator) -> ErrorRender:
    """How the stream of ``t`` ends early: an ``error`` event, then ``[DONE]``.

    Its ``sequence_number`` is the last one sent: the client resumes with ``starting_after``
    set to it and gets the rest.
    """

    def render(code: str, message: str) -> str:
        hint = f"; resume with GET /v1/responses/{t.view.id}?stream=true&starting_after={t.seq}"
        error = {"type": "error", "sequence_number": max(t.seq, 0), "code": code,
                 "message": message + hint, "param": None}  # fmt: skip
        return typed_frame(error) + DONE

    return render


async def frames(
    hub: Hub, t: Translator, starting_after: int, finish: Finish
) -> AsyncGenerator[str, None]:
    """The events of ``t``'s response numbered above ``starting_after`` (-1: all), then DONE."""
    for event in t.opening():
        if event["sequence_number"] > starting_after:
            yield typed_frame(event)
    view = t.view
    async for entry_id, raw in ops.run_events(hub, view.run_id, view.after):
        if raw is None:
            yield KEEP_ALIVE
            continue
        for event in t.feed(entry_id, raw):
            if event["sequence_number"] > starting_after:
                yield typed_frame(event)
        if t.terminal:
            break
    for event in t.lost():
        if event["sequence_number"] > starting_after:
            yield typed_frame(event)
    await finish(view, t.snapshot())
    yield DONE


async def settle(hub: Hub, t: Translator) -> Translator:
    """``t`` fed its run's events until the response has ended (or the run is gone)."""
    t.opening()
    async for entry_id, raw in ops.run_events(hub, t.view.run_id, t.view.after):
        if raw is not None:
            t.feed(entry_id, raw)
            if t.terminal:
                break
    t.lost()
    return t
