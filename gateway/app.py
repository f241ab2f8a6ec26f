"""The gateway: validate, ``submit()``, relay run events. No provider, tool or runtime code.

No ``from __future__ import annotations`` here: FastAPI resolves the ``Annotated`` dependency
aliases defined inside ``create_app`` at runtime.
"""

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from gateway import admin, bus, console, manage, openai_compat, turns, ws
from gateway.auth import install_auth
from gateway.errors import BodyLimit, install, unavailable
from gateway.metrics import install_metrics
from gateway.origin import OriginGuard
from gateway.sse import sse_response
from walrus_tasks import keys, run_list, store
from walrus_tasks.config import Config, load_config
from walrus_tasks.connection import async_redis, get_redis
from walrus_tasks.errors import InvalidInput
from walrus_tasks.models import (
    Accepted,
    AgentInfo,
    Conversation,
    KillResult,
    RunInfo,
    RunPage,
    SendMessage,
)
from walrus_tasks.names import agent_name, sender_name
from walrus_tasks.run_events import sse_schema
from walrus_tasks.runs import RunStatus
from walrus_tasks.settings import Settings, get_settings
from walrus_tasks.submit import kill, submit
from walrus_tasks.workspace import send_meta

RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d, "content": {"application/json": {}}}
    for s, d in [(404, "unknown agent or run"), (409, "busy"), (413, "body too large"),
                 (422, "invalid input")]
}  # fmt: skip


def create_app(settings: Settings | None = None, config: Config | None = None) -> FastAPI:
    """Build the ASGI app (config loaded now, so a bad config fails at start-up)."""
    settings = settings or get_settings()
    config = config or load_config(settings.home)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Its XREADs block for up to sse_keepalive: reads may take that long, and a bit more.
        app.state.aredis = async_redis(settings.redis_url, settings.sse_keepalive + 10)
        app.state.config_generation = await app.state.aredis.get(keys.CONFIG_GENERATION)
        follower = asyncio.create_task(admin.follow_reloads(app, app.state.aredis, settings))
        yield
        follower.cancel()
        await app.state.aredis.aclose()

    app = FastAPI(title="walrus_tasks gateway", version="0.1.0", lifespan=lifespan)
    app.state.config = config
    install(app)
    install_auth(app, config)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    # Added last, so it runs first: a foreign Host or Origin learns nothing, not even a 401.
    app.add_middleware(OriginGuard, config=config, settings=settings)

    def cfg() -> Config:
        return app.state.config  # type: ignore[no-any-return]

    def known_agent(agent: str) -> str:
        cfg().agent(agent_name(agent))
        return agent

    Agent = Annotated[str, Depends(known_agent)]
    Redis = Annotated[redis.Redis, Depends(get_redis)]

    def valid_run_id(run_id: str) -> str:
        if not RUN_ID_RE.fullmatch(run_id):
            raise InvalidInput(f"invalid run id {run_id!r}")
        return run_id

    RunId = Annotated[str, Depends(valid_run_id)]

    @app.post(
        "/v1/agents/{agent}/messages",
        status_code=202,
        response_model=Accepted,
        responses={**ERRORS, 200: {"content": sse_schema()}},
    )
    def send_message(
        agent: Agent, body: SendMessage, r: Redis, request: Request, accept: str = Header("")
    ) -> Any:
        """Accept a message into the conversation; 202 with the run id, or its SSE stream."""
        sender = sender_name(body.sender)
        meta = send_meta(cfg(), agent, body.cwd, body.tenant)
        submitted = submit(r, agent, sender, body.content, body.on_busy, meta=meta)
        if body.stream or "text/event-stream" in accept:
            return sse_response(request.app.state.aredis, submitted.run_id, "0-0", settings)
        return Accepted(run_id=submitted.run_id, events_url=f"/v1/runs/{submitted.run_id}/events")

    @app.get("/v1/runs", response_model=RunPage, responses=ERRORS)
    def runs(
        r: Redis,
        agent: str | None = None,
        sender: str | None = None,
        status: Annotated[list[RunStatus] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=run_list.MAX_LIMIT)] = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs, newest first, filtered by agent, sender and status (repeatable); cursor pages."""
        return run_list.list_runs(
            r, agent=agent, sender=sender, status=status or (), limit=limit, cursor=cursor
        )

    @app.get("/v1/runs/{run_id}", response_model=RunInfo, responses=ERRORS)
    def run_status(run_id: RunId, r: Redis) -> RunInfo:
        """Status of one run."""
        return store.get_run(r, run_id)

    @app.get(
        "/v1/runs/{run_id}/events",
        responses={**ERRORS, 200: {"content": sse_schema()}},
    )
    def run_events(
        run_id: RunId,
        r: Redis,
        request: Request,
        last_event_id: Annotated[str | None, Header()] = None,
        after: Annotated[str | None, Query(pattern=r"^\d+-\d+$")] = None,
    ) -> Response:
        """The run's events as SSE; resumes after ``Last-Event-ID`` (or ``?after=``)."""
        store.run_record(r, run_id)
        start = last_event_id or after or "0-0"
        if not re.fullmatch(r"\d+-\d+", start):
            raise InvalidInput(f"invalid Last-Event-ID {start!r}")
        return sse_response(request.app.state.aredis, run_id, start, settings)

    @app.post(
        "/v1/agents/{agent}/conversations/{sender}/kill",
        response_model=KillResult,
        responses=ERRORS,
    )
    def kill_run(agent: Agent, sender: str, r: Redis) -> KillResult:
        """Cancel the conversation's active run (``run_id`` null if nothing was running)."""
        return KillResult(run_id=kill(r, agent, sender_name(sender)))

    @app.get("/v1/agents/{agent}/conversations/{sender}/history", responses=ERRORS)
    def history(agent: Agent, sender: str, r: Redis) -> dict[str, list[dict[str, Any]]]:
        """The conversation's messages in order."""
        return {"messages": store.history(r, agent, sender_name(sender))}

    @app.get("/v1/conversations", response_model=dict[str, list[Conversation]])
    def conversations(r: Redis, agent: str | None = None) -> dict[str, list[Conversation]]:
        """Every conversation, most recent first (``?agent=`` to filter)."""
        return {"conversations": store.conversations(r, agent_name(agent) if agent else None)}

    def info(name: str) -> AgentInfo:
        a = cfg().agent(name)
        return AgentInfo(
            name=a.name, model=a.model, description=a.description, tools=a.tools, members=a.members
        )

    @app.get("/v1/agents", response_model=dict[str, list[AgentInfo]])
    def agents() -> dict[str, list[AgentInfo]]:
        """The configured agents."""
        return {"agents": [info(n) for n in sorted(cfg().agents)]}

    @app.get("/v1/agents/{agent}", response_model=AgentInfo, responses=ERRORS)
    def agent(agent: Agent) -> AgentInfo:
        """One agent."""
        return info(agent)

    @app.get("/healthz")
    def healthz(r: Redis) -> JSONResponse:
        """200 when Redis answers, else 503 (with ``Retry-After``)."""
        try:
            r.ping()
        except redis.RedisError as e:
            return unavailable(e)
        return JSONResponse({"status": "ok"})

    openai_compat.register(app, cfg, settings)
    admin.register(app, settings)
    bus.register(app, cfg, settings)
    manage.register(app, cfg, settings)
    turns.register(app, cfg)
    ws.register(app, settings)
    console.register(app)
    install_metrics(app)  # last: it labels requests by the routes registered above
    return app
