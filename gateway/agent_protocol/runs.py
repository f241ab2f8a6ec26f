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
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from gateway import operations as ops
from gateway.agent_protocol import messages, state, streaming
from gateway.agent_protocol.errors import AgentProtocolRoute
from gateway.agent_protocol.models import RunCreate
from gateway.agent_protocol.tenant import Space
from gateway.deps import ARedis, Cfg, Redis, Sets
from gateway.sse import SSE_HEADERS
from gateway.stream_limit import hold_stream
from walrus_tasks import keys, runs, waits, webhooks
from walrus_tasks.config import Config
from walrus_tasks.errors import Conflict, NotFound
from walrus_tasks.settings import Settings
from walrus_tasks.submit import SubmitOnBusy, submit

router = APIRouter(route_class=AgentProtocolRoute, tags=["Agent Protocol"])
RUN = "/threads/{thread_id}/runs/{run_id}"
ON_BUSY: dict[str, SubmitOnBusy] = {
    "reject": "reject", "enqueue": "enqueue", "interrupt": "interrupt", "rollback": "rollback"
}  # fmt: skip


def _thread(
    r: redis.Redis, tenant: str | None, thread_id: str | None, body: RunCreate
) -> dict[str, str]:
    if thread_id is None:  # stateless: a thread of its own
        return state.create_thread(r, tenant, None, {}, "raise")
    try:
        return state.raw_thread(r, tenant, thread_id)
    except NotFound:
        if body.if_not_exists != "create":
            raise
        return state.create_thread(r, tenant, thread_id, {}, "do_nothing")


def _last_question(r: redis.Redis, run_id: str) -> str:
    """The entry id of the run's latest ``ask_user`` (its rest is streamed after it)."""
    entries: Any = r.xrevrange(keys.run_part(run_id, "events"), count=1000)
    for entry_id, fields in entries:
        if '"ask_user"' in fields["data"]:
            return str(entry_id)
    return "0-0"


def _resume(r: redis.Redis, h: dict[str, str], value: Any, webhook: str | None) -> tuple[str, str]:
    """Answer the thread's pending interrupts with ``value``: ``(run id, stream cursor)``."""
    active = state.active_run(r, h)
    pending = state.pending_interrupts(r, active) if active else []
    if not active or not pending:
        raise Conflict(f"thread {h['thread_id']} has no interrupt to resume")
    if webhook:  # the walrus run that goes on ends this LangGraph run too
        runs.set_webhook(r, active, webhook)
    after = _last_question(r, active)
    agent, sender = h["agent"], h["sender"]
    ids = {i["id"] for i in pending}
    if isinstance(value, dict) and value and set(value) <= ids:  # {interrupt id: answer}
        for call_id, answer in value.items():
            waits.reply(r, agent, sender, messages.resume_text(answer), call_id)
    else:
        waits.reply(r, agent, sender, messages.resume_text(value), pending[0]["id"])
    return active, after


def start(
    r: redis.Redis, config: Config, tenant: str | None, thread_id: str | None, body: RunCreate
) -> tuple[str, dict[str, str], str]:
    """Start (or resume) a run in ``tenant``: ``(run id, thread, stream cursor)``."""
    agent = ops.known_agent(config, body.assistant_id)
    if body.webhook is not None:  # before anything is stored, a stateless run's thread too
        webhooks.check_url(config, body.webhook)
    h = _thread(r, tenant, thread_id, body)
    state.bind_agent(r, h, agent)
    if body.command and "resume" in body.command:
        run_id, after = _resume(r, h, body.command["resume"], body.webhook)
        return run_id, h, after
    text = messages.input_text(body.input)
    meta = {"webhook": body.webhook} if body.webhook else {}
    if tenant:  # counted under the tenant (fair share, limits, metrics), as a native send
        meta["tenant"] = tenant
    strategy = ON_BUSY[body.multitask_strategy]
    submitted = submit(r, agent, h["sender"], text, strategy, meta=meta or None)
    state.record_run(r, submitted.run_id, h, agent, body)
    return submitted.run_id, h, "0-0"


def _location(h: dict[str, str], run_id: str) -> dict[str, str]:
    return {"Content-Location": f"/threads/{h['thread_id']}/runs/{run_id}"}


async def _stream(
    r: redis.Redis,
    aredis: aioredis.Redis,
    config: Config,
    settings: Settings,
    tenant: str | None,
    thread_id: str | None,
    body: RunCreate,
) -> StreamingResponse:
    hold_stream()  # before the run is started: a refused stream starts nothing
    run_id, h, after = await run_in_threadpool(start, r, config, tenant, thread_id, body)
    frames = streaming.frames(aredis, run_id, h, body.modes(), settings, after=after)
    headers = {**SSE_HEADERS, **_location(h, run_id)}
    return StreamingResponse(frames, media_type="text/event-stream", headers=headers)


async def _wait(
    r: redis.Redis,
    aredis: aioredis.Redis,
    config: Config,
    settings: Settings,
    tenant: str | None,
    thread_id: str | None,
    body: RunCreate,
) -> JSONResponse:
    run_id, h, after = await run_in_threadpool(start, r, config, tenant, thread_id, body)
    result = await streaming.final_values(aredis, run_id, h, settings, after)
    return JSONResponse(result, headers=_location(h, run_id))


async def _create(
    r: redis.Redis, config: Config, tenant: str | None, thread_id: str | None, body: RunCreate
) -> JSONResponse:
    run_id, h, _ = await run_in_threadpool(start, r, config, tenant, thread_id, body)
    view = await run_in_threadpool(state.run_view, r, run_id, h)
    return JSONResponse(view, headers=_location(h, run_id))


@router.post("/threads/{thread_id}/runs")
async def create_run(
    thread_id: str, body: RunCreate, r: Redis, config: Cfg, tenant: Space
) -> JSONResponse:
    """Start a background run on the thread: the run."""
    return await _create(r, config, tenant, thread_id, body)


@router.post("/threads/{thread_id}/runs/stream")
async def stream_run(
    thread_id: str,
    body: RunCreate,
    r: Redis,
    aredis: ARedis,
    config: Cfg,
    settings: Sets,
    tenant: Space,
) -> StreamingResponse:
    """Start a run on the thread and stream it (``metadata`` first, then the modes asked)."""
    return await _stream(r, aredis, config, settings, tenant, thread_id, body)


@router.post("/threads/{thread_id}/runs/wait")
async def wait_run(
    thread_id: str,
    body: RunCreate,
    r: Redis,
    aredis: ARedis,
    config: Cfg,
    settings: Sets,
    tenant: Space,
) -> JSONResponse:
    """Start a run on the thread; the thread's values once it ends (or is interrupted)."""
    return await _wait(r, aredis, config, settings, tenant, thread_id, body)


@router.post("/runs")
async def create_stateless(body: RunCreate, r: Redis, config: Cfg, tenant: Space) -> JSONResponse:
    """A background run on a new thread of its own."""
    return await _create(r, config, tenant, None, body)


@router.post("/runs/stream")
async def stream_stateless(
    body: RunCreate, r: Redis, aredis: ARedis, config: Cfg, settings: Sets, tenant: Space
) -> StreamingResponse:
    """Stream a run on a new thread of its own."""
    return await _stream(r, aredis, config, settings, tenant, None, body)


@router.post("/runs/wait")
async def wait_stateless(
    body: RunCreate, r: Redis, aredis: ARedis, config: Cfg, settings: Sets, tenant: Space
) -> JSONResponse:
    """Wait for a run on a new thread of its own."""
    return await _wait(r, aredis, config, settings, tenant, None, body)


@router.get("/threads/{thread_id}/runs")
def list_runs(
    thread_id: str,
    r: Redis,
    tenant: Space,
    limit: int = 10,
    offset: int = 0,
    status: str | None = None,
) -> list[dict[str, Any]]:
    """The thread's runs, newest first."""
    h = state.raw_thread(r, tenant, thread_id)
    ids: list[str] = r.lrange(keys.ap_thread_runs(thread_id, tenant), 0, -1)  # type: ignore[assignment]
    views = []
    for run_id in reversed(ids):
        try:
            views.append(state.run_view(r, run_id, h))
        except NotFound:
            continue  # its record expired
    views = [v for v in views if status is None or v["status"] == status]
    return views[offset : offset + limit]


@router.get(RUN)
def get_run(thread_id: str, run_id: str, r: Redis, tenant: Space) -> dict[str, Any]:
    """One run of the thread."""
    return state.run_view(r, run_id, state.raw_thread(r, tenant, thread_id))


@router.delete(RUN, status_code=204)
def delete_run(thread_id: str, run_id: str, r: Redis, tenant: Space) -> Response:
    """Forget an ended run (409 while it is pending or running)."""
    view = state.run_view(r, run_id, state.raw_thread(r, tenant, thread_id))
    if view["status"] in ("pending", "running"):
        raise Conflict(f"run {run_id} is {view['status']}: cancel it first")
    r.lrem(keys.ap_thread_runs(thread_id, tenant), 0, run_id)
    r.delete(keys.ap_run(run_id))
    return Response(status_code=204)


@router.post(f"{RUN}/cancel")
async def cancel_run(
    thread_id: str,
    run_id: str,
    r: Redis,
    aredis: ARedis,
    settings: Sets,
    tenant: Space,
    wait: int = 0,
    action: Literal["interrupt", "rollback"] = "interrupt",
) -> JSONResponse:
    """Cancel the run; with ``wait=1`` answer once it has ended; ``rollback`` drops its messages.

    A rollback marks the run first, then cancels it: its end removes its messages in the same
    step, whoever ends it and whether or not this call waits.
    """
    h = await run_in_threadpool(state.raw_thread, r, tenant, thread_id)
    view = await run_in_threadpool(state.run_view, r, run_id, h)
    if action == "rollback":
        await run_in_threadpool(runs.rollback, r, run_id, h["agent"], h["sender"])
    await run_in_threadpool(waits.cancel, r, run_id)
    if wait:
        async for _, _event in ops.run_events(aredis, run_id, "0-0", settings):
            pass  # until its end event
        view = await run_in_threadpool(state.run_view, r, run_id, h)
    return JSONResponse(view, status_code=200 if wait else 202)


@router.get(f"{RUN}/join")
async def join_run(
    thread_id: str, run_id: str, r: Redis, aredis: ARedis, settings: Sets, tenant: Space
) -> dict[str, Any]:
    """The thread's values once the run has ended (or been interrupted)."""
    h = await run_in_threadpool(state.raw_thread, r, tenant, thread_id)
    await run_in_threadpool(state.run_view, r, run_id, h)
    return await streaming.final_values(aredis, run_id, h, settings)


@router.get(f"{RUN}/stream")
async def join_stream(
    thread_id: str,
    run_id: str,
    r: Redis,
    aredis: ARedis,
    settings: Sets,
    tenant: Space,
    stream_mode: Annotated[list[str] | None, Query()] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """The run's stream; after ``Last-Event-ID`` (``-1``: from the start)."""
    h = await run_in_threadpool(state.raw_thread, r, tenant, thread_id)
    await run_in_threadpool(state.run_view, r, run_id, h)
    asked = [m for m in stream_mode or [] if m]  # the SDK sends stream_mode= for none
    modes = asked or await run_in_threadpool(state.stream_modes, r, run_id)
    streaming.resume_point(last_event_id)  # a malformed id is a 422 before the stream starts
    hold_stream()
    frames = streaming.frames(aredis, run_id, h, modes, settings, last_event_id=last_event_id)
    return StreamingResponse(
        frames, media_type="text/event-stream", headers={**SSE_HEADERS, **_location(h, run_id)}
    )
