"""What the Agent Protocol records of a run it creates on a thread, and when.

A create's record (which thread the run is of, what the create asked) is written after its
submit on a thread (:func:`record_thread_run`), or, on the event loop, sent in the submit's own
round trip (:func:`record_along`: ``lua/ap_record.lua``, and ``lua/ap_bind.lua`` ahead of the
submit for a thread's first run), which :func:`recorded` reads (docs/design.md, "The operations
registry", and invariant 30).
"""

from __future__ import annotations

import json
from typing import Any

import redis
import redis.asyncio as aioredis

from gateway import thread_operations as thread_ops
from walrus_tasks import keys, runs, scripts
from walrus_tasks import script_args as S


def record_thread_run(
    r: redis.Redis, run_id: str, h: dict[str, str], fields: dict[str, str]
) -> dict[str, str]:
    """Remember what the Agent Protocol was asked (``fields``) for run ``run_id`` of ``h``.

    Answers the walrus run's record, read in the same round trip (a create's answer shows it).
    """
    pipe = r.pipeline(transaction=False)  # one round trip, not four (issue 25)
    _queue_thread_run(pipe, run_id, h, fields)
    run: dict[str, str] = pipe.execute()[-1]
    return run


async def record_thread_run_async(
    aredis: aioredis.Redis, run_id: str, h: dict[str, str], fields: dict[str, str]
) -> dict[str, str]:
    """:func:`record_thread_run` on the gateway's asyncio client."""
    pipe = aredis.pipeline(transaction=False)
    _queue_thread_run(pipe, run_id, h, fields)
    run: dict[str, str] = (await pipe.execute())[-1]
    return run


def thread_as_bound(tenant: str | None, thread_id: str, agent: str) -> dict[str, str]:
    """Thread ``thread_id`` of ``tenant`` as it is when bound to ``agent``, before it is read.

    What a create on the loop sends its run with (:func:`record_along` reads the thread in the
    same round trip, and its guard checks that it is so).
    """
    tid = thread_ops.thread_id_of(thread_id)
    return {
        "thread_id": tid,
        "agent": agent,
        "tenant": tenant or "",
        "sender": thread_ops.thread_sender(tid, tenant),
    }


def record_along(h: dict[str, str], fields: dict[str, str], bind: bool = False) -> runs.Along:
    """:func:`record_thread_run` sent in the round trip of the run's submit (``submit_async``).

    The submit is written only while thread ``h`` is there and bound to ``h["agent"]`` (its
    guard; else ``submit.Guarded``). ``lua/ap_record.lua`` then writes what
    ``_queue_thread_run`` writes, once the submit has written the run, and answers the run's
    record; the thread is read last. A create is one round trip, not three (docs/benchmarks.md,
    issue 25, nineteenth round): :func:`recorded` reads the answers.
    ``bind``: ``lua/ap_bind.lua`` goes first, binding a thread with no assistant and no
    metadata yet to ``h["agent"]`` as ``thread_operations.bind_thread`` does, so a thread's
    first run is one round trip too (twentieth round). A thread made with metadata is bound on
    a thread.
    """
    tenant, tid = thread_ops.tenant_in(h), h["thread_id"]
    thread = keys.ap_thread(tid, tenant)
    before: tuple[tuple[S.Script[Any], list[str], dict[str, str]], ...] = ()
    if bind:
        agent = h["agent"]
        args = {"agent": agent, "seen": "{}", "metadata": thread_ops.bound_metadata({}, agent)}
        before = ((S.AP_BIND, [thread], args),)

    def queue(pipe: aioredis.client.Pipeline, run_id: str) -> None:
        keys_ = [keys.run(run_id), keys.ap_run(run_id), keys.ap_thread_runs(tid, tenant), thread]
        args = {
            "run_id": run_id, "sender": h["sender"], "now_ms": thread_ops.now_ms(),
            "fields_json": json.dumps({"thread_id": tid, **fields}),
        }  # fmt: skip
        scripts.queue_async(pipe, S.AP_RECORD, keys_, args)
        pipe.hgetall(thread)

    guard = runs.Guard(thread, "agent", h["agent"])
    return runs.Along((S.AP_RECORD,), queue, guard, before)


def recorded(
    replies: list[Any], tenant: str | None, thread_id: str
) -> tuple[dict[str, str] | None, dict[str, str]]:
    """:func:`record_along`'s answers: the run's record (None: nothing recorded), the thread."""
    flat, h = S.AP_RECORD.reply(replies[0]), replies[1]
    record = None if flat is None else dict(zip(flat[::2], flat[1::2], strict=True))
    return record, thread_ops.found_thread(h, tenant, thread_id)


def _queue_thread_run(
    pipe: redis.client.Pipeline | aioredis.client.Pipeline,
    run_id: str,
    h: dict[str, str],
    fields: dict[str, str],
) -> None:
    """:func:`record_thread_run`'s writes, and its read last, queued on ``pipe``."""
    record: dict[Any, Any] = {"thread_id": h["thread_id"], **fields}
    tid, tenant = h["thread_id"], thread_ops.tenant_in(h)
    pipe.hset(keys.ap_run(run_id), mapping=record)
    pipe.rpush(keys.ap_thread_runs(tid, tenant), run_id)
    pipe.hset(keys.ap_thread(tid, tenant), "updated_at", thread_ops.now_ms())
    pipe.hgetall(keys.run(run_id))
