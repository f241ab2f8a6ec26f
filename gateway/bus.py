"""The event bus routes: subscriptions, publishing, and the live feed of every run's events.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.
"""

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query

from gateway import operations as ops
from gateway.deps import Cfg, Redis, StreamHub, Who
from gateway.errors import responses
from gateway.sse import EventStream, feed_entries, hub_frames, sse_stream
from gateway.stream_limit import hold_stream
from walrus_tasks.event_types import sse_schema
from walrus_tasks.models import Published, PublishEvent, Subscription, SubscriptionSpec
from walrus_tasks.names import ENTRY_ID_RE

ERRORS = responses({404: "unknown agent or subscription", 413: "body too large",
                    422: "invalid input"})  # fmt: skip


router = APIRouter(tags=["event bus"])


@router.get("/v1/subscriptions", response_model=dict[str, list[Subscription]])
def list_subscriptions(r: Redis, who: Who) -> dict[str, list[dict[str, Any]]]:
    """Every subscription (of the token's tenant), oldest first."""
    return {"subscriptions": ops.list_subscriptions(r, who)}


@router.post("/v1/subscriptions", status_code=201, response_model=Subscription, responses=ERRORS)
def subscribe(body: SubscriptionSpec, r: Redis, config: Cfg, who: Who) -> dict[str, Any]:
    """Subscribe ``target_agent`` to every event published to exactly ``source``."""
    return ops.subscribe(r, config, body, who)


@router.delete("/v1/subscriptions/{sub_id}", responses=ERRORS)
def unsubscribe(sub_id: str, r: Redis, who: Who) -> dict[str, str]:
    """Remove a subscription: ``{"deleted": id}``, or 404 if there is none with this id."""
    return ops.unsubscribe(r, sub_id, who)


@router.post("/v1/events", status_code=202, response_model=Published, responses=ERRORS)
def publish(body: PublishEvent, r: Redis, who: Who) -> Published:
    """Send ``payload`` to every subscription of ``source`` (in the token's tenant)."""
    return ops.publish(r, body.source, body.payload, who, body.tenant)


@router.get("/v1/events", responses={**ERRORS, 200: {"content": sse_schema()}})
def feed(
    r: Redis,
    hub: StreamHub,
    config: Cfg,
    agent: str | None = None,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[str | None, Query(pattern=ENTRY_ID_RE.pattern)] = None,
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
