"""The live feed: every event of every run, read from one bounded Redis Stream (``keys.FEED``).

``emit()`` in ``lua/lib/runs.lua`` appends each run event to the feed in the same atomic step as
to the run's own stream, with the run's ``run_id``, ``agent`` and ``sender``. Readers start at
the live end, or after a feed entry id (SSE ``Last-Event-ID``) to resume with no gap.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.asyncio as aioredis

from walrus_tasks import keys

BLOCK_MS = 15_000
"""How long one XREAD waits before the reader yields a keep-alive."""


def live_end(r: redis.Redis) -> str:
    """The id of the feed's newest entry (``0-0`` if empty): reading after it sees only news."""
    newest: list[tuple[str, dict[str, str]]] = r.xrevrange(keys.FEED, count=1)  # type: ignore[assignment]
    return newest[0][0] if newest else "0-0"


def feed_event(fields: dict[str, str]) -> dict[str, Any]:
    """The run event of one feed entry, with its ``run_id``, ``agent`` and ``sender``."""
    event: dict[str, Any] = json.loads(fields["data"])
    event.update(run_id=fields["run_id"], agent=fields["agent"], sender=fields["sender"])
    return event


async def aread_feed(
    r: aioredis.Redis, after: str, agent: str | None = None, block_ms: int = BLOCK_MS
) -> AsyncIterator[tuple[str, dict[str, Any] | None]]:
    """Yield ``(entry id, event)`` of the feed after ``after``, forever (``agent`` filters).

    Yields ``(after, None)`` after each idle wait of ``block_ms`` (the caller's keep-alive).
    """
    while True:
        reply: Any = await r.xread({keys.FEED: after}, block=block_ms, count=500)
        if not reply:
            yield after, None
            continue
        for entry_id, fields in reply[0][1]:
            after = entry_id
            if agent is None or fields.get("agent") == agent:
                yield entry_id, feed_event(fields)
