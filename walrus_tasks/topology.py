"""One Redis or a Redis Cluster: the few places where the state layer tells them apart.

Every key a Lua script touches lies in one hash-tag bucket (docs/design.md, "Keys and slots"),
so most code runs unchanged on either. What differs is where a command without a key goes
(``WAIT`` must reach the master that holds the write) and what may share one atomic step: on a
cluster, state of two buckets, or of a bucket and a global key, is written in two steps.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

_CLUSTER_TYPES: dict[type, bool] = {}
"""Each client class seen: whether it is a cluster's (an ``isinstance`` against redis-py's
cluster classes goes through ``typing``'s protocol check, several microseconds a call)."""


def is_cluster(r: Any) -> bool:
    """True when ``r`` is a Redis Cluster client (sync or asyncio)."""
    kind = type(r)
    known = _CLUSTER_TYPES.get(kind)
    if known is None:
        known = _CLUSTER_TYPES[kind] = issubclass(kind, RedisCluster | AsyncRedisCluster)
    return known


def one_redis(r: Any) -> str:
    """The scripts' ``one_redis`` argument: ``"1"`` on one Redis, else ``"0"``.

    On one Redis a script does in one step what a cluster does in two, the other slot's half
    being then the caller's (docs/design.md, "Keys and slots").
    """
    return "0" if is_cluster(r) else "1"


def node_client(r: redis.Redis, key: str) -> redis.Redis:
    """The client of the master that serves ``key``: ``r`` itself on one Redis.

    On a cluster it is the cluster client's own connection pool to that node (kept by redis-py
    for as long as the node serves slots), so commands without a key, ``WAIT`` and ``INFO``,
    reach the node that holds the key's writes.
    """
    if not isinstance(r, RedisCluster):
        return r
    node = r.get_node_from_key(key)
    client: redis.Redis = r.get_redis_connection(node)
    return client


def read_slots_again(r: redis.Redis) -> None:
    """On a cluster, read the slot map anew (after a node failed under ``node_client``).

    Commands sent through the cluster client do this themselves; a node's own client does
    not, and would go on asking a dead master (or whatever took its port) for its slots.
    """
    if isinstance(r, RedisCluster):
        r.nodes_manager.initialize()


def pipeline(r: redis.Redis) -> Any:
    """A pipeline over keys of many slots: a transaction on one Redis, plain on a cluster.

    A cluster runs a transaction only over keys of one slot, so what spans conversations
    (export, import, loading memory) is written without one there: those run with the workers
    stopped (``walrus import`` refuses while runs are in flight).
    """
    return r.pipeline(transaction=not is_cluster(r))
