"""The live feed of every run's events over SSE.

The other event-bus routes (subscriptions, publishing) are built from :mod:`gateway.registry`.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.
"""

from typing import Annotated

from fastapi import APIRouter, Header, Query

from gateway import operations as ops
from gateway.deps import Cfg, Redis, StreamHub
from gateway.errors import responses
from gateway.sse import EventStream, feed_entries, hub_frames, sse_stream
from gateway.stream_limit import hold_stream
from walrus_tasks.event_types import sse_schema
from walrus_tasks.feed import CURSOR_MAX

ERRORS = responses({404: "unknown agent or subscription", 413: "body too large",
                    422: "invalid input"})  # fmt: skip


router = APIRouter(tags=["event bus"])


@router.get("/v1/events", responses={**ERRORS, 200: {"content": sse_schema()}}, operation_id="feed")
def feed(
    r: Redis,
    hub: StreamHub,
    config: Cfg,
    agent: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[str | None, Query(max_length=CURSOR_MAX)] = None,
) -> EventStream:
    """Every run's events as SSE, from the live end, or after ``Last-Event-ID``/``?after=``.

    Each event carries its run's ``run_id``, ``agent`` and ``sender``; ``?agent=`` keeps
    one agent's runs.
    """
    if agent is not None:
        ops.known_agent(config, agent)
    start = ops.feed_start(r, last_event_id or after, "Last-Event-ID")
    hold_stream()
    return sse_stream(hub_frames(feed_entries(hub, start, agent), hub.settings.sse_redis_grace))
