"""Relaying a run's Redis Stream (or the feed) to a client as Server-Sent Events.

Streams are read by the gateway's :class:`gateway.hub.Hub`: one Redis reader for every open
stream, which rides out Redis restarts by reading on from each stream's last id. A stream entry
id is the SSE ``id``, so a client that reconnects with ``Last-Event-ID`` sees no gap and no
duplicate. Two ``error`` events end a stream early, both with no ``id`` (so ``Last-Event-ID``
stays on the last real event) and ``resume: true``: ``unavailable`` when Redis stayed away longer
than ``WALRUS_SSE_REDIS_GRACE``, and ``slow_consumer`` when the client fell more than
``WALRUS_SSE_BUFFER`` events behind.

Every event stream of the gateway (the native routes, the OpenAI and Agent Protocol streams)
is written by :class:`EventStream` through :func:`guarded`, which ends it with those two errors,
each face rendering them in its own protocol's shape (an :data:`ErrorRender`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from functools import cache
from typing import Any, TypeVar

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from gateway.connection import ON_LEAVE
from gateway.errors import REDIS_DOWN
from gateway.hub import Entry, Hub, ShuttingDown, SlowConsumer
from gateway.relay import KEEP_ALIVE as KEEP_ALIVE  # where the faces import it from
from gateway.stream_limit import hold_stream
from walrus_tasks import keys
from walrus_tasks.errors import InvalidInput, NotFound
from walrus_tasks.names import ENTRY_ID_RE, RUN_ID_RE

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RESUME = "reconnect with Last-Event-ID set to the id of the last event received"


class LastFrame(str):
    """A stream's last frame: :class:`EventStream` writes the body's end with it, in one send.

    Its generator yields nothing after it (and so ends, its ``finally`` run, as it is asked for
    the next frame: nothing is left suspended for the loop to close).
    """

    __slots__ = ()


ErrorRender = Callable[[str, str], str]
"""``(code, message)`` -> the SSE text that ends a stream with that error, in a face's shape."""

T = TypeVar("T")


def typed_frame(data: Mapping[str, Any]) -> str:
    """One SSE event named for its data's ``type``: ``event: <type>``, the data as compact JSON.

    The frame of the faces whose events carry their type (Anthropic's, OpenAI Responses').
    """
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {data['type']}\ndata: {text}\n\n"


def error_frame(message: str, code: str = "unavailable") -> str:
    """An ``error`` event that ends a stream: no ``id``, resume with the last one."""
    data = {"type": "error", "code": code, "message": message, "resume": True}
    return f"event: error\ndata: {json.dumps(data)}\n\n"


def native_error(code: str, message: str) -> str:
    """The native routes' :data:`ErrorRender`: :func:`error_frame`, saying how to resume."""
    return error_frame(f"{message}; {RESUME}", code)


async def guarded(
    frames: AsyncGenerator[T, None], render: Callable[[str, str], T], grace: float
) -> AsyncGenerator[T, None]:
    """``frames``, ended by ``render``'s error if Redis stays away or the client falls behind.

    ``unavailable``: Redis was away longer than ``grace`` seconds (the hub rode out anything
    shorter); ``slow_consumer``: the client fell more than ``WALRUS_SSE_BUFFER`` events behind.
    A face whose stream is written by another library (A2A's, by the SDK's routes) guards its
    events rather than SSE text: its ``render`` raises the error the library writes last.
    """
    try:
        async with aclosing(frames):  # closed at once when the stream ends, however it ends
            async for frame in frames:
                yield frame
    except REDIS_DOWN as e:
        yield render("unavailable", f"redis unavailable for over {grace:g} s ({e})")
    except SlowConsumer as e:
        yield render("slow_consumer", f"this client fell behind the stream ({e})")
    except ShuttingDown as e:
        yield render(e.code, e.message)


async def _entry_frames(entries: AsyncIterator[Entry | None]) -> AsyncGenerator[str, None]:
    async for entry in entries:
        yield KEEP_ALIVE if entry is None else entry.frame


def hub_frames(entries: AsyncIterator[Entry | None], grace: float) -> AsyncGenerator[str, None]:
    """The native SSE text of ``entries`` (keep-alive comments while idle), :func:`guarded`."""
    return guarded(_entry_frames(entries), native_error, grace)


async def _burst_frames(bursts: AsyncIterator[list[Entry] | None]) -> AsyncGenerator[str, None]:
    async for burst in bursts:
        if burst is None:
            yield KEEP_ALIVE
            continue
        text = burst[0].frame if len(burst) == 1 else "".join(e.frame for e in burst)
        yield LastFrame(text) if burst[-1].ends else text  # the run's end, and its bursts' last


async def feed_entries(hub: Hub, after: str, agent: str | None) -> AsyncIterator[Entry | None]:
    """The feed's entries after cursor ``after`` (of one agent's runs if ``agent``)."""
    async for entry in hub.feed(after):
        if entry is None or agent is None or entry.event.get("agent") == agent:
            yield entry


class EventStream(Response):
    """A ``text/event-stream`` response of ``frames``, written straight to the ASGI ``send``.

    Starlette's ``StreamingResponse`` runs each response in an anyio task group of two tasks,
    kept for as long as the stream is open; at ten thousand streams every object per stream
    counts. Here the request's own task writes the frames, and the client's leaving cancels the
    writer (so a gone client's hub subscription ends at once, not at the next keep-alive): the
    gateway's server says so through the request's ``ON_LEAVE`` (:mod:`gateway.connection`);
    on another server one small task waits on ``receive`` for ``http.disconnect``.
    """

    media_type = "text/event-stream"

    def __init__(
        self, frames: AsyncGenerator[str, None], headers: Mapping[str, str] | None = None
    ) -> None:
        self.frames = frames
        self.status_code = 200
        self.background = None
        if headers:
            self.init_headers({**SSE_HEADERS, **headers})
        else:  # the same header tuples for every such stream; a list of its own (a middleware
            self.raw_headers = list(_plain_headers())  # may add to it, as CORS does)
        self.writer: asyncio.Task[Any] | None = None
        self.left = self.finished = False

    def _on_leave(self, watched: object = None) -> None:
        """The client left: cancel the writer (a bound method: no closure kept per stream)."""
        if isinstance(watched, asyncio.Future) and not watched.cancelled():
            watched.exception()  # retrieved: a failing receive means the client is gone too
        if not self.finished and self.writer is not None:  # else: scheduled before the end
            self.left = True
            self.writer.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the headers, then every frame, until the frames end or the client leaves."""
        self.writer = writer = asyncio.current_task()
        assert writer is not None
        watch_leave: Callable[[Callable[[], None] | None], None] | None = scope.get(ON_LEAVE)
        watch = None
        if watch_leave is not None:
            watch_leave(self._on_leave)
        else:
            watch = asyncio.ensure_future(_disconnected(receive))
            watch.add_done_callback(self._on_leave)
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            more = True
            async for frame in self.frames:  # its bytes not kept while the next is awaited
                more = type(frame) is not LastFrame
                await send(
                    {"type": "http.response.body", "body": frame.encode(), "more_body": more}
                )
            if more:  # else the body's end went with the last frame
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self.left:
                raise
            writer.uncancel()  # the client left: a normal end of the response, not a failure
        finally:
            self.finished = True
            self.writer = None
            if watch_leave is not None:
                watch_leave(None)
            if watch is not None:
                watch.remove_done_callback(self._on_leave)
                watch.cancel()
            await self.frames.aclose()  # unsubscribes at once, not when it is collected


@cache
def _plain_headers() -> tuple[tuple[bytes, bytes], ...]:
    """The raw headers of an :class:`EventStream` with no headers of its own."""
    stream = EventStream.__new__(EventStream)
    stream.init_headers(SSE_HEADERS)
    return tuple(stream.raw_headers)


async def _disconnected(receive: Receive) -> None:
    """Return when the client has gone (``http.disconnect``)."""
    message: Message = {}
    while message.get("type") != "http.disconnect":
        message = await receive()


def sse_stream(
    frames: AsyncGenerator[str, None], headers: Mapping[str, str] | None = None
) -> EventStream:
    """A ``text/event-stream`` response of ``frames`` (already :func:`guarded`)."""
    return EventStream(frames, headers)


def face_stream(
    hub: Hub,
    frames: AsyncGenerator[str, None],
    render: ErrorRender,
    headers: Mapping[str, str] | None = None,
) -> EventStream:
    """A protocol face's event stream: ``frames`` :func:`guarded` with the face's ``render``."""
    return EventStream(guarded(frames, render, hub.settings.sse_redis_grace), headers)


def sse_response(hub: Hub, run_id: str, after: str) -> EventStream:
    """Stream the run's events after entry id ``after`` until ``end``."""
    bursts = hub.bursts(keys.run_part(run_id, "events"), after, run_id)
    return sse_stream(guarded(_burst_frames(bursts), native_error, hub.settings.sse_redis_grace))


async def run_events(
    hub: Hub, run_id: str, last_event_id: str | None, after: str | None
) -> EventStream:
    """``GET /v1/runs/{run_id}/events``: the run's events after ``Last-Event-ID`` or ``?after=``.

    Raises :class:`InvalidInput` for a malformed run id or entry id, :class:`NotFound` for an
    unknown run. Asked on the hub's connection: a thousand clients opening streams at once take
    no threads and no pooled connections.
    """
    if not RUN_ID_RE.fullmatch(run_id):
        raise InvalidInput(f"invalid run id {run_id!r}")
    if after is not None and not ENTRY_ID_RE.fullmatch(after):
        raise InvalidInput(f"invalid ?after= {after!r}: an entry id like 1700000000000-0")
    if not await hub.run_exists(run_id):
        raise NotFound(f"unknown run {run_id!r}")
    start = last_event_id or after or "0-0"
    if not ENTRY_ID_RE.fullmatch(start):
        raise InvalidInput(f"invalid Last-Event-ID {start!r}")
    hold_stream()
    return sse_response(hub, run_id, start)
