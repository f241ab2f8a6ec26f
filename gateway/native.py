"""The native ``/v1`` API: agents, conversations and runs, over :mod:`gateway.operations`.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.

One module-level router per resource; the errors come out through the handlers of
:mod:`gateway.errors` (``{"error": {"code", "message"}}``).
"""

from typing import Annotated, Any

import redis
from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response

from gateway import operations as ops
from gateway import sse
from gateway.deps import Agent, Cfg, Redis, RunId, StreamHub, Who
from gateway.errors import failure_response, responses
from gateway.sse import sse_response
from gateway.stream_limit import hold_stream
from walrus_tasks import run_list
from walrus_tasks.errors import Unavailable
from walrus_tasks.event_types import sse_schema
from walrus_tasks.models import (
    Accepted,
    AgentInfo,
    Conversation,
    KillResult,
    Replied,
    Reply,
    RunInfo,
    RunPage,
    RunStatus,
    SendMessage,
    Steer,
    Steered,
)
from walrus_tasks.names import ENTRY_ID_RE

ERRORS = responses({404: "unknown agent or run", 409: "busy", 413: "body too large",
                    422: "invalid input"})  # fmt: skip
TURN_ERRORS = responses({404: "unknown agent", 409: "no active run / nothing waits",
                         422: "invalid input"})  # fmt: skip
CONVERSATION = "/v1/agents/{agent}/conversations/{sender}"
Tenant = Annotated[
    str | None,
    Query(
        description="an admin token's tenant to act in (a tenant token acts in its own; naming "
        "one is a 403)"
    ),
]

agents = APIRouter(tags=["agents"])
conversations = APIRouter(tags=["conversations"])
runs = APIRouter(tags=["runs"])
health = APIRouter()


@agents.get("/v1/agents", response_model=dict[str, list[AgentInfo]])
def list_agents(config: Cfg) -> dict[str, list[AgentInfo]]:
    """The configured agents."""
    return {"agents": ops.list_agents(config)}


@agents.get("/v1/agents/{agent}", response_model=AgentInfo, responses=ERRORS)
def get_agent(agent: Agent, config: Cfg) -> AgentInfo:
    """One agent."""
    return ops.agent_info(config, agent)


@agents.post(
    "/v1/agents/{agent}/messages",
    status_code=202,
    response_model=Accepted,
    responses={**ERRORS, 200: {"content": sse_schema()}},
)
def send_message(
    agent: Agent,
    body: SendMessage,
    r: Redis,
    hub: StreamHub,
    config: Cfg,
    who: Who,
    accept: str = Header(""),
    idempotency_key: str | None = Header(
        None,
        description="the same key on a retry answers with the run the first attempt made "
        "(422 if it was used for another message to this conversation)",
    ),
) -> Any:
    """Accept a message into the conversation; 202 with the run id, or its SSE stream."""
    streams = body.stream or "text/event-stream" in accept
    if streams:
        hold_stream()  # before the run is submitted: a refused stream starts nothing
    submitted = ops.send(r, config, agent, body, idempotency_key, who)
    if streams:
        return sse_response(hub, submitted.run_id, "0-0")
    return ops.accepted(submitted.run_id)


@conversations.get("/v1/conversations", response_model=dict[str, list[Conversation]])
def list_conversations(
    r: Redis, who: Who, agent: str | None = None, tenant: Tenant = None
) -> dict[str, list[Conversation]]:
    """Every conversation the token sees, most recent first (``?agent=``, ``?tenant=``)."""
    return {"conversations": ops.conversations(r, agent, who, tenant)}


@conversations.post(f"{CONVERSATION}/kill", response_model=KillResult, responses=ERRORS)
def kill_run(
    agent: Agent, sender: str, r: Redis, config: Cfg, who: Who, tenant: Tenant = None
) -> KillResult:
    """Cancel the conversation's active run (``run_id`` null if nothing was running)."""
    return ops.kill(r, config, agent, sender, who.acting(tenant))


@conversations.get(f"{CONVERSATION}/history", responses=ERRORS)
def history(
    agent: Agent, sender: str, r: Redis, config: Cfg, who: Who, tenant: Tenant = None
) -> dict[str, list[dict[str, Any]]]:
    """The conversation's messages in order."""
    return {"messages": ops.history(r, config, agent, sender, who.acting(tenant))}


@conversations.post(f"{CONVERSATION}/reply", response_model=Replied, responses=TURN_ERRORS)
def reply(
    agent: Agent, sender: str, body: Reply, r: Redis, config: Cfg, who: Who, tenant: Tenant = None
) -> Replied:
    """Answer the pending ``ask_user`` (or approval); resumes the run on any worker."""
    acting = who.acting(tenant)
    return ops.reply(r, config, agent, sender, body.content, body.call_id or "", acting)


@conversations.post(
    f"{CONVERSATION}/steer", status_code=202, response_model=Steered, responses=TURN_ERRORS
)
def steer(
    agent: Agent, sender: str, body: Steer, r: Redis, config: Cfg, who: Who, tenant: Tenant = None
) -> Steered:
    """Inject a message before the active run's next LLM call; 409 when none is active."""
    return ops.steer(r, config, agent, sender, body.content, who.acting(tenant))


@conversations.post(
    f"{CONVERSATION}/compact", status_code=202, response_model=Accepted, responses=TURN_ERRORS
)
def compact(
    agent: Agent, sender: str, r: Redis, config: Cfg, who: Who, tenant: Tenant = None
) -> Accepted:
    """Summarise the history into one message; the old history goes to the archive."""
    return ops.compact(r, config, agent, sender, who.acting(tenant))


@conversations.get(f"{CONVERSATION}/archive", responses=TURN_ERRORS)
def archive(
    agent: Agent, sender: str, r: Redis, config: Cfg, who: Who, tenant: Tenant = None
) -> dict[str, list[dict[str, Any]]]:
    """The histories compaction replaced, oldest first (``{archived_at, run_id, messages}``)."""
    return {"archives": ops.archives(r, config, agent, sender, who.acting(tenant))}


@runs.get("/v1/runs", response_model=RunPage, responses=ERRORS)
def list_runs(
    r: Redis,
    who: Who,
    agent: str | None = None,
    sender: str | None = None,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=run_list.MAX_LIMIT)] = 50,
    cursor: str | None = None,
    tenant: Tenant = None,
) -> RunPage:
    """Runs the token sees, newest first, filtered; cursor pages.

    Filters: agent, sender, status (repeatable) and tenant (an admin token's ``?tenant=``).
    """
    return run_list.list_runs(
        r,
        agent=agent,
        sender=sender,
        status=status or (),
        limit=limit,
        cursor=cursor,
        tenant=who.acting(tenant),
    )


@runs.get("/v1/runs/{run_id}", response_model=RunInfo, responses=ERRORS)
def run_status(run_id: RunId, r: Redis, who: Who) -> RunInfo:
    """Status of one run."""
    return ops.run_info(r, run_id, who)


@runs.get("/v1/runs/{run_id}/events", responses={**ERRORS, 200: {"content": sse_schema()}})
async def run_events(
    run_id: RunId,
    hub: StreamHub,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[str | None, Query(pattern=ENTRY_ID_RE.pattern)] = None,
) -> Response:
    """The run's events as SSE; resumes after ``Last-Event-ID`` (or ``?after=``).

    In the gateway app :class:`gateway.sse_route.RunEventsRoute` answers it before this route
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


ROUTERS = (agents, conversations, runs, health)
"""The native routers, in the order ``create_app`` includes them."""
