"""The event bus routes: subscriptions, publishing, and the live feed of every run's events.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.
"""

import re
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import StreamingResponse

from gateway.sse import Item, sse_frames, sse_stream
from walrus_tasks import subscriptions
from walrus_tasks.config import Config
from walrus_tasks.connection import get_redis
from walrus_tasks.errors import InvalidInput, NotFound
from walrus_tasks.feed import aread_feed, live_end
from walrus_tasks.models import Published, PublishEvent, Subscription, SubscriptionSpec
from walrus_tasks.names import agent_name
from walrus_tasks.run_events import sse_schema
from walrus_tasks.settings import Settings

Redis = Annotated[redis.Redis, Depends(get_redis)]
ENTRY_ID_RE = re.compile(r"^\d+-\d+$")
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d, "content": {"application/json": {}}}
    for s, d in [(404, "unknown agent or subscription"), (413, "body too large"),
                 (422, "invalid input")]
}  # fmt: skip


def _frames(
    r: aioredis.Redis, after: str, agent: str | None, settings: Settings
) -> AsyncIterator[str]:
    block_ms = int(settings.sse_keepalive * 1000)

    def read(cursor: str) -> AsyncIterator[Item]:
        return aread_feed(r, cursor, agent, block_ms=block_ms)

    return sse_frames(r, read, after, settings.sse_redis_grace)


def router(cfg: Callable[[], Config], settings: Settings) -> APIRouter:
    """The event bus routes, reading the current config through ``cfg``."""
    api = APIRouter(tags=["event bus"])

    def known_agent(name: str) -> str:
        cfg().agent(agent_name(name))
        return name

    @api.get("/v1/subscriptions", response_model=dict[str, list[Subscription]])
    def list_subscriptions(r: Redis) -> dict[str, list[dict[str, Any]]]:
        """Every subscription, oldest first."""
        return {"subscriptions": subscriptions.list_all(r)}

    @api.post("/v1/subscriptions", status_code=201, response_model=Subscription, responses=ERRORS)
    def subscribe(body: SubscriptionSpec, r: Redis) -> dict[str, Any]:
        """Subscribe ``target_agent`` to every event published to exactly ``source``."""
        subscriptions.source_name(body.source)
        known_agent(body.target_agent)
        return subscriptions.create(r, body.source, body.target_agent, body.once)

    @api.delete("/v1/subscriptions/{sub_id}", responses=ERRORS)
    def unsubscribe(sub_id: str, r: Redis) -> dict[str, str]:
        """Remove a subscription: ``{"deleted": id}``, or 404 if there is none with this id."""
        if not subscriptions.delete(r, sub_id):
            raise NotFound(f"unknown subscription {sub_id!r}")
        return {"deleted": sub_id}

    @api.post("/v1/events", status_code=202, response_model=Published, responses=ERRORS)
    def publish(body: PublishEvent, r: Redis) -> Published:
        """Send ``payload`` to every subscription of ``source``; the runs it started."""
        return Published(fired=subscriptions.publish(r, body.source, body.payload))

    @api.get("/v1/events", responses={**ERRORS, 200: {"content": sse_schema()}})
    def feed(
        r: Redis,
        request: Request,
        agent: str | None = None,
        last_event_id: Annotated[str | None, Header()] = None,
        after: Annotated[str | None, Query(pattern=r"^\d+-\d+$")] = None,
    ) -> StreamingResponse:
        """Every run's events as SSE, from the live end, or after ``Last-Event-ID``/``?after=``.

        Each event carries its run's ``run_id``, ``agent`` and ``sender``; ``?agent=`` keeps
        one agent's runs.
        """
        if agent is not None:
            known_agent(agent)
        start = last_event_id or after
        if start is not None and not ENTRY_ID_RE.fullmatch(start):
            raise InvalidInput(f"invalid Last-Event-ID {start!r}")
        # Fixed before the response starts: whatever happens after the client sees 200 is sent.
        start = start or live_end(r)
        return sse_stream(_frames(request.app.state.aredis, start, agent, settings))

    return api


def register(app: FastAPI, cfg: Callable[[], Config], settings: Settings) -> None:
    """Add the subscription, publish and live feed routes to ``app``."""
    app.include_router(router(cfg, settings))
