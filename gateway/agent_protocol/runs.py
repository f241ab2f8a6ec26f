"""Runs: create (background, stream, wait; on a thread or stateless), list, get, cancel, join.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.

Multitask strategies are walrus's ``on_busy`` (``reject`` is a 409), plus ``rollback``: the
interrupted run is cancelled and marked, and the script that ends it removes its messages from
history before the thread's next run can start (``walrus_tasks.runs.rollback``; the same for
``cancel`` with ``action=rollback``). ``command: {resume}`` answers the pending question or
approval: the walrus run that asked goes on, and the call streams (or waits for) its rest.
``webhook`` is checked against ``[webhooks] allowed_hosts`` before anything is stored (422), and
kept on the walrus run, whose end sends it (``walrus_tasks.webhooks``).

Every route acts in the caller's tenant (``tenant.Space``): its threads, and runs in their
conversations, which are the tenant's (so the worker, workspace and memory are the tenant's).
"""

from typing import Annotated, Any, Literal

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from gateway import operations as ops
from gateway import sse_route, thread_joins, thread_state
from gateway import thread_operations as thread_ops
from gateway.agent_protocol import state, streaming
from gateway.agent_protocol.errors import AgentProtocolRoute, render
from gateway.agent_protocol.models import RunCreate
from gateway.agent_protocol.run_start import start_async
from gateway.agent_protocol.tenant import Space
from gateway.deps import ARedis, Cfg, Redis, StreamHub, caller_of
from gateway.hub import Hub
from gateway.plain_post import body_of
from gateway.sse import EventStream, face_stream
from gateway.stream_limit import hold_stream
from walrus_tasks.agent_protocol import run_object
from walrus_tasks.config import Config
from walrus_tasks.errors import Conflict
from walrus_tasks.models import RunStatus

router = APIRouter(route_class=AgentProtocolRoute, tags=["Agent Protocol"])
RUN = "/threads/{thread_id}/runs/{run_id}"


def _location(h: dict[str, str], run_id: str) -> dict[str, str]:
    return {"Content-Location": f"/threads/{h['thread_id']}/runs/{run_id}"}


def _event_stream(
    hub: Hub,
    aredis: aioredis.Redis,
    run_id: str,
    h: dict[str, str],
    modes: list[str],
    last_event_id: str | None = None,
    after: str | None = None,
) -> EventStream:
    frames = streaming.frames(hub, aredis, run_id, h, modes, last_event_id, after)
    render = streaming.stream_error(h, run_id)
    return face_stream(hub, frames, render, _location(h, run_id))


async def _stream(
    r: redis.Redis,
    hub: Hub,
    aredis: aioredis.Redis,
    config: Config,
    tenant: str | None,
    thread_id: str | None,
    body: RunCreate,
) -> EventStream:
    hold_stream()  # before the run is started: a refused stream starts nothing
    run_id, h, after, _ = await start_async(r, aredis, config, tenant, thread_id, body)
    return _event_stream(hub, aredis, run_id, h, body.modes(), after=after)


async def _wait(
    r: redis.Redis,
    hub: Hub,
    aredis: aioredis.Redis,
    config: Config,
    tenant: str | None,
    thread_id: str | None,
    body: RunCreate,
) -> JSONResponse:
    run_id, h, after, _ = await start_async(r, aredis, config, tenant, thread_id, body)
    result = await streaming.final_values(hub, aredis, run_id, h, after)
    return JSONResponse(result, headers=_location(h, run_id))


async def _create(
    r: redis.Redis,
    aredis: aioredis.Redis,
    config: Config,
    tenant: str | None,
    thread_id: str | None,
    body: RunCreate,
) -> JSONResponse:
    run_id, h, _, view = await start_async(r, aredis, config, tenant, thread_id, body, viewed=True)
    return JSONResponse(view, headers=_location(h, run_id))


async def _thread_of_run(
    aredis: aioredis.Redis, tenant: str | None, thread_id: str, run_id: str
) -> tuple[dict[str, str], bool]:
    """Thread ``thread_id`` of ``tenant``, if run ``run_id`` is one of its runs (NotFound).

    And whether the run's record says it has ended (its ``end`` is in its stream then).
    """
    h, _, record = await thread_ops.thread_and_run_async(aredis, tenant, thread_id, run_id)
    return h, _ended(record)


def _ended(record: dict[str, str]) -> bool:
    """Whether the walrus run ``record`` says it has ended (its ``end`` is in its stream)."""
    status = record.get("status")
    return status is not None and RunStatus(status).terminal


@router.post("/threads/{thread_id}/runs")
async def create_run(
    thread_id: str, body: RunCreate, r: Redis, aredis: ARedis, config: Cfg, tenant: Space
) -> JSONResponse:
    """Start a background run on the thread: the run.

    In the gateway app :class:`gateway.sse_route.StreamRoutes` answers it (``PLAIN_CREATE``).
    """
    return await _create(r, aredis, config, tenant, thread_id, body)


@router.post("/threads/{thread_id}/runs/stream")
async def stream_run(
    thread_id: str,
    body: RunCreate,
    r: Redis,
    hub: StreamHub,
    aredis: ARedis,
    config: Cfg,
    tenant: Space,
) -> EventStream:
    """Start a run on the thread and stream it (``metadata`` first, then the modes asked)."""
    return await _stream(r, hub, aredis, config, tenant, thread_id, body)


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(
    thread_id: str,
    body: RunCreate,
    r: Redis,
    hub: StreamHub,
    aredis: ARedis,
    config: Cfg,
    tenant: Space,
) -> JSONResponse:
    """Start a run on the thread; the thread's values once it ends (or is interrupted)."""
    return await _wait(r, hub, aredis, config, tenant, thread_id, body)


@router.post("/runs")
async def create_stateless(
    body: RunCreate, r: Redis, aredis: ARedis, config: Cfg, tenant: Space
) -> JSONResponse:
    """A background run on a new thread of its own."""
    return await _create(r, aredis, config, tenant, None, body)


@router.post("/runs/stream")
async def stream_stateless(
    body: RunCreate, r: Redis, hub: StreamHub, aredis: ARedis, config: Cfg, tenant: Space
) -> EventStream:
    """Stream a run on a new thread of its own."""
    return await _stream(r, hub, aredis, config, tenant, None, body)


@router.post("/runs/wait")
async def wait_stateless(
    body: RunCreate, r: Redis, hub: StreamHub, aredis: ARedis, config: Cfg, tenant: Space
) -> JSONResponse:
    """Wait for a run on a new thread of its own."""
    return await _wait(r, hub, aredis, config, tenant, None, body)


@router.get("/threads/{thread_id}/runs")
async def list_runs(
    thread_id: str,
    aredis: ARedis,
    tenant: Space,
    limit: int = 10,
    offset: int = 0,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """The thread's runs, newest first (one whose record expired is left out)."""
    h = await thread_ops.get_thread_async(aredis, tenant, thread_id)
    runs = await thread_state.thread_runs(aredis, h)
    views = [run_object(run_id, record, ap) for run_id, ap, record in reversed(runs)]
    views = [v for v in views if status is None or v["status"] == status]
    return views[offset : offset + limit]


@router.get(RUN)
async def get_run(thread_id: str, run_id: str, aredis: ARedis, tenant: Space) -> dict[str, Any]:
    """One run of the thread, read with the thread in one round trip."""
    _, ap, record = await thread_ops.thread_and_run_async(aredis, tenant, thread_id, run_id)
    return run_object(run_id, record, ap)


@router.delete(RUN, status_code=204)
def delete_run(thread_id: str, run_id: str, r: Redis, tenant: Space) -> Response:
    """Forget an ended run (409 while it is pending or running)."""
    h = thread_ops.get_thread(r, tenant, thread_id)
    view = state.run_view(r, run_id, h)
    if view["status"] in ("pending", "running"):
        raise Conflict(f"run {run_id} is {view['status']}: cancel it first")
    thread_ops.forget_thread_run(r, run_id, h)
    return Response(status_code=204)


@router.post(f"{RUN}/cancel")
async def cancel_run(
    thread_id: str,
    run_id: str,
    r: Redis,
    hub: StreamHub,
    tenant: Space,
    wait: int = 0,
    action: Literal["interrupt", "rollback"] = "interrupt",
) -> JSONResponse:
    """Cancel the run; with ``wait=1`` answer once it has ended; ``rollback`` drops its messages.

    A rollback marks the run first, then cancels it: its end removes its messages in the same
    step, whoever ends it and whether or not this call waits.
    """
    h = await run_in_threadpool(thread_ops.get_thread, r, tenant, thread_id)
    view = await run_in_threadpool(state.run_view, r, run_id, h)
    if action == "rollback":
        await run_in_threadpool(thread_ops.rollback_run, r, run_id, h)
    await run_in_threadpool(thread_ops.cancel_run, r, run_id)
    if wait:
        async for _, _event in ops.run_events(hub, run_id, "0-0"):
            pass  # until its end event
        view = await run_in_threadpool(state.run_view, r, run_id, h)
    return JSONResponse(view, status_code=200 if wait else 202)


@router.get(f"{RUN}/join")
async def join_run(
    thread_id: str, run_id: str, hub: StreamHub, aredis: ARedis, tenant: Space
) -> dict[str, Any]:
    """The thread's values once the run has ended (or been interrupted).

    In the gateway app :class:`gateway.sse_route.StreamRoutes` answers it (``PLAIN_JOIN``).
    """
    read = await thread_joins.join_read(aredis, tenant, thread_id, run_id)
    ended = _ended(read.record)
    return await streaming.final_values(
        hub, aredis, run_id, read.thread, ended=ended, head=read.head,
        history=read.history if ended else None,
    )  # fmt: skip


@router.get(f"{RUN}/stream")
async def join_stream(
    thread_id: str,
    run_id: str,
    r: Redis,
    hub: StreamHub,
    aredis: ARedis,
    tenant: Space,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventStream:
    """The run's stream; after ``Last-Event-ID`` (``-1``: from the start).

    In the gateway app :class:`gateway.sse_route.StreamRoutes` answers it before this route
    does (``PLAIN_JOIN_STREAM``), with :func:`_join_stream` too.
    """
    return await _join_stream(
        r, hub, aredis, tenant, thread_id, run_id, stream_mode or [], last_event_id
    )


async def _join_stream(
    r: redis.Redis,
    hub: Hub,
    aredis: aioredis.Redis,
    tenant: str | None,
    thread_id: str,
    run_id: str,
    stream_mode: list[str],
    last_event_id: str | None,
) -> EventStream:
    h, _ = await _thread_of_run(aredis, tenant, thread_id, run_id)
    asked = [m for m in stream_mode if m]  # the SDK sends stream_mode= for none
    modes = asked or await run_in_threadpool(thread_ops.stream_modes, r, run_id)
    streaming.resume_point(last_event_id)  # a malformed id is a 422 before the stream starts
    hold_stream()
    return _event_stream(hub, aredis, run_id, h, modes, last_event_id=last_event_id)


async def _plain_join_stream(
    scope: Scope, params: dict[str, str], query: sse_route.Query
) -> EventStream:
    """:func:`join_stream` as the plain ASGI route calls it (what FastAPI would resolve)."""
    state = scope["app"].state
    tenant = caller_of(scope).acting(query.one("tenant"))
    return await _join_stream(
        state.redis, state.hub, state.aredis, tenant, params["thread_id"], params["run_id"],
        query.params.get("stream_mode", []), query.last_event_id,
    )  # fmt: skip


PLAIN_JOIN_STREAM = sse_route.plain(router, f"{RUN}/stream", _plain_join_stream, render)
"""``GET /threads/{thread_id}/runs/{run_id}/stream`` for :mod:`gateway.sse_route`."""


# The two calls of every background run a LangGraph client makes (``runs.create``, then
# ``runs.join``), answered below FastAPI too: its routing, dependency solving and request
# wrapping were over a quarter of the gateway's CPU under them (docs/benchmarks.md, issue 25,
# ninth round). Each calls what its route calls; a body FastAPI would refuse goes on to it.


async def _plain_create(
    scope: Scope, params: dict[str, str], query: sse_route.Query
) -> JSONResponse | None:
    """:func:`create_run` as the plain ASGI route calls it (None: FastAPI answers)."""
    body = body_of(scope, query, RunCreate)
    if body is None:
        return None  # not JSON, or invalid: FastAPI's 422
    state = scope["app"].state
    tenant = caller_of(scope).acting(query.one("tenant"))
    thread_id = params["thread_id"]
    return await _create(state.redis, state.aredis, state.config, tenant, thread_id, body)


_VALUES = TypeAdapter(dict[str, Any])
"""What :func:`join_run` answers, as FastAPI serialises it (its return annotation's model)."""


async def _plain_join(scope: Scope, params: dict[str, str], query: sse_route.Query) -> Response:
    """:func:`join_run` as the plain ASGI route calls it, answered as FastAPI answers it."""
    state = scope["app"].state
    tenant = caller_of(scope).acting(query.one("tenant"))
    values = await join_run(params["thread_id"], params["run_id"], state.hub, state.aredis, tenant)
    return Response(_VALUES.dump_json(values), media_type="application/json")


PLAIN_CREATE = sse_route.plain(
    router, "/threads/{thread_id}/runs", _plain_create, render, method="POST"
)
"""``POST /threads/{thread_id}/runs`` for :mod:`gateway.sse_route`."""
PLAIN_JOIN = sse_route.plain(router, f"{RUN}/join", _plain_join, render)
"""``GET /threads/{thread_id}/runs/{run_id}/join`` for :mod:`gateway.sse_route`."""
