"""Relaying a run's Redis Stream to a client as Server-Sent Events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from fastapi.responses import StreamingResponse

from walrus_tasks.events import aread_events, sse_frame

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def _frames(
    r: aioredis.Redis, run_id: str, after: str, keepalive: float
) -> AsyncIterator[str]:
    async for entry_id, event in aread_events(r, run_id, after, block_ms=int(keepalive * 1000)):
        yield ": keep-alive\n\n" if event is None else sse_frame(entry_id, event)


def sse_response(r: aioredis.Redis, run_id: str, after: str, keepalive: float) -> StreamingResponse:
    """Stream the run's events after entry id ``after`` until ``end``."""
    return StreamingResponse(
        _frames(r, run_id, after, keepalive), media_type="text/event-stream", headers=SSE_HEADERS
    )
