"""Threads and runs of the Agent Protocol as it shows them.

A thread is the conversation ``(agent, "thread:<thread id>")`` of its tenant (the sender is
``tenancy.scoped``: ``<tenant>/thread:<id>`` in a named tenant); its agent is the assistant of
its first run (recorded in its metadata as ``graph_id`` and ``assistant_id``). What walrus does
not keep already (a thread's metadata, which runs belong to it, a run's stream modes) is kept by
the Agent Protocol's operations (:mod:`gateway.operations`), a tenant's apart from another's, so
another tenant's thread is simply not there: a 404. This module renders what they read.

The thread hash the operations hand out (``operations.get_thread``) carries two fields that are
not stored: ``tenant`` ("" for the default) and ``sender``, the walrus sender of its
conversation.
"""

from __future__ import annotations

import json
from typing import Any

import redis
import redis.asyncio as aioredis
from anyio import to_thread

from gateway import thread_operations as thread_ops
from gateway import thread_records, thread_state
from gateway.agent_protocol import messages
from walrus_tasks.agent_protocol import iso as iso
from walrus_tasks.agent_protocol import run_object
from walrus_tasks.json_depth import loads_stored


def _values(history: list[dict[str, Any]]) -> dict[str, Any]:
    """A thread's state values: ``{"messages": [...]}``."""
    return {"messages": messages.to_langchain(history)}


async def thread_view_async(aredis: aioredis.Redis, h: dict[str, str]) -> dict[str, Any]:
    """The thread as the Agent Protocol shows it, read on the event loop (``thread_state.read``)."""
    return _view_of(h, await thread_state.read(aredis, h))


async def thread_views(
    aredis: aioredis.Redis, threads: list[dict[str, str]]
) -> list[dict[str, Any]]:
    """:func:`thread_view_async` of each of ``threads``.

    Read on the event loop in a few round trips whatever their number
    (``thread_state.read_many``); rendered on a thread of the pool, since rendering every
    thread's history would hold the loop for as long as a search of many threads takes.
    """
    states = await thread_state.read_many(aredis, threads)
    return await to_thread.run_sync(lambda: list(map(_view_of, threads, states)))


def _view_of(h: dict[str, str], t: thread_state.ThreadState) -> dict[str, Any]:
    return _thread_view(h, t.status, _values(t.history), t.interrupts)


def new_thread_view(h: dict[str, str]) -> dict[str, Any]:
    """:func:`thread_view_async` of a thread just made with no assistant and no run.

    Idle and empty, as its reads would find it (it has no conversation).
    """
    return _thread_view(h, "idle", {"messages": []}, [])


def _thread_view(
    h: dict[str, str], status: str, values: dict[str, Any], interrupts: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "thread_id": h["thread_id"],
        "created_at": iso(h.get("created_at")),
        "updated_at": iso(h.get("updated_at")),
        "metadata": loads_stored(h.get("metadata") or "{}"),
        "status": status,
        "values": values,
        "interrupts": {i["id"]: [i] for i in interrupts},
    }


async def state_view(aredis: aioredis.Redis, h: dict[str, str]) -> dict[str, Any]:
    """The thread's current state (one checkpoint: walrus keeps no older ones).

    Read on the event loop (``thread_state.read``).
    """
    t = await thread_state.read(aredis, h)
    interrupts = t.interrupts
    tasks = [
        {"id": i["id"], "name": "tools", "error": None, "interrupts": [i], "checkpoint": None,
         "state": None, "result": None}
        for i in interrupts
    ]  # fmt: skip
    return {
        "values": _values(t.history),
        "next": ["tools"] if interrupts else [],
        "checkpoint": {"thread_id": h["thread_id"], "checkpoint_ns": "",
                       "checkpoint_id": t.last_run, "checkpoint_map": None},
        "metadata": loads_stored(h.get("metadata") or "{}"),
        "created_at": iso(h.get("updated_at")),
        "parent_checkpoint": None,
        "tasks": tasks,
        "interrupts": interrupts,
    }  # fmt: skip


def record_run(
    r: redis.Redis, run_id: str, h: dict[str, str], agent: str, body: Any
) -> dict[str, Any]:
    """Remember what the Agent Protocol was asked for run ``run_id`` of thread ``h``.

    Answers the run as :func:`run_view` shows it, read in the same round trip.
    """
    fields = asked(agent, body)
    record = thread_records.record_thread_run(r, run_id, h, fields)
    return recorded_view(run_id, h, fields, record)


def recorded_view(
    run_id: str, h: dict[str, str], fields: dict[str, str], record: dict[str, str]
) -> dict[str, Any]:
    """Run ``run_id`` of thread ``h`` as a create answers it.

    Recorded with ``fields`` (:func:`asked`); ``record`` is the walrus run's record, read as it
    was recorded.
    """
    return run_object(run_id, record, {"thread_id": h["thread_id"], **fields})


def asked(agent: str, body: Any) -> dict[str, str]:
    """What a run's create asked, as its Agent Protocol record keeps it."""
    return {
        "assistant_id": agent,
        "metadata": json.dumps(body.metadata or {}),
        "multitask_strategy": body.multitask_strategy,
        "stream_mode": json.dumps(body.modes()),
    }


def run_view(r: redis.Redis, run_id: str, h: dict[str, str]) -> dict[str, Any]:
    """Run ``run_id`` of thread ``h`` as the Agent Protocol shows it (NotFound: not its run)."""
    ap, record = thread_ops.thread_run(r, run_id, h)
    return run_object(run_id, record, ap)
