"""``submit()`` accepts a message into a conversation; ``cancel_active()`` cancels its run."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal

import redis
import redis.asyncio as aioredis
from anyio import to_thread
from kombu.exceptions import OperationalError

from walrus_tasks import durable, ids, keys, runs, task_push, topology, tracing, waits
from walrus_tasks.celery_app import drain_push, send_drain
from walrus_tasks.errors import Conflict, InvalidInput
from walrus_tasks.models import OnBusy

log = logging.getLogger("walrus.submit")


@dataclass(frozen=True)
class Submitted:
    """An accepted message: its run, and the run it interrupted (``on_busy=interrupt|rollback``)."""

    run_id: str
    interrupted: str | None = None
    along: list[Any] | None = None
    """The replies of the commands sent along with it (``submit_async``'s ``along``); None
    when there were none, or it was written on a thread without them (the caller sends them)."""


class Guarded(Exception):
    """A guarded submit (``runs.Along.guard``) wrote nothing.

    Its guard did not hold, or the write would have gone to a thread, where the guard is not
    checked in the same step.
    """


def new_run_id(agent: str, sender: str) -> str:
    """A fresh run id of the conversation ``(agent, sender)``: random, in its bucket.

    Its first hex digit names the conversation's bucket (``keys.run_id_in``), so the run's keys
    share the conversation's Redis Cluster slot.
    """
    return keys.run_id_in(keys.cid(agent, sender), ids.hex_id())


IDEMPOTENCY_KEY_MAX = 255
"""The longest ``Idempotency-Key`` a client may send."""


def keyed_run_id(agent: str, sender: str, key: str) -> str:
    """The run id of a message sent with ``Idempotency-Key: key``: the same for every retry.

    ``submit`` is idempotent on the run id, so a client that lost the answer to a POST (a
    dropped connection) sends it again with the same key and gets the same run, not a second.
    """
    digest = hashlib.sha256(f"{agent}\0{sender}\0{key}".encode()).hexdigest()
    return keys.run_id_in(keys.cid(agent, sender), digest)


RUN_FIELDS = frozenset(
    {
        "client_tools", "cwd", "face", "kind", "parent_run", "parent_call", "timer_due",
        "tenant", "traceparent", "webhook",
    }
)  # fmt: skip
"""Extra fields a run record may be given at submit: the functions its client offers
(``walrus_tasks.client_tools``), its working directory, the face (protocol)
a client sent it by (``walrus_tasks.faces``), its tenant,
``kind=compact`` for a compaction request, the delegate call that started it, the schedule
time (ms) of the cron or heartbeat fire that sent it, the W3C trace context it was accepted
in (set by ``submit`` itself: ``walrus_tasks.tracing``), and the URL its end is POSTed to
(``walrus_tasks.webhooks``; checked against the config by the caller)."""

SubmitOnBusy = OnBusy | Literal["rollback"]
"""``on_busy`` of ``submit()``: the clients' three, and the Agent Protocol's ``rollback``
(``interrupt``, and the interrupted run's messages leave history as it ends)."""


def submit(
    r: redis.Redis,
    agent: str,
    sender: str,
    content: str,
    on_busy: SubmitOnBusy = "enqueue",
    *,
    run_id: str | None = None,
    meta: Mapping[str, str] | None = None,
    cancel_queued: bool = False,
    tried: bool = False,
) -> Submitted:
    """Append the message to the conversation inbox (atomically); enqueue a drain if it was idle.

    Names must already be validated. Raises Conflict for ``on_busy=reject`` on a busy
    conversation, with nothing written. With ``run_id`` given, a second submit of the same run
    does nothing (a redelivered delegate call); ``meta`` sets fields of ``RUN_FIELDS``.
    ``cancel_queued``: ``interrupt`` and ``rollback`` also cancel the messages queued behind the
    active run (the Agent Protocol's strategies act on every pending run of the thread), where
    the native ``interrupt`` lets them run. ``tried``: an earlier try of this ``run_id`` failed
    on a lost connection (:func:`submit_async`), so it may have landed.

    Durable across a failover: when the master has replicas the write is acknowledged by one
    before this returns, and while Redis fails over the write is retried under the same run id
    (``walrus_tasks.durable``). Raises Unavailable if Redis stays away.
    """
    run_id, meta, drain = _prepared(r, agent, sender, run_id, meta)
    attempts = 1 if tried else 0

    def write() -> runs.Enqueued:
        nonlocal attempts
        attempts += 1
        return runs.enqueue(
            r, run_id, agent, sender, content, on_busy, meta, cancel_queued,
            task_push.script_args(drain),
        )  # fmt: skip

    done = durable.retrying(write, f"submit to {agent}/{sender}")
    if done.state == "exists" and attempts > 1:
        # An earlier attempt landed but its answer was lost (a failover): it sent no drain.
        _drain(agent, sender, run_id)
    _follow_up(r, agent, sender, run_id, done, drain)
    return _answer(agent, sender, run_id, done)


async def submit_async(
    aredis: aioredis.Redis,
    r: redis.Redis,
    agent: str,
    sender: str,
    content: str,
    on_busy: SubmitOnBusy = "enqueue",
    *,
    run_id: str | None = None,
    meta: Mapping[str, str] | None = None,
    cancel_queued: bool = False,
    along: runs.Along | None = None,
) -> Submitted:
    """:func:`submit` from an event loop: its write on ``aredis`` (``r``'s Redis), no thread.

    Where the write is more than submit.lua's one step (a cluster, or a master whose replicas
    must acknowledge it: ``durable.unreplicated_async``, which reads their count), the whole
    submit runs on a thread of the event loop's pool (anyio's, the one the gateway's routes
    share), as does a follow-up (a drain the script did not push, a wait to end); a write that
    fails on a lost connection is tried again there, under the same run id.
    The gateway's thread hop was a fifth of a first chunk (docs/benchmarks.md, issue 25,
    eighteenth round). ``along``: commands sent in the same round trip (``runs.Along``), their
    replies in the answer's ``along``, when it is written here; with a guard it is written here
    or not at all (Guarded).
    """
    threaded = partial(
        submit, r, agent, sender, content, on_busy, run_id=run_id, meta=meta,
        cancel_queued=cancel_queued,
    )  # fmt: skip
    try:
        on_loop = not topology.is_cluster(r) and await durable.unreplicated_async(r, aredis)
    except durable.FAILOVER_ERRORS:  # the thread's submit asks again, through the failover
        on_loop = False
    if not on_loop:
        if along is not None and along.guard is not None:
            raise Guarded(f"a guarded submit to {agent}/{sender} is written on the loop only")
        return await to_thread.run_sync(threaded)
    run_id, meta, drain = _prepared(r, agent, sender, run_id, meta)
    call = (run_id, agent, sender, content, on_busy, meta, cancel_queued)
    try:
        done, theirs = await runs.enqueue_async(aredis, *call, task_push.script_args(drain), along)
    except durable.FAILOVER_ERRORS:
        again = partial(threaded, run_id=run_id, meta=meta, tried=True)
        if along is not None and along.guard is not None:
            again = partial(_if_guard_holds, r, along.guard, again)
        return await to_thread.run_sync(again)
    if done.interrupted or (done.drain and drain is None):
        await to_thread.run_sync(_follow_up, r, agent, sender, run_id, done, drain)
    return replace(_answer(agent, sender, run_id, done), along=theirs)


def _if_guard_holds(r: redis.Redis, guard: runs.Guard, write: Callable[[], Submitted]) -> Submitted:
    """``write()`` if ``guard`` holds, read just before (on a thread, not in the same step)."""
    if r.hget(guard.key, guard.field) != guard.value:
        raise Guarded(f"the guard {guard} did not hold")
    return write()


def _prepared(
    r: redis.Redis, agent: str, sender: str, run_id: str | None, meta: Mapping[str, str] | None
) -> tuple[str, dict[str, str], task_push.Push | None]:
    """The run id, the record's fields and the drain's message (when the script pushes it)."""
    meta = dict(meta or {})
    if unknown := set(meta) - RUN_FIELDS:
        raise ValueError(f"unknown run fields {sorted(unknown)}")
    if (accepted_in := tracing.traceparent()) is not None:  # the run keeps its trace
        meta.setdefault("traceparent", accepted_in)
    run_id = run_id or new_run_id(agent, sender)
    # The drain's message goes in the same step, when the conversation turns out idle: it
    # reaches a worker a round trip sooner (walrus_tasks.task_push).
    return run_id, meta, drain_push(r, agent, sender, run_id)


def _follow_up(
    r: redis.Redis,
    agent: str,
    sender: str,
    run_id: str,
    done: runs.Enqueued,
    drain: task_push.Push | None,
) -> None:
    """What an accepted message needs after its write.

    The interrupted run's wait ended; the drain sent, when the script did not push it.
    """
    if done.interrupted:
        waits.cancel(r, done.interrupted)  # the interrupted run may be waiting: end the wait too
    if done.drain and drain is None:  # else pushed, or the running run starts it as it ends
        _drain(agent, sender, run_id)


def _answer(agent: str, sender: str, run_id: str, done: runs.Enqueued) -> Submitted:
    """What the write did, as ``submit`` answers it (Conflict, InvalidInput)."""
    if done.state == "exists":
        return Submitted(run_id=run_id)
    if done.state == "other":
        raise InvalidInput(
            f"Idempotency-Key already used for another message to this conversation (run {run_id})"
        )
    if done.state == "guarded":
        raise Guarded(f"the guard of a submit to {agent}/{sender} did not hold")
    if done.state == "busy":
        raise Conflict(
            f"conversation {agent}/{sender} is busy (active run {done.active or 'starting'}); "
            "send with on_busy=enqueue or interrupt"
        )
    return Submitted(run_id=run_id, interrupted=done.interrupted)


def _drain(agent: str, sender: str, run_id: str) -> None:
    # The message is accepted: a broker that is failing over must not turn that into an error
    # (the client would send it again). The reaper re-drains an inbox left without a drain.
    try:
        send_drain(agent, sender, run_id)
    except (OperationalError, redis.RedisError, OSError) as e:
        log.warning("drain of %s/%s not sent (%s); the reaper will send it", agent, sender, e)


def cancel_active(r: redis.Redis, agent: str, sender: str) -> str | None:
    """Cancel the conversation's active run (``waits.cancel``); the run id, or None if idle."""
    active: str | None = r.get(keys.conv(keys.cid(agent, sender), "active"))  # type: ignore[assignment]
    if active is None:
        return None
    waits.cancel(r, active)
    return active
