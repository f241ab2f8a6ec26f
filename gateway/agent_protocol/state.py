"""Threads and runs of the Agent Protocol, over walrus conversations and runs (blocking).

A thread is the conversation ``(agent, "thread:<thread id>")`` of its tenant (the sender is
``tenancy.scoped``: ``<tenant>/thread:<id>`` in a named tenant); its agent is the assistant of
its first run (recorded in its metadata as ``graph_id`` and ``assistant_id``). What walrus does
not keep already (a thread's metadata, which runs belong to it, a run's stream modes) is in the
``keys.ap_*`` keys, a tenant's apart from another's (the default tenant keeps today's keys), so
another tenant's thread is simply not there: a 404.

The thread hash this module hands out carries two fields that are not stored: ``tenant`` (""
for the default) and ``sender``, the walrus sender of its conversation.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from typing import Any

import redis

from gateway.agent_protocol import messages
from walrus_tasks import conversations, keys, reads, tenancy
from walrus_tasks.agent_protocol import iso as iso
from walrus_tasks.agent_protocol import run_object
from walrus_tasks.errors import Conflict, InvalidInput, NotFound
from walrus_tasks.json_depth import loads_stored

THREAD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def now_ms() -> int:
    """Now, in epoch milliseconds."""
    return int(time.time() * 1000)


def thread_id_of(value: Any) -> str:
    """``value`` if it is an acceptable thread id (InvalidInput otherwise)."""
    if not isinstance(value, str) or not THREAD_ID_RE.fullmatch(value):
        raise InvalidInput(f"invalid thread id {value!r}: must match {THREAD_ID_RE.pattern}")
    return value


def sender_of(thread_id: str, tenant: str | None = None) -> str:
    """The walrus sender of the conversation of thread ``thread_id`` of ``tenant``."""
    return tenancy.scoped(tenant, f"thread:{thread_id}")


def tenant_in(h: dict[str, str]) -> str | None:
    """The tenant of thread ``h`` (None: the default)."""
    return h.get("tenant") or None


# --- threads -----------------------------------------------------------------------------------


def create_thread(
    r: redis.Redis,
    tenant: str | None,
    thread_id: str | None,
    metadata: dict[str, Any],
    if_exists: str,
) -> dict[str, str]:
    """Create a thread of ``tenant`` (``if_exists``: ``raise`` -> Conflict, ``do_nothing``)."""
    tid = thread_id_of(thread_id) if thread_id else str(uuid.uuid4())
    now = now_ms()
    created = r.hsetnx(keys.ap_thread(tid, tenant), "created_at", now)
    if not created:
        if if_exists == "do_nothing":
            return raw_thread(r, tenant, tid)
        raise Conflict(f"thread {tid} already exists")
    fields: dict[Any, Any] = {
        "thread_id": tid,
        "updated_at": now,
        "metadata": json.dumps(metadata),
    }
    if isinstance(metadata.get("graph_id"), str):
        fields["agent"] = metadata["graph_id"]
    r.hset(keys.ap_thread(tid, tenant), mapping=fields)
    r.zadd(keys.ap_threads(tenant), {tid: now})
    return raw_thread(r, tenant, tid)


def raw_thread(r: redis.Redis, tenant: str | None, thread_id: str) -> dict[str, str]:
    """The hash of thread ``thread_id`` of ``tenant``, or NotFound (also another tenant's)."""
    key = keys.ap_thread(thread_id_of(thread_id), tenant)
    h: dict[str, str] = r.hgetall(key)  # type: ignore[assignment]
    if not h.get("thread_id"):
        raise NotFound(f"thread {thread_id} not found")
    h.update(tenant=tenant or "", sender=sender_of(thread_id, tenant))  # not stored
    return h


def bind_agent(r: redis.Redis, h: dict[str, str], agent: str) -> None:
    """Record ``agent`` as the thread's assistant (Conflict if it has another)."""
    if h.get("agent") and h["agent"] != agent:
        raise Conflict(f"thread {h['thread_id']} belongs to assistant {h['agent']!r}")
    if not h.get("agent"):
        meta = json.loads(h.get("metadata") or "{}")
        meta.update(graph_id=agent, assistant_id=agent)
        r.hset(
            keys.ap_thread(h["thread_id"], tenant_in(h)),
            mapping={"agent": agent, "metadata": json.dumps(meta)},
        )
        h.update(agent=agent, metadata=json.dumps(meta))


def patch_thread(
    r: redis.Redis, tenant: str | None, thread_id: str, metadata: dict[str, Any]
) -> dict[str, str]:
    """Merge ``metadata`` into the thread's."""
    h = raw_thread(r, tenant, thread_id)
    meta = {**json.loads(h.get("metadata") or "{}"), **metadata}
    r.hset(
        keys.ap_thread(thread_id, tenant),
        mapping={"metadata": json.dumps(meta), "updated_at": now_ms()},
    )
    return raw_thread(r, tenant, thread_id)


def delete_thread(r: redis.Redis, tenant: str | None, thread_id: str) -> None:
    """Delete the thread, its runs' records and its conversation (Conflict while busy)."""
    h = raw_thread(r, tenant, thread_id)
    if h.get("agent"):
        with contextlib.suppress(NotFound):  # NotFound: no message was ever sent
            conversations.delete(r, h["agent"], h["sender"])
    runs_key = keys.ap_thread_runs(thread_id, tenant)
    run_ids: list[str] = r.lrange(runs_key, 0, -1)  # type: ignore[assignment]
    r.delete(keys.ap_thread(thread_id, tenant), runs_key)
    r.delete(*[keys.ap_run(x) for x in run_ids]) if run_ids else None
    r.zrem(keys.ap_threads(tenant), thread_id)


def thread_ids(r: redis.Redis, tenant: str | None) -> list[str]:
    """Every thread id of ``tenant``, oldest first."""
    return r.zrange(keys.ap_threads(tenant), 0, -1)  # type: ignore[return-value]


# --- what a thread's conversation is doing ------------------------------------------------------


def active_run(r: redis.Redis, h: dict[str, str]) -> str | None:
    """The run id active in the thread's conversation, or None."""
    if not h.get("agent"):
        return None
    cid = keys.cid(h["agent"], h["sender"])
    return r.get(keys.conv(cid, "active"))  # type: ignore[return-value]


def pending_interrupts(r: redis.Redis, run_id: str) -> list[dict[str, Any]]:
    """The questions and approvals run ``run_id`` waits on, as interrupts ``{value, id}``."""
    waiting: dict[str, str] = r.hgetall(keys.run_part(run_id, "waits"))  # type: ignore[assignment]
    calls = {c for c, w in waiting.items() if json.loads(w).get("kind") in ("ask", "approval")}
    if not calls:
        return []
    out = []
    entries: Any = r.xrevrange(keys.run_part(run_id, "events"), count=1000)
    for _, fields in entries:
        event = json.loads(fields["data"])
        if event.get("type") == "ask_user" and event.get("call_id") in calls:
            calls.discard(event["call_id"])
            value = {k: v for k, v in event.items() if k not in ("type", "call_id")}
            out.append({"value": value, "id": event["call_id"]})
    return out[::-1]


def thread_status(r: redis.Redis, h: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """``idle | busy | interrupted | error`` and the pending interrupts."""
    active = active_run(r, h)
    if active:
        interrupts = pending_interrupts(r, active)
        return ("interrupted" if interrupts else "busy"), interrupts
    if h.get("agent"):
        cid = keys.cid(h["agent"], h["sender"])
        if r.llen(keys.conv(cid, "inbox")):
            return "busy", []
    runs_key = keys.ap_thread_runs(h["thread_id"], tenant_in(h))
    last: str | None = r.lindex(runs_key, -1)  # type: ignore[assignment]
    if last and r.hget(keys.run(last), "status") == "failed":
        return "error", []
    return "idle", []


def values(r: redis.Redis, h: dict[str, str]) -> dict[str, Any]:
    """The thread's state values: ``{"messages": [...]}``."""
    if not h.get("agent"):
        return {"messages": []}
    history = reads.history(r, h["agent"], h["sender"])
    return {"messages": messages.to_langchain(history)}


def thread_view(r: redis.Redis, h: dict[str, str]) -> dict[str, Any]:
    """The thread as the Agent Protocol shows it."""
    status, interrupts = thread_status(r, h)
    return {
        "thread_id": h["thread_id"],
        "created_at": iso(h.get("created_at")),
        "updated_at": iso(h.get("updated_at")),
        "metadata": loads_stored(h.get("metadata") or "{}"),
        "status": status,
        "values": values(r, h),
        "interrupts": {i["id"]: [i] for i in interrupts},
    }


def state_view(r: redis.Redis, h: dict[str, str]) -> dict[str, Any]:
    """The thread's current state (one checkpoint: walrus keeps no older ones)."""
    _, interrupts = thread_status(r, h)
    tid = h["thread_id"]
    last: str | None = r.lindex(keys.ap_thread_runs(tid, tenant_in(h)), -1)  # type: ignore[assignment]
    tasks = [
        {"id": i["id"], "name": "tools", "error": None, "interrupts": [i], "checkpoint": None,
         "state": None, "result": None}
        for i in interrupts
    ]  # fmt: skip
    return {
        "values": values(r, h),
        "next": ["tools"] if interrupts else [],
        "checkpoint": {"thread_id": tid, "checkpoint_ns": "", "checkpoint_id": last,
                       "checkpoint_map": None},
        "metadata": loads_stored(h.get("metadata") or "{}"),
        "created_at": iso(h.get("updated_at")),
        "parent_checkpoint": None,
        "tasks": tasks,
        "interrupts": interrupts,
    }  # fmt: skip


def touch(r: redis.Redis, h: dict[str, str]) -> None:
    """Mark the thread updated now."""
    r.hset(keys.ap_thread(h["thread_id"], tenant_in(h)), "updated_at", now_ms())


# --- runs --------------------------------------------------------------------------------------


def record_run(r: redis.Redis, run_id: str, h: dict[str, str], agent: str, body: Any) -> None:
    """Remember what the Agent Protocol was asked for run ``run_id`` of thread ``h``."""
    thread_id = h["thread_id"]
    r.hset(
        keys.ap_run(run_id),
        mapping={
            "thread_id": thread_id,
            "assistant_id": agent,
            "metadata": json.dumps(body.metadata or {}),
            "multitask_strategy": body.multitask_strategy,
            "stream_mode": json.dumps(body.modes()),
        },
    )
    r.rpush(keys.ap_thread_runs(thread_id, tenant_in(h)), run_id)
    touch(r, h)


def run_view(r: redis.Redis, run_id: str, h: dict[str, str]) -> dict[str, Any]:
    """Run ``run_id`` of thread ``h`` as the Agent Protocol shows it.

    NotFound for another thread's run, and for a run of another tenant's thread of the same id:
    the walrus run must be in the thread's own conversation's tenant.
    """
    ap: dict[str, str] = r.hgetall(keys.ap_run(run_id))  # type: ignore[assignment]
    if not ap or ap["thread_id"] != h["thread_id"]:
        raise NotFound(f"run {run_id} not found")
    record = reads.run_record(r, run_id)
    if tenancy.tenant_of(record.get("sender", "")) != tenant_in(h):
        raise NotFound(f"run {run_id} not found")
    return run_object(run_id, record, ap)


def stream_modes(r: redis.Redis, run_id: str) -> list[str]:
    """The stream modes run ``run_id`` was created with."""
    raw: str | None = r.hget(keys.ap_run(run_id), "stream_mode")  # type: ignore[assignment]
    return json.loads(raw) if raw else ["values"]
