"""Relaying a run's Redis Stream to a client as Server-Sent Events, across Redis restarts.

A stream entry id is both the SSE ``id`` and the XREAD cursor, so a relay that loses Redis
waits for it to come back and reads again after the last id it sent: the client sees no gap and
no duplicate. If Redis stays away longer than ``WALRUS_SSE_REDIS_GRACE`` the stream ends with
an ``error`` event that carries no ``id`` (so ``Last-Event-ID`` stays on the last real event)
and tells the client to resume with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from fastapi.responses import StreamingResponse

from gateway.errors import REDIS_DOWN
from walrus_tasks.run_stream import aread_events, sse_frame
from walrus_tasks.settings import Settings

log = logging.getLogger("walrus.gateway.sse")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 1.0
"""Seconds between the first two PINGs of a Redis that went away, and the most between two."""

Item = tuple[str, dict[str, Any] | None]
Reader = Callable[[str], AsyncIterator[Item]]


def _cancelled(error: BaseException) -> None:
    """Re-raise ``error`` if this task is being cancelled.

    redis-py may turn the cancel of a blocked read into a TimeoutError: that must end the
    stream (a client's ``cancel``, a disconnect), not be ridden out as a Redis outage.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise error


async def wait_for_redis(r: aioredis.Redis, deadline: float, error: BaseException) -> None:
    """Return once Redis answers PING again; re-raise the last error at ``deadline``."""
    delay = BACKOFF_FIRST
    while time.monotonic() < deadline:
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, BACKOFF_MAX)
        try:
            await r.ping()
            return
        except REDIS_DOWN as e:
            _cancelled(e)
            error = e
    raise error


async def resilient(
    r: aioredis.Redis, read: Reader, after: str, grace: float
) -> AsyncIterator[Item]:
    """Yield the items of ``read(after)``; when Redis drops, wait and read on from the last id.

    ``read(cursor)`` yields ``(entry id, event)`` after entry id ``cursor`` (``(cursor, None)``
    for an idle wait). Raises the last Redis error if Redis does not answer again within
    ``grace`` seconds of a failure.
    """
    while True:
        try:
            async for entry_id, event in read(after):
                after = entry_id
                yield entry_id, event
            return
        except REDIS_DOWN as e:
            _cancelled(e)
            log.warning("redis went away under a stream (%s); waiting %g s for it", e, grace)
            await wait_for_redis(r, time.monotonic() + grace, e)


def error_frame(message: str) -> str:
    """The ``error`` event that ends a stream Redis left: no ``id``, resume with the last one."""
    data = {"type": "error", "code": "unavailable", "message": message, "resume": True}
    return f"event: error\ndata: {json.dumps(data)}\n\n"


async def sse_frames(
    r: aioredis.Redis, read: Reader, after: str, grace: float
) -> AsyncIterator[str]:
    """The SSE text of ``read``'s events (keep-alive comments while idle), Redis-proof."""
    try:
        async for entry_id, event in resilient(r, read, after, grace):
            yield ": keep-alive\n\n" if event is None else sse_frame(entry_id, event)
    except REDIS_DOWN as e:
        yield error_frame(
            f"redis unavailable for over {grace:g} s ({e}); reconnect with Last-Event-ID "
            "set to the id of the last event received"
        )


def sse_stream(frames: AsyncIterator[str]) -> StreamingResponse:
    """A ``text/event-stream`` response of ``frames``."""
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


def sse_response(
    r: aioredis.Redis, run_id: str, after: str, settings: Settings
) -> StreamingResponse:
    """Stream the run's events after entry id ``after`` until ``end``."""
    block_ms = int(settings.sse_keepalive * 1000)

    def read(cursor: str) -> AsyncIterator[Item]:
        return aread_events(r, run_id, cursor, block_ms=block_ms)

    return sse_stream(sse_frames(r, read, after, settings.sse_redis_grace))
