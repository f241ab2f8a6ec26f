"""Reading the global indexes, which live one key per hash-tag bucket (``keys.INDEXES``).

Each read here asks every bucket in one pipeline (on Redis Cluster, redis-py sends each node its
buckets' commands) and merges the answers, so a caller sees one index as before.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import redis

from walrus_tasks import keys


def sizes(r: redis.Redis, *names: keys.Index) -> list[int]:
    """How many members each index in ``names`` holds, summed over the buckets."""
    pipe = r.pipeline(transaction=False)
    queue_sizes(pipe, *names)
    return read_sizes(pipe.execute(), len(names))


def queue_sizes(pipe: Any, *names: keys.Index) -> None:
    """Queue the size of each of ``names`` on ``pipe`` (read back with ``read_sizes``)."""
    for name in names:
        for key in keys.every(name):
            pipe.scard(key) if name in keys.SET_INDEXES else pipe.zcard(key)


def read_sizes(replies: list[Any], count: int) -> list[int]:
    """The sizes ``queue_sizes`` asked for, from the first replies of the pipeline."""
    n = keys.BUCKETS
    return [sum(replies[i * n : (i + 1) * n]) for i in range(count)]


def members(r: redis.Redis, name: keys.Index) -> list[str]:
    """Every member of ``name`` (a set's in no order)."""
    pipe = r.pipeline(transaction=False)
    for key in keys.every(name):
        pipe.smembers(key) if name in keys.SET_INDEXES else pipe.zrange(key, 0, -1)
    return [m for found in pipe.execute() for m in found]


def scored(
    r: redis.Redis, name: keys.Index, low: float | str = "-inf", high: float | str = "+inf"
) -> list[tuple[str, float]]:
    """The members of sorted index ``name`` scored in ``[low, high]``, lowest score first."""
    pipe = r.pipeline(transaction=False)
    for key in keys.every(name):
        pipe.zrangebyscore(key, low, high, withscores=True)
    return list(heapq.merge(*pipe.execute(), key=lambda row: row[1]))


def newest(r: redis.Redis, name: keys.Index) -> list[tuple[str, float]]:
    """Every member of sorted index ``name`` with its score, highest score first."""
    pipe = r.pipeline(transaction=False)
    for key in keys.every(name):
        pipe.zrevrange(key, 0, -1, withscores=True)
    return list(heapq.merge(*pipe.execute(), key=lambda row: row[1], reverse=True))


def by_bucket(name: keys.Index, members_: Iterable[str]) -> dict[str, list[str]]:
    """``members_`` of index ``name`` grouped by the bucket key each belongs in."""
    out: dict[str, list[str]] = defaultdict(list)
    for m in members_:
        key = keys.conv_index(name, m) if name in keys.CONV_INDEXES else keys.run_index(name, m)
        out[key].append(m)
    return out


def remove(r: redis.Redis, name: keys.Index, members_: Iterable[str]) -> None:
    """Remove ``members_`` from index ``name``, each from its bucket."""
    groups = by_bucket(name, members_)
    if not groups:
        return
    pipe = r.pipeline(transaction=False)
    for key, found in groups.items():
        pipe.srem(key, *found) if name in keys.SET_INDEXES else pipe.zrem(key, *found)
    pipe.execute()


def summed(replies: Iterable[dict[str, str]]) -> dict[str, str]:
    """Counter hashes (one a bucket, as HGETALL gave them) added up field by field.

    Integer counts stay integers; a field with a fractional value anywhere is summed as float.
    """
    out: dict[str, str] = {}
    for fields in replies:
        for name, value in fields.items():
            if name not in out:
                out[name] = value
                continue
            try:
                out[name] = str(int(out[name]) + int(value))
            except ValueError:
                out[name] = repr(float(out[name]) + float(value))
    return out


def read_summed(r: redis.Redis, keys_: Iterable[str]) -> dict[str, str]:
    """The counter hashes ``keys_`` (one a bucket) read in one pipeline and ``summed``."""
    pipe = r.pipeline(transaction=False)
    for key in keys_:
        pipe.hgetall(key)
    return summed(pipe.execute())
