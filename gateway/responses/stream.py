"""A response as Server-Sent Events, and a response read to its end.

Each event is ``event: <type>`` and ``data: <JSON with "type" and "sequence_number">``, no SSE
``id`` (a stream is resumed by sequence number: ``GET /v1/responses/{id}?stream=true&
starting_after=N``). The stream ends after the response's terminal event (``response.
completed``, ``.incomplete`` or ``.failed``) with ``data: [DONE]``. Written through
``gateway.sse.face_stream``, from one translation of the run for every client of the response
(``gateway.relay``): Redis away past ``WALRUS_SSE_REDIS_GRACE`` (or the gateway
stopping) ends it with an ``error`` event (:class:`StreamError`) whose ``sequence_number`` is the
last one sent, so resuming ``starting_after`` it misses nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from gateway import operations as ops
from gateway.hub import Hub
from gateway.openai_compat import DONE
from gateway.relay import Cursor
from gateway.response_operations import ResponseView
from gateway.responses.translate import Translator
from gateway.sse import EventStream, face_stream, typed_frame

Finish = Callable[[ResponseView, dict[str, Any]], Any]
"""Called (awaited) once the response has ended, with its final object (kept, or not)."""


class _Frames:
    """The Responses face's :class:`gateway.relay.Translation` of ``t``'s response.

    Every event is one frame, numbered from 0: frame ``n`` is the event whose
    ``sequence_number`` is ``n``, so a client resuming ``starting_after`` N follows from frame
    N + 1. At the end the response's final object is kept (``finish``), once for every client.
    """

    __slots__ = ("finish", "t")

    def __init__(self, t: Translator, finish: Finish) -> None:
        self.t, self.finish = t, finish

    async def opening(self) -> list[str]:
        return [typed_frame(e) for e in self.t.opening()]

    async def feed(self, entry_id: str, event: dict[str, Any]) -> list[str]:
        return [typed_frame(e) for e in self.t.feed(entry_id, event)]

    def over(self) -> bool:
        return self.t.terminal

    async def closing(self) -> list[str]:
        lost = [typed_frame(e) for e in self.t.lost()]
        await self.finish(self.t.view, self.t.snapshot())
        return lost


def event_stream(hub: Hub, view: ResponseView, starting_after: int, finish: Finish) -> EventStream:
    """The events of ``view``'s response numbered above ``starting_after`` (-1: all), then DONE.

    Translated once for every client of the response (``gateway.relay``).
    """
    cursor = Cursor(starting_after + 1)
    # The response object shows no input items: its translation, kept for as long as the
    # response is followed, keeps none either (``GET …/input_items`` reads them from Redis).
    view = replace(view, input=[])
    frames = hub.relays.follow(
        ("responses", view.id),
        lambda: ops.run_events(hub, view.run_id, view.after),
        lambda: _Frames(Translator(view), finish),
        cursor,
        DONE,
    )
    return face_stream(hub, frames, StreamError(view.id, cursor))


class StreamError:
    """How a stream at ``cursor`` ends early: an ``error`` event, then ``[DONE]``.

    An ``ErrorRender``. Its ``sequence_number`` is the last one sent: the client resumes with
    ``starting_after`` set to it and gets the rest. Slotted, not a closure: a stream keeps it
    while it is open.
    """

    __slots__ = ("cursor", "response_id")

    def __init__(self, response_id: str, cursor: Cursor) -> None:
        self.response_id, self.cursor = response_id, cursor

    def __call__(self, code: str, message: str) -> str:
        """The stream's last frames, for error ``code`` and its ``message``."""
        last = self.cursor.index - 1
        hint = (
            f"; resume with GET /v1/responses/{self.response_id}?stream=true&starting_after={last}"
        )
        error = {"type": "error", "sequence_number": max(last, 0), "code": code,
                 "message": message + hint, "param": None}  # fmt: skip
        return typed_frame(error) + DONE


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
