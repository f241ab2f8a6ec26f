"""The native routes written by hand: a message answered with its stream, a run's events, health.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.

Every other native route is built from :mod:`gateway.registry`; these two stream, which each
face writes in its own framing. Errors come out through the handlers of :mod:`gateway.errors`
(``{"error": {"code", "message"}}``).
"""

from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from gateway import operations as ops
from gateway import registry, sse, sse_route
from gateway.deps import Agent, Redis, RunId, StreamHub, caller_of, known_agent
from gateway.errors import failure_response, responses
from gateway.hub import Hub
from gateway.operation import Call, call_of, current_call
from gateway.plain_post import body_of
from gateway.sse import EventStream, sse_response
from gateway.sse_route import header
from gateway.stream_limit import hold_stream
from walrus_tasks.errors import Unavailable
from walrus_tasks.event_types import sse_schema
from walrus_tasks.models import Accepted, SendMessage
from walrus_tasks.names import ENTRY_ID_RE

ERRORS = responses({404: "unknown agent or run", 409: "busy", 413: "body too large",
                    422: "invalid input"})  # fmt: skip

agents = APIRouter(tags=["agents"])
runs = APIRouter(tags=["runs"])
health = APIRouter()


@agents.post(
    "/v1/agents/{agent}/messages",
    status_code=202,
    response_model=Accepted,
    responses={**ERRORS, 200: {"content": sse_schema()}},
    operation_id="send",
)
def send_message(
    agent: Agent,
    body: SendMessage,
    hub: StreamHub,
    call: Annotated[Call, Depends(current_call)],
    idempotency_key: registry.IdempotencyKey = None,
    accept: str = Header(""),
) -> Any:
    """Accept a message into the conversation; 202 with the run id, or its SSE stream.

    The operation is :func:`gateway.registry.send`; asked for (``stream`` or ``Accept:
    text/event-stream``), the answer is the run's events instead.
    """
    if body.stream or "text/event-stream" in accept:
        return _streamed(call, agent, body, idempotency_key, hub)
    return registry.send(call, agent, body, idempotency_key)


def _streamed(
    call: Call, agent: str, body: SendMessage, idempotency_key: str | None, hub: Hub
) -> EventStream:
    """Send the message and answer with its run's stream (in a worker thread: it submits)."""
    hold_stream()  # before the run is submitted: a refused stream starts nothing
    accepted = registry.send(call, agent, body, idempotency_key)
    return sse_response(hub, accepted.run_id, "0-0")


_ACCEPTED = TypeAdapter(Accepted)
"""What :func:`send_message` answers without a stream, as FastAPI serialises it (its
``response_model``: JSON bytes from pydantic)."""


async def _plain_send(
    scope: Scope, params: dict[str, str], query: sse_route.Query
) -> Response | None:
    """:func:`send_message` for :mod:`gateway.sse_route`: its stream, or its ``202``.

    None (FastAPI answers) for a body FastAPI would refuse (``gateway.plain_post``).
    """
    body = body_of(scope, query, SendMessage)
    if body is None:
        return None
    call = call_of(scope["app"], caller_of(scope))
    agent = known_agent(params["agent"], call.config)  # NotFound: 404, as the route's
    scope["path_params"] = params  # as FastAPI's routing sets them: the metrics count by agent
    key = header(scope, b"idempotency-key")
    if not (body.stream or "text/event-stream" in (header(scope, b"accept") or "")):
        # The 202 stays on a thread: in a burst, on a machine its workers share, the event
        # loop alone accepted fewer a second (docs/benchmarks.md, issue 25, eighteenth round).
        accepted = await run_in_threadpool(registry.send, call, agent, body, key)
        return Response(_ACCEPTED.dump_json(accepted), 202, media_type="application/json")
    hold_stream()  # before the run is submitted: a refused stream starts nothing
    # On the event loop, not a thread: the hop was a fifth of a first chunk (issue 25).
    submitted = await ops.send_async(
        scope["app"].state.aredis, call.r, call.config, agent, body, key, call.caller, call.face
    )
    return sse_response(scope["app"].state.hub, submitted.run_id, "0-0")


@runs.get("/v1/runs/{run_id}/events", responses={**ERRORS, 200: {"content": sse_schema()}})
async def run_events(
    run_id: RunId,
    hub: StreamHub,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[str | None, Query(pattern=ENTRY_ID_RE.pattern)] = None,
) -> Response:
    """The run's events as SSE; resumes after ``Last-Event-ID`` (or ``?after=``).

    In the gateway app :class:`gateway.sse_route.StreamRoutes` answers it before this route
    is reached (this is its OpenAPI entry); both call :func:`gateway.sse.run_events`.
    """
    return await sse.run_events(hub, run_id, last_event_id, after)


@health.get("/healthz")
def healthz(r: Redis) -> JSONResponse:
    """200 when Redis answers, else 503 (with ``Retry-After``)."""
    try:
        r.ping()
    except redis.RedisError as e:
        return failure_response(Unavailable(f"redis unavailable: {e}"))
    return JSONResponse({"status": "ok"})


PLAIN_SEND = sse_route.plain(agents, "/v1/agents/{agent}/messages", _plain_send, method="POST")
"""``POST /v1/agents/{agent}/messages`` for :mod:`gateway.sse_route`. A stream is answered below
FastAPI, which would keep its request machinery alive (~10 KB) for as long as the stream is
open; so is the ``202``, the call every message of a client that does not stream makes, whose
FastAPI routing, dependency solving and request wrapping were about a third of the gateway's
CPU under it (docs/benchmarks.md, issue 25, eleventh round)."""

ROUTERS = (agents, runs, health)
"""The native routes written by hand, in the order ``create_app`` includes them (every other
native route is built from :mod:`gateway.registry`)."""
