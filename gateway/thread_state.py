"""A thread's reads on the event loop, in as few round trips as they allow.

A thread's view or state (what a LangGraph UI reads whenever it shows a thread:
``threads.get``, ``getState``, and ``getHistory`` after each run) takes six or seven reads one
after the other, a key at a time; the gateway once made them on a thread of the pool.
:func:`read` sends the ones that depend on nothing in one pipeline (the conversation's active
run and queue, the thread's last run, its history), then only what their answers ask for: the
active run's interrupts, or the last run's status (docs/benchmarks.md, issue 25, twenty-first
round). It answers what those reads answer (``tests/test_thread_reads.py`` keeps them, as the
oracle).
:func:`read_many` does the same for many threads at once (``threads.search``), in the same
round trips whatever their number; :func:`threads` and :func:`thread_runs` read a tenant's
threads and a thread's runs in two, every hash in one pipeline.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from gateway import run_interrupts
from gateway import thread_operations as thread_ops
from walrus_tasks import keys, reads, scripts
from walrus_tasks import script_args as S
from walrus_tasks.errors import NotFound


class ThreadState(NamedTuple):
    """What the views of thread ``h`` are made of (``agent_protocol.state``)."""

    status: str
    """``idle | busy | interrupted | error``: waiting on a question or approval of its active
    run, running or with a run queued, its last run failed, or none of these."""
    interrupts: list[dict[str, Any]]
    history: list[dict[str, Any]]
    """The conversation's messages (none before the thread's first run)."""
    last_run: str | None
    """The thread's latest run (its state's checkpoint id)."""


async def read(aredis: aioredis.Redis, h: dict[str, str]) -> ThreadState:
    """Thread ``h``'s status, interrupts, history and last run (:func:`read_many` of one)."""
    [state] = await read_many(aredis, [h])
    return state


async def read_many(aredis: aioredis.Redis, threads: Sequence[dict[str, str]]) -> list[ThreadState]:
    """What :func:`read` answers for each of ``threads``.

    In the same round trips whatever their number: two, or three when a run waits on a question
    or an approval.
    """
    pipe = aredis.pipeline(transaction=False)
    for h in threads:
        pipe.lindex(keys.ap_thread_runs(h["thread_id"], thread_ops.tenant_in(h)), -1)
        if h.get("agent"):
            cid = keys.cid(h["agent"], h["sender"])
            pipe.get(keys.conv(cid, "active"))
            pipe.llen(keys.conv(cid, "inbox"))
            scripts.queue_async(
                pipe, S.HISTORY_JSON, [reads.history_key(h["agent"], h["sender"])], {}
            )
    replies = iter(await pipe.execute(raise_on_error=False))
    firsts: list[tuple[str | None, str | None, int, list[dict[str, Any]]]] = []
    # each thread's (last run, active run, runs queued, history)
    for h in threads:
        last = _checked(next(replies))
        if not h.get("agent"):
            firsts.append((last, None, 0, []))
            continue
        active, queued = _checked(next(replies)), _checked(next(replies))
        firsts.append((last, active, queued, await _history(aredis, h, next(replies))))
    # Then what each asks for: the active run's waits, or the last run's status.
    pipe = aredis.pipeline(transaction=False)
    for last, active, queued, _ in firsts:
        if active:
            pipe.hgetall(keys.run_part(active, "waits"))
        elif not queued and last is not None:
            pipe.hget(keys.run(last), "status")
    seconds = iter(await pipe.execute())
    calls: dict[str, set[str]] = {}  # active run → the calls it waits on for an answer
    statuses = []
    for last, active, queued, _ in firsts:
        if active:
            waiting = run_interrupts.calls_waiting(next(seconds), run_interrupts.INTERRUPT_KINDS)
            if waiting:
                calls[active] = waiting
            statuses.append("busy")
        elif queued:
            statuses.append("busy")
        else:
            statuses.append("error" if last is not None and next(seconds) == "failed" else "idle")
    interrupts = await _interrupts(aredis, calls)
    out = []
    for (last, active, _, history), status in zip(firsts, statuses, strict=True):
        asked = interrupts.get(active or "", [])
        out.append(ThreadState("interrupted" if asked else status, asked, history, last))
    return out


def _checked(reply: Any) -> Any:
    if isinstance(reply, Exception):
        raise reply
    return reply


async def _history(aredis: aioredis.Redis, h: dict[str, str], reply: Any) -> list[dict[str, Any]]:
    if isinstance(reply, NoScriptError):  # the server lost it: read as it is read apart
        return await thread_ops.thread_history_async(aredis, h)
    messages: list[dict[str, Any]] = json.loads(_checked(reply))
    return messages


async def _interrupts(
    aredis: aioredis.Redis, calls: dict[str, set[str]]
) -> dict[str, list[dict[str, Any]]]:
    """``run_interrupts.pending_interrupts`` of each run of ``calls``, in one round trip.

    ``calls``: each run's calls waiting for an answer; its questions are read from its events.
    """
    if not calls:
        return {}
    pipe = aredis.pipeline(transaction=False)
    for run_id in calls:
        pipe.xrevrange(keys.run_part(run_id, "events"), count=run_interrupts.QUESTIONS_SCAN)
    events = await pipe.execute()
    return {
        run_id: run_interrupts.interrupts_of(waiting, run_interrupts.questions_of(entries))
        for (run_id, waiting), entries in zip(calls.items(), events, strict=True)
    }


async def threads(aredis: aioredis.Redis, tenant: str | None) -> list[dict[str, str]]:
    """Every thread of ``tenant``, oldest first, as ``thread_operations.get_thread`` reads each.

    Two round trips: the ids, then every thread's hash in one pipeline. One deleted meanwhile is
    left out.
    """
    ids: list[str] = await aredis.zrange(keys.ap_threads(tenant), 0, -1)  # type: ignore[assignment]
    pipe = aredis.pipeline(transaction=False)
    for tid in ids:
        pipe.hgetall(keys.ap_thread(tid, tenant))
    threads = []
    for tid, h in zip(ids, await pipe.execute(), strict=True):
        with contextlib.suppress(NotFound):
            threads.append(thread_ops.found_thread(h, tenant, tid))
    return threads


async def thread_runs(
    aredis: aioredis.Redis, h: dict[str, str]
) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """Thread ``h``'s runs, oldest first: ``(run id, Agent Protocol record, walrus record)``.

    Two round trips: the ids, then every run's two records in one pipeline. A run
    ``thread_operations.thread_run`` would not find (its record expired) is left out.
    """
    key = keys.ap_thread_runs(h["thread_id"], thread_ops.tenant_in(h))
    ids: list[str] = await aredis.lrange(key, 0, -1)  # type: ignore[assignment]
    pipe = aredis.pipeline(transaction=False)
    for run_id in ids:
        pipe.hgetall(keys.ap_run(run_id))
        pipe.hgetall(keys.run(run_id))
    replies = await pipe.execute()
    runs = []
    for i, run_id in enumerate(ids):
        with contextlib.suppress(NotFound):
            runs.append(
                (run_id, *thread_ops.its_run(run_id, h, replies[2 * i], replies[2 * i + 1]))
            )
    return runs
