"""Relaying a run's Redis Stream (or the feed) to a client as Server-Sent Events.

Streams are read by the gateway's :class:`gateway.hub.Hub`: one Redis reader for every open
stream, which rides out Redis restarts by reading on from each stream's last id. A stream entry
id is the SSE ``id``, so a client that reconnects with ``Last-Event-ID`` sees no gap and no
duplicate. Two ``error`` events end a stream early, both with no ``id`` (so ``Last-Event-ID``
stays on the last real event) and ``resume: true``: ``unavailable`` when Redis stayed away longer
than ``WALRUS_SSE_REDIS_GRACE``, and ``slow_consumer`` when the client fell more than
``WALRUS_SSE_BUFFER`` events behind.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from gateway.errors import REDIS_DOWN
from gateway.hub import Entry, Hub, SlowConsumer
from walrus_tasks import keys

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
RESUME = "reconnect with Last-Event-ID set to the id of the last event received"


def error_frame(message: str, code: str = "unavailable") -> str:
    """An ``error`` event that ends a stream: no ``id``, resume with the last one."""
    data = {"type": "error", "code": code, "message": message, "resume": True}
    return f"event: error\ndata: {json.dumps(data)}\n\n"


async def hub_frames(entries: AsyncIterator[Entry | None], grace: float) -> AsyncIterator[str]:
    """The SSE text of ``entries`` (keep-alive comments while idle).

    Ends with an error event if Redis stays away or the client falls too far behind.
    """
    try:
        async for entry in entries:
            yield ": keep-alive\n\n" if entry is None else entry.frame
    except REDIS_DOWN as e:
        yield error_frame(f"redis unavailable for over {grace:g} s ({e}); {RESUME}")
    except SlowConsumer as e:
        yield error_frame(f"this client fell behind the stream ({e}); {RESUME}", "slow_consumer")


async def feed_entries(hub: Hub, after: str, agent: str | None) -> AsyncIterator[Entry | None]:
    """The feed's entries after ``after`` (of one agent's runs if ``agent``)."""
    async for entry in hub.entries(keys.FEED, after):
        if entry is None or agent is None or entry.event.get("agent") == agent:
            yield entry


def sse_stream(frames: AsyncIterator[str]) -> StreamingResponse:
    """A ``text/event-stream`` response of ``frames``."""
    return StreamingResponse(frames, media_type="text/event-stream", headers=SSE_HEADERS)


def sse_response(hub: Hub, run_id: str, after: str) -> StreamingResponse:
    """Stream the run's events after entry id ``after`` until ``end``."""
    entries = hub.entries(keys.run_part(run_id, "events"), after, run_id)
    return sse_stream(hub_frames(entries, hub.settings.sse_redis_grace))
