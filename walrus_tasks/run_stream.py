"""Reading run event streams (Redis Streams), for SSE and the Python side alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as aioredis

from walrus_tasks import keys
from walrus_tasks.run_events import event_json

BLOCK_MS = 5_000
"""How long one XREAD waits before the reader re-checks that the run still exists."""


def parse(entry_id: str, fields: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """``(entry id, event)`` of one stream entry."""
    return entry_id, json.loads(fields["data"])


async def aread_events(
    r: aioredis.Redis, run_id: str, after: str = "0-0", block_ms: int = BLOCK_MS
) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
    """Yield the run's events after entry id ``after`` until (and including) ``end``.

    Yields ``(after, None)`` after each idle wait of ``block_ms`` (the caller's keep-alive),
    and stops if the run no longer exists.
    """
    stream = keys.run_part(run_id, "events")
    while True:
        reply: Any = await r.xread({stream: after}, block=block_ms, count=500)
        if not reply:
            if not await r.exists(keys.run(run_id)):
                return
            yield after, None
            continue
        for entry_id, fields in reply[0][1]:
            after, event = parse(entry_id, fields)
            yield after, event
            if event["type"] == "end":
                return


def sse_frame(entry_id: str, event: dict[str, Any]) -> str:
    """One SSE frame: ``id`` = stream entry id, ``event`` = type, ``data`` = the JSON event."""
    return f"id: {entry_id}\nevent: {event['type']}\ndata: {event_json(event)}\n\n"
