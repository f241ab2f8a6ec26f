"""The Agent Protocol's operations: its threads, run records and store, and their walrus runs.

What :mod:`gateway.agent_protocol` reads and writes (the ``keys.ap_*`` keys, and the walrus runs
of its threads), typed and raising :mod:`walrus_tasks.errors`; the face renders these in
LangGraph's shapes (``gateway/agent_protocol/state.py``) and touches no key itself. The
record a run's create writes is :mod:`gateway.thread_records`'s, a join's first read
:mod:`gateway.thread_joins`'; the operations every face shares are in :mod:`gateway.operations`.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from gateway.operations import known_agent
from walrus_tasks import conversations as conversations_mod
from walrus_tasks import ids, keys, reads, runs, waits, webhooks
from walrus_tasks.agent_protocol import THREAD_SENDER, iso
from walrus_tasks.config import Config
from walrus_tasks.errors import Conflict, InvalidInput, NotFound
from walrus_tasks.run_stream import parse
from walrus_tasks.submit import Guarded, SubmitOnBusy, Submitted, submit, submit_async
from walrus_tasks.tenancy import scoped, tenant_of

THREAD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def now_ms() -> int:
    """Now, in epoch milliseconds."""
    return int(time.time() * 1000)


def thread_id_of(value: Any) -> str:
    """``value`` if it is an acceptable thread id (InvalidInput otherwise)."""
    if not isinstance(value, str) or not THREAD_ID_RE.fullmatch(value):
        raise InvalidInput(f"invalid thread id {value!r}: must match {THREAD_ID_RE.pattern}")
    return value


def thread_sender(thread_id: str, tenant: str | None = None) -> str:
    """The walrus sender of the conversation of thread ``thread_id`` of ``tenant``."""
    return scoped(tenant, f"{THREAD_SENDER}{thread_id}")


def tenant_in(h: dict[str, str]) -> str | None:
    """The tenant of thread ``h`` (None: the default)."""
    return h.get("tenant") or None


def get_thread(r: redis.Redis, tenant: str | None, thread_id: str) -> dict[str, str]:
    """The hash of thread ``thread_id`` of ``tenant``, or NotFound (also another tenant's).

    It carries two fields that are not stored: ``tenant`` ("" for the default) and ``sender``,
    the walrus sender of its conversation.
    """
    key = keys.ap_thread(thread_id_of(thread_id), tenant)
    h: dict[str, str] = r.hgetall(key)  # type: ignore[assignment]
    return found_thread(h, tenant, thread_id)


async def get_thread_async(
    aredis: aioredis.Redis, tenant: str | None, thread_id: str
) -> dict[str, str]:
    """:func:`get_thread` on the gateway's asyncio client."""
    key = keys.ap_thread(thread_id_of(thread_id), tenant)
    h: dict[str, str] = await aredis.hgetall(key)  # type: ignore[assignment]
    return found_thread(h, tenant, thread_id)


def found_thread(h: dict[str, str], tenant: str | None, thread_id: str) -> dict[str, str]:
    """Thread ``h`` as :func:`get_thread` answers it, from its hash as read (NotFound: none)."""
    if not h.get("thread_id"):
        raise NotFound(f"thread {thread_id} not found")
    h.update(tenant=tenant or "", sender=thread_sender(thread_id, tenant))  # not stored
    return h


def create_thread(
    r: redis.Redis,
    tenant: str | None,
    thread_id: str | None,
    metadata: dict[str, Any],
    if_exists: str,
) -> dict[str, str]:
    """Create a thread of ``tenant`` (``if_exists``: ``raise`` -> Conflict, ``do_nothing``)."""
    tid = thread_id_of(thread_id) if thread_id else ids.uuid_str()
    now = now_ms()
    if not r.hsetnx(keys.ap_thread(tid, tenant), "created_at", now):
        if if_exists == "do_nothing":
            return get_thread(r, tenant, tid)
        raise Conflict(f"thread {tid} already exists")
    r.hset(keys.ap_thread(tid, tenant), mapping=_thread_fields(tid, now, metadata))
    r.zadd(keys.ap_threads(tenant), {tid: now})
    return get_thread(r, tenant, tid)


async def create_thread_async(
    aredis: aioredis.Redis,
    tenant: str | None,
    thread_id: str | None,
    metadata: dict[str, Any],
    if_exists: str,
) -> tuple[dict[str, str], bool]:
    """:func:`create_thread` on the gateway's asyncio client: two round trips, not four.

    Answers the thread and whether it is bare: made now, with no assistant, and no runs left
    under its id by an earlier thread of that id (read with it). A bare thread has no
    conversation, so its view needs no read (``state.new_thread_view``).
    """
    tid = thread_id_of(thread_id) if thread_id else ids.uuid_str()
    key, now = keys.ap_thread(tid, tenant), now_ms()
    if not await aredis.hsetnx(key, "created_at", now):
        if if_exists == "do_nothing":
            return await get_thread_async(aredis, tenant, tid), False
        raise Conflict(f"thread {tid} already exists")
    pipe = aredis.pipeline(transaction=False)
    pipe.hset(key, mapping=_thread_fields(tid, now, metadata))
    pipe.zadd(keys.ap_threads(tenant), {tid: now})
    pipe.hgetall(key)
    pipe.lindex(keys.ap_thread_runs(tid, tenant), -1)
    *_, h, last = await pipe.execute()
    return found_thread(h, tenant, tid), last is None and not h.get("agent")


def _thread_fields(tid: str, now: int, metadata: dict[str, Any]) -> dict[Any, Any]:
    """A new thread's fields but ``created_at`` (its assistant too, named in its metadata)."""
    fields: dict[Any, Any] = {"thread_id": tid, "updated_at": now, "metadata": json.dumps(metadata)}
    if isinstance(metadata.get("graph_id"), str):
        fields["agent"] = metadata["graph_id"]
    return fields


def bound_to(h: dict[str, str], agent: str) -> bool:
    """Whether thread ``h`` has its assistant, ``agent`` (Conflict if another); False: none yet."""
    if h.get("agent") and h["agent"] != agent:
        raise Conflict(f"thread {h['thread_id']} belongs to assistant {h['agent']!r}")
    return bool(h.get("agent"))


def bind_thread(r: redis.Redis, h: dict[str, str], agent: str) -> None:
    """Record ``agent`` as thread ``h``'s assistant (Conflict if it has another)."""
    if bound_to(h, agent):
        return
    fields: dict[Any, Any] = {"agent": agent, "metadata": bound_metadata(h, agent)}
    r.hset(keys.ap_thread(h["thread_id"], tenant_in(h)), mapping=fields)
    h.update(fields)


def bound_metadata(h: dict[str, str], agent: str) -> str:
    """Thread ``h``'s metadata once bound to ``agent``, as stored (:func:`bound_meta`)."""
    return json.dumps(bound_meta(json.loads(h.get("metadata") or "{}"), agent))


def bound_meta(meta: dict[str, Any], agent: str) -> dict[str, Any]:
    """Metadata ``meta`` of a thread bound to ``agent``: its ``graph_id`` and ``assistant_id``."""
    return {**meta, "graph_id": agent, "assistant_id": agent}


async def patch_thread_async(
    aredis: aioredis.Redis, tenant: str | None, thread_id: str, metadata: dict[str, Any]
) -> dict[str, str]:
    """Merge ``metadata`` into the thread's: the thread as it is then."""
    h = await get_thread_async(aredis, tenant, thread_id)
    meta = {**json.loads(h.get("metadata") or "{}"), **metadata}
    key = keys.ap_thread(thread_id, tenant)
    pipe = aredis.pipeline(transaction=False)
    pipe.hset(key, mapping={"metadata": json.dumps(meta), "updated_at": now_ms()})
    pipe.hgetall(key)
    _, patched = await pipe.execute()
    return found_thread(patched, tenant, thread_id)


async def delete_thread_async(aredis: aioredis.Redis, tenant: str | None, thread_id: str) -> None:
    """Delete the thread, its runs' records and its conversation (Conflict while busy).

    Three round trips with a conversation, two without: the thread read with its runs' ids,
    the conversation deleted (refused while busy: then nothing else is), the rest deleted.
    """
    key, runs_key = (
        keys.ap_thread(thread_id_of(thread_id), tenant),
        keys.ap_thread_runs(thread_id, tenant),
    )
    pipe = aredis.pipeline(transaction=False)
    pipe.hgetall(key)
    pipe.lrange(runs_key, 0, -1)
    h, run_ids = await pipe.execute()
    h = found_thread(h, tenant, thread_id)
    if h.get("agent"):
        with contextlib.suppress(NotFound):  # NotFound: no message was ever sent
            await conversations_mod.delete_async(aredis, h["agent"], h["sender"])
    pipe = aredis.pipeline(transaction=False)
    for gone in (key, runs_key, *map(keys.ap_run, run_ids)):
        pipe.delete(gone)  # one key a command: on a cluster, the keys are in different slots
    pipe.zrem(keys.ap_threads(tenant), thread_id)
    await pipe.execute()


async def thread_history_async(aredis: aioredis.Redis, h: dict[str, str]) -> list[dict[str, Any]]:
    """The messages of thread ``h``'s conversation, in order (none before its first run)."""
    return await reads.history_async(aredis, h["agent"], h["sender"]) if h.get("agent") else []


def thread_active_run(r: redis.Redis, h: dict[str, str]) -> str | None:
    """The run id active in thread ``h``'s conversation, or None."""
    if not h.get("agent"):
        return None
    return r.get(keys.conv(keys.cid(h["agent"], h["sender"]), "active"))  # type: ignore[return-value]


def send_in_thread(
    r: redis.Redis,
    config: Config,
    h: dict[str, str],
    content: str,
    on_busy: SubmitOnBusy,
    webhook: str | None = None,
) -> Submitted:
    """Send ``content`` into thread ``h``'s conversation (bound to its agent): a queued run.

    Counted under the thread's tenant, as a native send; a ``webhook`` (checked: 422) is kept
    on the run, whose end sends it. ``interrupt`` and ``rollback`` act on every run of the
    thread not yet ended, the queued ones too, as LangGraph's strategies do.
    """
    agent, meta = _send_meta(config, h, webhook)
    return submit(r, agent, h["sender"], content, on_busy, meta=meta, cancel_queued=True)


async def send_in_thread_async(
    aredis: aioredis.Redis,
    r: redis.Redis,
    config: Config,
    h: dict[str, str],
    content: str,
    on_busy: SubmitOnBusy,
    along: runs.Along | None = None,
) -> Submitted | None:
    """:func:`send_in_thread` (with no webhook) on the event loop (``submit_async``).

    None: ``along``'s guard (``thread_records.record_along``'s) did not hold, or would not have been
    checked; nothing was written.
    """
    agent, meta = _send_meta(config, h, None)
    try:
        return await submit_async(
            aredis, r, agent, h["sender"], content, on_busy, meta=meta, cancel_queued=True,
            along=along,
        )  # fmt: skip
    except Guarded:
        return None


def _send_meta(
    config: Config, h: dict[str, str], webhook: str | None
) -> tuple[str, dict[str, str]]:
    """The agent of thread ``h`` and the fields of its run (``webhook`` checked)."""
    agent = known_agent(config, h["agent"])
    meta = {"face": "agent-protocol"}
    if webhook:
        meta["webhook"] = check_webhook(config, webhook)
    if tenant_in(h):
        meta["tenant"] = h["tenant"]
    return agent, meta


def thread_run(
    r: redis.Redis, run_id: str, h: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """``(Agent Protocol record, walrus run record)`` of run ``run_id`` of thread ``h``.

    NotFound for another thread's run, and for a run of another tenant's thread of the same id:
    the walrus run must be in the thread's own conversation's tenant.
    """
    pipe = r.pipeline(transaction=False)  # both hashes in one round trip (issue 25)
    pipe.hgetall(keys.ap_run(run_id))
    pipe.hgetall(keys.run(run_id))
    ap, record = pipe.execute()
    return its_run(run_id, h, ap, record)


def thread_and_run(
    r: redis.Redis, tenant: str | None, thread_id: str, run_id: str
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """:func:`get_thread`, then :func:`thread_run` of it, in one round trip (a join's first)."""
    pipe = r.pipeline(transaction=False)
    queue_thread_and_run(pipe, tenant, thread_id, run_id)
    return thread_and_run_of(pipe.execute(), tenant, thread_id, run_id)


async def thread_and_run_async(
    aredis: aioredis.Redis, tenant: str | None, thread_id: str, run_id: str
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """:func:`thread_and_run` on the gateway's asyncio client."""
    pipe = aredis.pipeline(transaction=False)
    queue_thread_and_run(pipe, tenant, thread_id, run_id)
    return thread_and_run_of(await pipe.execute(), tenant, thread_id, run_id)


def queue_thread_and_run(
    pipe: redis.client.Pipeline | aioredis.client.Pipeline,
    tenant: str | None,
    thread_id: str,
    run_id: str,
) -> None:
    """The reads of :func:`thread_and_run`, queued on ``pipe`` (a join's first round trip)."""
    pipe.hgetall(keys.ap_thread(thread_id_of(thread_id), tenant))
    pipe.hgetall(keys.ap_run(run_id))
    pipe.hgetall(keys.run(run_id))


def thread_and_run_of(
    replies: list[Any], tenant: str | None, thread_id: str, run_id: str
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """:func:`thread_and_run`'s answer from the replies of :func:`queue_thread_and_run`."""
    h, ap, record = replies
    h = found_thread(h, tenant, thread_id)
    return (h, *its_run(run_id, h, ap, record))


def its_run(
    run_id: str, h: dict[str, str], ap: dict[str, str], record: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """Run ``run_id``'s two records as read, if it is thread ``h``'s run (else NotFound)."""
    if not ap or ap["thread_id"] != h["thread_id"]:
        raise NotFound(f"run {run_id} not found")
    if not record:  # as reads.run_record words it
        raise NotFound(f"unknown run {run_id!r}")
    if tenant_of(record.get("sender", "")) != tenant_in(h):
        raise NotFound(f"run {run_id} not found")
    return ap, record


def forget_thread_run(r: redis.Redis, run_id: str, h: dict[str, str]) -> None:
    """Drop run ``run_id`` from thread ``h`` and delete its Agent Protocol record."""
    r.lrem(keys.ap_thread_runs(h["thread_id"], tenant_in(h)), 0, run_id)
    r.delete(keys.ap_run(run_id))


def stream_modes(r: redis.Redis, run_id: str) -> list[str]:
    """The stream modes run ``run_id`` was created with (``values`` if none were recorded)."""
    raw: str | None = r.hget(keys.ap_run(run_id), "stream_mode")  # type: ignore[assignment]
    return json.loads(raw) if raw else ["values"]


def cancel_run(r: redis.Redis, run_id: str) -> None:
    """Cancel run ``run_id`` at once: its flag, and its waits ended (``waits.cancel``)."""
    waits.cancel(r, run_id)


def rollback_run(r: redis.Redis, run_id: str, h: dict[str, str]) -> None:
    """Mark run ``run_id`` of thread ``h`` so its end removes its messages from history.

    An ended run's messages go now (``runs.rollback``).
    """
    runs.rollback(r, run_id, h["agent"], h["sender"])


def check_webhook(config: Config, url: str) -> str:
    """``url`` if ``[webhooks] allowed_hosts`` lets runs call it (InvalidInput otherwise)."""
    return webhooks.check_url(config, url)


def set_webhook(r: redis.Redis, run_id: str, url: str) -> bool:
    """Keep ``url`` (checked by :func:`check_webhook`) on run ``run_id``: its end sends it.

    False, writing nothing, when the run is gone or has ended (its end would never send it).
    """
    return runs.set_webhook(r, run_id, url)


async def events_through(aredis: aioredis.Redis, run_id: str, cursor: str) -> list[dict[str, Any]]:
    """The run's events up to and including entry ``cursor`` (a stream resumed mid-run)."""
    entries: Any = await aredis.xrange(keys.run_part(run_id, "events"), "-", cursor)
    return [parse(entry_id, fields)[1] for entry_id, fields in entries]


def store_get(r: redis.Redis, tenant: str | None, namespace: str, key: str) -> str | None:
    """The stored JSON of item ``key`` of ``namespace`` (dotted) in ``tenant``'s store."""
    return r.hget(keys.ap_store(namespace, tenant), key)  # type: ignore[return-value]


def store_put(r: redis.Redis, tenant: str | None, namespace: str, key: str, value: Any) -> None:
    """Store ``value`` under ``(namespace, key)``, keeping its first ``created_at``."""
    now = iso(now_ms())
    old = store_get(r, tenant, namespace, key)
    created = json.loads(old)["created_at"] if old else now
    stored = {"value": value, "created_at": created, "updated_at": now}
    r.hset(keys.ap_store(namespace, tenant), key, json.dumps(stored))
    r.sadd(keys.ap_store_namespaces(tenant), namespace)


def store_delete(r: redis.Redis, tenant: str | None, namespace: str, key: str) -> None:
    """Delete one item (and the namespace with its last)."""
    r.hdel(keys.ap_store(namespace, tenant), key)
    if not r.exists(keys.ap_store(namespace, tenant)):
        r.srem(keys.ap_store_namespaces(tenant), namespace)


def store_namespaces(r: redis.Redis, tenant: str | None) -> list[str]:
    """``tenant``'s store namespaces (dotted), sorted."""
    return sorted(r.smembers(keys.ap_store_namespaces(tenant)))  # type: ignore[arg-type]


def store_items(r: redis.Redis, tenant: str | None, namespace: str) -> dict[str, str]:
    """Every item of ``namespace``: ``{key: stored JSON}``."""
    return r.hgetall(keys.ap_store(namespace, tenant))  # type: ignore[return-value]
