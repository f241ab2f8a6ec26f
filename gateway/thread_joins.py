"""What a join of an Agent Protocol run reads in its first round trip.

Always the thread, the run's two records and its first events (``hub.HEAD``); and, when this
process has seen which assistant the thread is bound to (``thread_bindings``), the thread's
history as well. A join of a run that has ended then answers with no other read
(docs/benchmarks.md, issue 25, twentieth round). The history is used only when the thread read
beside it names the same assistant.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from gateway import thread_bindings
from gateway import thread_operations as thread_ops
from gateway.hub import HEAD, Head
from walrus_tasks import keys, reads, scripts
from walrus_tasks import script_args as S


class JoinRead(NamedTuple):
    """A join's first round trip."""

    thread: dict[str, str]
    record: dict[str, str]
    """The walrus run's record."""
    head: Head
    """The run's first events."""
    history: list[dict[str, Any]] | None
    """The thread's history, read after the record (None: not read, or not the thread's)."""


async def join_read(
    aredis: aioredis.Redis, tenant: str | None, thread_id: str, run_id: str
) -> JoinRead:
    """Thread ``thread_id`` of ``tenant``, its run ``run_id`` and the run's head, in one round trip.

    NotFound as ``thread_operations.thread_and_run`` words it. The thread's history too, when
    its assistant was known.
    """
    tid = thread_ops.thread_id_of(thread_id)
    agent = thread_bindings.known(tenant, tid)
    sender = thread_ops.thread_sender(tid, tenant)
    pipe = aredis.pipeline(transaction=False)
    thread_ops.queue_thread_and_run(pipe, tenant, tid, run_id)
    pipe.xrange(keys.run_part(run_id, "events"), "-", "+", HEAD)
    if agent is not None:
        scripts.queue_async(pipe, S.HISTORY_JSON, [reads.history_key(agent, sender)], {})
    replies = await pipe.execute(raise_on_error=False)
    for reply in replies[:4]:  # the thread's, the run's, the head's
        if isinstance(reply, Exception):
            raise reply
    h, _, record = thread_ops.thread_and_run_of(replies[:3], tenant, tid, run_id)
    thread_bindings.remember(h)
    if agent is None or h.get("agent") != agent:
        return JoinRead(h, record, replies[3], None)
    if isinstance(replies[4], NoScriptError):  # the server lost it: read as it is read apart
        return JoinRead(h, record, replies[3], await reads.history_async(aredis, agent, sender))
    if isinstance(replies[4], Exception):
        raise replies[4]
    return JoinRead(h, record, replies[3], json.loads(replies[4]))
