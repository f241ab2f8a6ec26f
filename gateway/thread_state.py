"""What a thread's view and state read, on the event loop, in as few round trips as they allow.

``thread_operations.thread_status``, ``thread_history`` and ``last_thread_run`` read one key
at a time on a thread of the pool: six or seven round trips for a thread's view or state, the
reads a LangGraph UI makes whenever it shows a thread (``threads.get``, ``getState``, and
``getHistory`` after each run). :func:`read` sends the ones that depend on nothing in one
pipeline (the conversation's active run and queue, the thread's last run, its history), then
only what their answers ask for: the active run's interrupts, or the last run's status
(docs/benchmarks.md, issue 25, twenty-first round). It answers what the threaded reads answer.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from gateway import thread_operations as thread_ops
from walrus_tasks import keys, reads, scripts
from walrus_tasks import script_args as S


class ThreadState(NamedTuple):
    """What the views of thread ``h`` are made of (``agent_protocol.state``)."""

    status: str
    """``idle | busy | interrupted | error``, as ``thread_operations.thread_status``."""
    interrupts: list[dict[str, Any]]
    history: list[dict[str, Any]]
    """The conversation's messages (none before the thread's first run)."""
    last_run: str | None
    """The thread's latest run (its state's checkpoint id)."""


async def read(aredis: aioredis.Redis, h: dict[str, str]) -> ThreadState:
    """Thread ``h``'s status, interrupts, history and last run.

    Two round trips, or three for a run that waits on a question or an approval.
    """
    agent = h.get("agent")
    pipe = aredis.pipeline(transaction=False)
    pipe.lindex(keys.ap_thread_runs(h["thread_id"], thread_ops.tenant_in(h)), -1)
    if agent:
        cid = keys.cid(agent, h["sender"])
        pipe.get(keys.conv(cid, "active"))
        pipe.llen(keys.conv(cid, "inbox"))
        scripts.queue_async(pipe, S.HISTORY_JSON, [reads.history_key(agent, h["sender"])], {})
    replies = await pipe.execute(raise_on_error=False)
    for reply in replies[:3]:  # all but the history's (read apart after a NOSCRIPT)
        if isinstance(reply, Exception):
            raise reply
    last: str | None = replies[0]
    if not agent:
        return ThreadState("idle" if last is None else await _ended(aredis, last), [], [], last)
    active, queued, history = replies[1], replies[2], await _history(aredis, h, replies[3])
    if active:
        interrupts = await _interrupts(aredis, active)
        return ThreadState("interrupted" if interrupts else "busy", interrupts, history, last)
    if queued:
        return ThreadState("busy", [], history, last)
    return ThreadState("idle" if last is None else await _ended(aredis, last), [], history, last)


async def _history(aredis: aioredis.Redis, h: dict[str, str], reply: Any) -> list[dict[str, Any]]:
    if isinstance(reply, NoScriptError):  # the server lost it: read as it is read apart
        return await thread_ops.thread_history_async(aredis, h)
    if isinstance(reply, Exception):
        raise reply
    messages: list[dict[str, Any]] = json.loads(reply)
    return messages


async def _ended(aredis: aioredis.Redis, last: str) -> str:
    """``error`` when the thread's last run failed, else ``idle``."""
    return "error" if await aredis.hget(keys.run(last), "status") == "failed" else "idle"


async def _interrupts(aredis: aioredis.Redis, run_id: str) -> list[dict[str, Any]]:
    """``thread_operations.pending_interrupts``: the waits' calls, then the questions asked."""
    waits: dict[str, str] = await aredis.hgetall(keys.run_part(run_id, "waits"))  # type: ignore[assignment]
    calls = thread_ops.calls_waiting(waits, ("ask", "approval"))
    if not calls:
        return []
    events: Any = await aredis.xrevrange(
        keys.run_part(run_id, "events"), count=thread_ops.QUESTIONS_SCAN
    )
    return thread_ops.interrupts_of(calls, thread_ops.questions_of(events))
