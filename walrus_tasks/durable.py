"""Accepting a message durably: a replica holds it before the gateway answers, when one exists.

Redis replication is asynchronous. A message whose inbox write reached only the master is lost
if a replica is promoted before it got it, so ``submit()`` waits with ``WAIT 1 <timeout>`` for
one replica's acknowledgement. ``WAIT`` counts the writes of *its own connection*, so the
script, a probe write and the ``WAIT`` go down one connection in one pipeline; the probe makes
the wait cover the message also when the script wrote nothing (it found the run already there,
written by an attempt whose answer was lost). And because a failover takes seconds,
``retrying`` runs the whole write again, under the same run id, until the new master answers:
the script is idempotent by run id, so an attempt that did land is never doubled.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis

from walrus_tasks import keys, scripts, topology
from walrus_tasks.errors import Unavailable
from walrus_tasks.script_args import Script
from walrus_tasks.settings import get_settings

log = logging.getLogger("walrus.durable")

REPLICAS_TTL = 1.0
"""Seconds a master's replica count is reused before it is asked again (``INFO``)."""

FAILOVER_ERRORS = (
    redis.ConnectionError,
    redis.TimeoutError,
    # A demoted master that a connection still points at.
    redis.ReadOnlyError,
    # A new master without our scripts, met inside a pipeline (which does not reload them).
    redis.exceptions.NoScriptError,
    # A cluster whose master of the slot is being replaced: no node serves it for a moment.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.RedisClusterException,
)
"""What a client sees while Sentinel or the cluster replaces a master."""

_replicas: dict[int, tuple[float, int]] = {}
T = TypeVar("T")


def connected_replicas(r: redis.Redis) -> int:
    """How many replicas the master behind ``r`` has in sync (cached for ``REPLICAS_TTL``).

    One still loading its first copy is not counted: it could not acknowledge in time.
    """
    cached = _cached_replicas(r)
    return cached if cached is not None else _remember(r, r.info("replication"))


async def unreplicated_async(r: redis.Redis, aredis: aioredis.Redis) -> bool:
    """Whether a write to ``r`` needs no replica's acknowledgement just now.

    True when the wait is off, or when ``r``'s master has no replica in sync: the count
    :func:`connected_replicas` caches, read on ``aredis`` (``r``'s Redis) when it is not known,
    so an event loop's writer learns it with no thread. (It once went to a thread to learn it,
    and so did every write of the moment the count expired: docs/benchmarks.md, issue 25,
    twentieth round.)
    """
    if get_settings().replica_ack_timeout <= 0:
        return True
    cached = _cached_replicas(r)
    if cached is None:
        cached = _remember(r, await aredis.info("replication"))
    return cached == 0


def _cached_replicas(r: redis.Redis) -> int | None:
    """The replica count of ``r``'s master read within ``REPLICAS_TTL``, else None."""
    cached = _replicas.get(id(r))
    if cached is None or time.monotonic() - cached[0] >= REPLICAS_TTL:
        return None
    return cached[1]


def _remember(r: redis.Redis, info: Any) -> int:
    """The replicas in sync by ``INFO replication``'s answer ``info``, cached for ``r``."""
    count = sum(
        1
        for name, replica in info.items()
        if name.startswith("slave")
        and isinstance(replica, dict)
        and replica.get("state") == "online"
    )
    _replicas[id(r)] = (time.monotonic(), count)
    return count


def call_acknowledged(
    r: redis.Redis, script: Script[T], keys_: Sequence[str], args: Mapping[str, Any]
) -> T:
    """Run ``script`` and, when the master has replicas, wait for one to hold its writes.

    The wait is bounded by ``WALRUS_REPLICA_ACK_TIMEOUT``; past it the result is returned
    anyway (logged): the master holds the write, and an error would make a client send twice.
    """
    # On a cluster, the master of the script's slot: WAIT counts that node's replicas.
    node = topology.node_client(r, keys_[0])
    try:
        return _acknowledged(node, script, keys_, args)
    except FAILOVER_ERRORS:
        topology.read_slots_again(r)  # the next try asks the master of the slot by then
        raise


def _acknowledged(
    r: redis.Redis, script: Script[T], keys_: Sequence[str], args: Mapping[str, Any]
) -> T:
    timeout = get_settings().replica_ack_timeout
    if timeout <= 0 or connected_replicas(r) == 0:
        return scripts.call(r, script, keys_, args)
    with r.pipeline(transaction=False) as pipe:
        scripts.queue(r, pipe, script, keys_, args)
        pipe.incr(keys.replica_probe(keys_[0]))
        pipe.execute_command("WAIT", 1, int(timeout * 1000))  # type: ignore[no-untyped-call]
        result, _, acked = pipe.execute()
    if not acked:
        log.warning("no replica acknowledged a write within %.1f s", timeout)
    return script.reply(result)


def retrying(operation: Callable[[], T], what: str) -> T:
    """``operation()``, retried on connection errors for up to ``WALRUS_SUBMIT_RETRY`` seconds.

    Only for operations that may run twice (idempotent by an id chosen before the first try).
    Raises Unavailable when Redis does not come back in time.
    """
    deadline = time.monotonic() + get_settings().submit_retry
    pause = 0.05
    while True:
        try:
            return operation()
        except FAILOVER_ERRORS as e:
            if time.monotonic() + pause > deadline:
                raise Unavailable(f"{what}: Redis unavailable ({e})") from e
            log.warning("%s: Redis unavailable (%s); retrying", what, e)
        time.sleep(pause)
        pause = min(pause * 2, 1.0)
