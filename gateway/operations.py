"""The gateway's operations, written once: every protocol is a thin adapter over these.

The native ``/v1`` routes (:mod:`gateway.native`), the WebSocket (:mod:`gateway.ws`), the
OpenAI-compatible endpoint (:mod:`gateway.openai_compat`) and the Agent Protocol
(:mod:`gateway.agent_protocol`) translate shapes and errors; what an operation checks and does
is here. Each function validates its names itself (agent and sender), raises the
:mod:`walrus_tasks.errors` exceptions (each protocol maps them once), and is blocking unless it
is ``async`` (run streams are read through the app's hub, which the caller passes).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

import redis
import redis.asyncio as aioredis
from starlette.concurrency import run_in_threadpool

from gateway.hub import Head, Hub, Item
from walrus_tasks import client_tools as client_tools_mod
from walrus_tasks import conversations as conversations_mod
from walrus_tasks import crons, ids, keys, reads, run_list, subscriptions, usage, waits, webhooks
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.errors import Conflict, InvalidInput, NotFound, WalrusError
from walrus_tasks.faces import Face
from walrus_tasks.feed import format_cursor, live_end, parse_cursor
from walrus_tasks.models import (
    Accepted,
    AgentInfo,
    Cancelled,
    ClientTool,
    Conversation,
    CronEntry,
    CronSpec,
    Published,
    Replied,
    RunInfo,
    RunPage,
    RunStatus,
    SendMessage,
    Steered,
    SubscriptionSpec,
    UsageReport,
)
from walrus_tasks.names import agent_name, sender_name
from walrus_tasks.submit import (
    IDEMPOTENCY_KEY_MAX,
    cancel_active,
    keyed_run_id,
    submit,
    submit_async,
)
from walrus_tasks.submit import (
    Submitted as Submitted,  # what a send answers, for the faces (which may not import submit)
)
from walrus_tasks.tenancy import OPEN, Caller, scoped
from walrus_tasks.workspace import send_meta

COMPACT_REQUEST = "(compact the conversation)"
"""The content recorded for a compaction run (it never enters history)."""


# --- agents ---------------------------------------------------------------------------------


def known_agent(config: Config, name: Any) -> str:
    """``name`` if it is a valid, configured agent; InvalidInput or NotFound otherwise."""
    config.agent(agent_name(name))
    return str(name)


def info_of(a: AgentConfig) -> AgentInfo:
    """The public view of an agent's config."""
    return AgentInfo(
        name=a.name, model=a.model, description=a.description, tools=a.tools, members=a.members
    )


def agent_info(config: Config, name: Any) -> AgentInfo:
    """One agent (NotFound if it is not configured)."""
    return info_of(config.agent(known_agent(config, name)))


def list_agents(config: Config) -> list[AgentInfo]:
    """Every configured agent, by name."""
    return [info_of(config.agents[n]) for n in sorted(config.agents)]


# --- messages and runs ----------------------------------------------------------------------


def events_url(run_id: str) -> str:
    """Where a run's events are read over SSE."""
    return f"/v1/runs/{run_id}/events"


def accepted(run_id: str) -> Accepted:
    """The ``202`` body of an accepted message."""
    return Accepted(run_id=run_id, events_url=events_url(run_id))


def sender_in(tenant: str | None, sender: Any) -> str:
    """The state layer's sender of a client's ``sender`` (validated) in ``tenant``."""
    return scoped(tenant, sender_name(sender))


def send(
    r: redis.Redis,
    config: Config,
    agent: Any,
    body: SendMessage,
    idempotency_key: str | None = None,
    caller: Caller = OPEN,
    face: Face = "http",
) -> Submitted:
    """Accept ``body`` into conversation ``(agent, body.sender)``: a queued run.

    The conversation is of the caller's tenant (an admin's ``body.tenant``; a tenant token that
    names one is Forbidden), and the run is counted under that tenant.
    With ``idempotency_key`` a retry of the same message gets the run the first attempt made
    (``keyed_run_id``); the key reused for another message is a 422, and nothing is written.
    """
    agent, sender, run_id, meta = _message(config, agent, body, idempotency_key, caller, face)
    return submit(r, agent, sender, body.content, body.on_busy, run_id=run_id, meta=meta)


async def send_async(
    aredis: aioredis.Redis,
    r: redis.Redis,
    config: Config,
    agent: Any,
    body: SendMessage,
    idempotency_key: str | None = None,
    caller: Caller = OPEN,
    face: Face = "http",
) -> Submitted:
    """:func:`send` on the event loop (``submit_async``: ``aredis`` is ``r``'s Redis).

    A ``cwd`` is checked in its directory on a thread, with the whole send.
    """
    if body.cwd:
        return await run_in_threadpool(send, r, config, agent, body, idempotency_key, caller, face)
    agent, sender, run_id, meta = _message(config, agent, body, idempotency_key, caller, face)
    return await submit_async(
        aredis, r, agent, sender, body.content, body.on_busy, run_id=run_id, meta=meta
    )


def _message(
    config: Config,
    agent: Any,
    body: SendMessage,
    idempotency_key: str | None,
    caller: Caller,
    face: Face,
) -> tuple[str, str, str | None, dict[str, str]]:
    """:func:`send`'s checks: the agent, the sender, the run id of the key, the run's fields."""
    agent = known_agent(config, agent)
    tenant = caller.acting(body.tenant)
    sender = sender_in(tenant, body.sender)
    run_id = None
    if idempotency_key is not None:
        if not 0 < len(idempotency_key) <= IDEMPOTENCY_KEY_MAX or not idempotency_key.isprintable():
            raise InvalidInput(
                f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} printable characters"
            )
        run_id = keyed_run_id(agent, sender, idempotency_key)  # submit.lua checks its reuse
    return (
        agent,
        sender,
        run_id,
        _run_meta(config, agent, tenant, face, body.cwd, body.client_tools),
    )


def _run_meta(
    config: Config,
    agent: str,
    tenant: str | None,
    face: Face,
    cwd: str | None = None,
    client_tools: list[ClientTool] | None = None,
) -> dict[str, str]:
    """The run fields of a send: tenant and cwd (``send_meta``), face, the client's tools."""
    meta = {**(send_meta(config, agent, cwd, tenant) or {}), "face": face}
    if client_tools:
        meta[client_tools_mod.RUN_FIELD] = client_tools_mod.run_field(
            config.agent(agent), client_tools
        )
    return meta


def send_with_context(
    r: redis.Redis,
    config: Config,
    agent: Any,
    prior: list[dict[str, Any]],
    content: str,
    tenant: str | None = None,
    face: Face = "http",
    client_tools: list[ClientTool] | None = None,
    prefix: str = "oneshot",
) -> tuple[str, Submitted]:
    """Send ``content`` in a new conversation of its own whose history is ``prior``.

    ``(sender, run)``: the conversation is nobody else's, so parallel calls neither queue behind
    each other nor see each other's messages. Its sender is ``<prefix>-<uuid>`` in ``tenant``.
    ``client_tools``: the client's own functions, as ``SendMessage.client_tools`` (checked
    before anything is written).
    """
    agent, sender, meta = _oneshot(config, agent, tenant, face, client_tools, prefix)
    if prior and not conversations_mod.seed(r, agent, sender, prior):
        raise _not_new(agent, sender)
    return sender, submit(r, agent, sender, content, meta=meta)


async def send_with_context_async(
    aredis: aioredis.Redis,
    r: redis.Redis,
    config: Config,
    agent: Any,
    prior: list[dict[str, Any]],
    content: str,
    tenant: str | None = None,
    face: Face = "http",
) -> tuple[str, Submitted]:
    """:func:`send_with_context` on the event loop: the stateless chat faces' send.

    The seed and the submit (``submit_async``: ``aredis`` is ``r``'s Redis) without a thread.
    """
    agent, sender, meta = _oneshot(config, agent, tenant, face)
    if prior and not await conversations_mod.seed_async(aredis, agent, sender, prior):
        raise _not_new(agent, sender)
    return sender, await submit_async(aredis, r, agent, sender, content, meta=meta)


def _oneshot(
    config: Config,
    agent: Any,
    tenant: str | None,
    face: Face,
    client_tools: list[ClientTool] | None = None,
    prefix: str = "oneshot",
) -> tuple[str, str, dict[str, str]]:
    """A one-shot send's agent, its new sender and the run's fields."""
    agent = known_agent(config, agent)
    meta = _run_meta(config, agent, tenant, face, client_tools=client_tools)
    return agent, scoped(tenant, f"{prefix}-{ids.hex_id()}"), meta


def _not_new(agent: str, sender: str) -> Conflict:
    return Conflict(f"conversation {agent}/{sender} is not new")  # a uuid collision


async def forget(aredis: aioredis.Redis, agent: str, sender: str) -> None:
    """Delete a one-shot conversation once its run has ended (nothing if it is gone or busy)."""
    with contextlib.suppress(WalrusError):
        await conversations_mod.delete_async(aredis, agent, sender)


def cancel(
    r: redis.Redis, config: Config, agent: Any, sender: Any, tenant: str | None = None
) -> Cancelled:
    """Cancel the conversation's active run (``run_id`` None when nothing was running)."""
    agent = known_agent(config, agent)
    return Cancelled(run_id=cancel_active(r, agent, sender_in(tenant, sender)))


def reply(
    r: redis.Redis,
    config: Config,
    agent: Any,
    sender: Any,
    content: str,
    call_id: str = "",
    tenant: str | None = None,
) -> Replied:
    """Answer the pending ``ask_user`` (or approval); the run resumes on any worker."""
    agent = known_agent(config, agent)
    return waits.reply(r, agent, sender_in(tenant, sender), content, call_id)


def steer(
    r: redis.Redis, config: Config, agent: Any, sender: Any, content: str, tenant: str | None = None
) -> Steered:
    """Queue ``content`` for the active run's next LLM call (Conflict when none is active)."""
    agent = known_agent(config, agent)
    return Steered(run_id=waits.steer(r, agent, sender_in(tenant, sender), content))


def request_compaction(r: redis.Redis, agent: str, sender: str) -> Submitted:
    """Queue a compaction of the conversation: a run of its own, in order, under the lease."""
    return submit(r, agent, sender, COMPACT_REQUEST, meta={"kind": "compact"})


def compact(
    r: redis.Redis, config: Config, agent: Any, sender: Any, tenant: str | None = None
) -> Accepted:
    """Summarise the history into one message (the old history goes to the archive)."""
    agent = known_agent(config, agent)
    return accepted(request_compaction(r, agent, sender_in(tenant, sender)).run_id)


def history(
    r: redis.Redis, config: Config, agent: Any, sender: Any, tenant: str | None = None
) -> list[dict[str, Any]]:
    """The conversation's messages in order."""
    return reads.history(r, known_agent(config, agent), sender_in(tenant, sender))


def archives(
    r: redis.Redis, config: Config, agent: Any, sender: Any, tenant: str | None = None
) -> list[dict[str, Any]]:
    """The histories compaction replaced, oldest first."""
    return reads.archives(r, known_agent(config, agent), sender_in(tenant, sender))


def conversations(
    r: redis.Redis, agent: Any = None, caller: Caller = OPEN, tenant: str | None = None
) -> list[Conversation]:
    """The conversations the caller sees, most recent first.

    Of one agent when ``agent`` is given; of one tenant when an admin names ``tenant``, and
    always of its own for a tenant token.
    """
    tenant = caller.acting(tenant)
    rows = reads.conversations(r, agent_name(agent) if agent else None)
    if tenant is None:
        return rows
    return [c for c in rows if c.tenant == tenant]


def run_info(r: redis.Redis, run_id: str, caller: Caller = OPEN) -> RunInfo:
    """Status of one run (NotFound, also for another tenant's run)."""
    record = reads.run_record(r, run_id)
    if not caller.sees(record.get("sender", "")):
        raise NotFound(f"unknown run {run_id!r}")
    return RunInfo.from_hash(record)


def cancel_run_id(r: redis.Redis, run_id: str, caller: Caller = OPEN) -> Cancelled:
    """Cancel run ``run_id`` whatever face started it (NotFound, also for another tenant's).

    A queued, running or waiting run gets its cancel flag and its waits ended at once
    (``waits.cancel``): it ends ``cancelled``. ``run_id`` None when it had already ended.
    """
    info = run_info(r, run_id, caller)
    if info.status.terminal:
        return Cancelled(run_id=None)
    waits.cancel(r, run_id)
    return Cancelled(run_id=run_id)


MAX_RUNS_PAGE = run_list.MAX_LIMIT
"""The most runs one page of :func:`list_runs` holds."""


def list_runs(
    r: redis.Redis,
    agent: str | None,
    sender: str | None,
    status: Collection[RunStatus],
    limit: int,
    cursor: str | None,
    tenant: str | None,
) -> RunPage:
    """Runs of ``tenant`` (None: every tenant), newest first, filtered; a cursor pages on."""
    return run_list.list_runs(
        r, agent=agent, sender=sender, status=status, limit=limit, cursor=cursor, tenant=tenant
    )


def usage_report(
    r: redis.Redis,
    config: Config,
    caller: Caller,
    group_by: str | None,
    start: float | str | None,
    end: float | str | None,
    tenant: str | None,
    agent: str | None,
    model: str | None,
) -> UsageReport:
    """LLM usage and cost in a time range, grouped (``walrus_tasks.usage``).

    A tenant token sees its own tenant's only; an admin token every tenant's, or the one it
    names. ``agent`` need not be configured now: a deleted agent's usage stays readable.
    """
    acting = caller.acting(tenant)
    if agent is not None:
        agent_name(agent)
    return usage.report(
        r, config, group_by, start, end, tenant=acting, agent=agent, model=model,
        every_tenant=acting is None,
    )  # fmt: skip


def run_events(
    hub: Hub, run_id: str, after: str, *, ended: bool = False, head: Head | None = None
) -> AsyncIterator[Item]:
    """The run's ``(entry id, event)`` after ``after`` until ``end``; ``(id, None)`` while idle.

    Read by the app's :class:`gateway.hub.Hub` (``app.state.hub``), which rides out a Redis
    restart; once Redis has been away ``sse_redis_grace`` the Redis error propagates.
    ``ended``: the run's record was read ended; ``head``: its stream's first entries, read with
    it (``Hub.run_items``).
    """
    return hub.run_items(run_id, after, ended=ended, head=head)


async def run_end(
    hub: Hub, run_id: str, feed: Callable[[dict[str, Any]], object] | None = None
) -> dict[str, Any] | None:
    """Read the run's events to its end, each fed to ``feed``; its ``end`` (None: it vanished).

    What a face that answers once the run has ended reads it with (and what waits for a
    one-shot conversation's run to end).
    """
    end: dict[str, Any] | None = None
    async for _, event in run_events(hub, run_id, "0-0"):
        if event is not None:
            if feed is not None:
                feed(event)
            end = event if event["type"] == "end" else end
    return end


def run_error(run_id: str, end: Mapping[str, Any] | None) -> tuple[str, str]:
    """``(code, message)`` a face tells of a run that did not succeed (``end`` None: it vanished).

    The code is ``run_<status>`` (``run_failed``, ``run_cancelled``) or ``run_lost``; the
    message is the run's own error.
    """
    if end is None:
        return "run_lost", f"run {run_id} ended without an end event"
    status = str(end.get("status"))
    return f"run_{status}", str(end.get("error") or f"run {run_id} {status}")


# --- crons and subscriptions ----------------------------------------------------------------


def feed_start(r: redis.Redis, after: Any, what: str = "after") -> str:
    """Where a live feed starts: after the cursor ``after``, or (None) at the live end.

    Fixed before a stream answers, so whatever happens once the client has its answer is sent.
    """
    if after is None:
        return live_end(r)
    if not isinstance(after, str):
        raise InvalidInput(f"invalid {what} {after!r}: must be a feed cursor (an event's id)")
    return format_cursor(parse_cursor(after, what))


def create_cron(r: redis.Redis, config: Config, spec: CronSpec, caller: Caller = OPEN) -> CronEntry:
    """Add a cron entry of the caller's tenant (a bad ``webhook``: 422).

    It fires from the next schedule time on, into that tenant's conversation.
    """
    spec = spec.model_copy(update={"tenant": caller.acting(spec.tenant)})
    if spec.webhook is not None:
        webhooks.check_url(config, spec.webhook)
    return crons.create(r, spec, config.agents.keys(), skills=crons.usable_skills(config))


def list_crons(r: redis.Redis, caller: Caller = OPEN) -> list[CronEntry]:
    """Every cron entry the caller sees (a tenant token: its tenant's)."""
    return [e for e in crons.list_all(r) if caller.admin or e.tenant == caller.tenant]


def get_cron(r: redis.Redis, cron_id: str, caller: Caller = OPEN) -> CronEntry:
    """One cron entry (NotFound, also for another tenant's)."""
    entry = crons.get(r, cron_id)
    if not caller.admin and entry.tenant != caller.tenant:
        raise NotFound(f"unknown cron {cron_id!r}")
    return entry


def delete_cron(r: redis.Redis, cron_id: str, caller: Caller = OPEN) -> dict[str, str]:
    """Delete a cron entry (NotFound, also for another tenant's)."""
    get_cron(r, cron_id, caller)
    crons.delete(r, cron_id)
    return {"deleted": cron_id}


def subscribe(
    r: redis.Redis, config: Config, spec: SubscriptionSpec, caller: Caller = OPEN
) -> dict[str, Any]:
    """Fire ``spec.target_agent`` on every event published to ``spec.source`` in the tenant."""
    tenant = caller.acting(spec.tenant)
    subscriptions.source_name(spec.source)
    known_agent(config, spec.target_agent)
    source = scoped(tenant, spec.source)
    return subscriptions.public(subscriptions.create(r, source, spec.target_agent, spec.once))


def unsubscribe(r: redis.Redis, sub_id: str, caller: Caller = OPEN) -> dict[str, str]:
    """Remove a subscription (NotFound, also for another tenant's)."""
    raw: str | None = r.hget(keys.SUBSCRIPTIONS, sub_id)  # type: ignore[assignment]
    mine = raw is not None and caller.sees(json.loads(raw).get("source", ""))
    if not mine or not subscriptions.delete(r, sub_id):
        raise NotFound(f"unknown subscription {sub_id!r}")
    return {"deleted": sub_id}


def list_subscriptions(r: redis.Redis, caller: Caller = OPEN) -> list[dict[str, Any]]:
    """Every subscription the caller sees, oldest first."""
    subs = subscriptions.list_all(r)
    return [subscriptions.public(s) for s in subs if caller.sees(s["source"])]


def publish(
    r: redis.Redis, source: str, payload: Any, caller: Caller = OPEN, tenant: str | None = None
) -> Published:
    """Publish ``payload`` to every subscription of ``source``: the runs it started.

    Only the subscriptions of the caller's tenant (an admin token's ``tenant``) fire.
    """
    subscriptions.source_name(source)
    scoped_source = scoped(caller.acting(tenant), source)
    return Published(fired=subscriptions.publish(r, scoped_source, payload))
