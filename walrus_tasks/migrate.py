"""``walrus migrate``: state written by a release before the hash-tag buckets, renamed in place.

Releases before ``keys.BUCKETS`` named a conversation's keys ``walrus:conv:<cid>:<part>``, a
run's ``walrus:run:<id>[:…]`` and kept each global index in one key (``walrus:leases``, …). Now
every such key carries its bucket's hash tag (docs/design.md, "Keys and slots"). ``migrate``
renames the old keys (``RENAMENX``: TTLs kept, a key the new release already wrote is never
overwritten but reported; the run-figure and usage hashes and the live feed become bucket 0's,
the keys of beat, the fair dispatcher, the limits and the subscriptions move under their
group's tag) and moves each old index's members into their buckets. Run it once,
with every walrus process stopped; running it again finds nothing to do. Old run ids keep
their names: their first hex digit names a bucket other than their conversation's, which one
Redis does not mind (a Redis Cluster starts empty, so never holds them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, get_args

import redis

from walrus_tasks import indexes, keys, topology
from walrus_tasks.errors import InvalidInput

OLD_CONV = keys.PREFIX + "conv:"
OLD_RUN = keys.PREFIX + "run:"
OLD_USAGE_HOUR = keys.PREFIX + "usage:hour:"
P = keys.PREFIX
OLD_NAMES = {
    P + "metrics:runs": keys.metrics_runs(0),
    P + "usage:totals": keys.usage_totals(0),
    P + "feed": keys.feed(0),
    P + "subs": keys.SUBSCRIPTIONS,
    P + "crons": keys.CRONS,
    P + "crons:due": keys.CRONS_DUE,
    P + "heartbeats": keys.HEARTBEATS,
    P + "beat:lock": keys.BEAT_LOCK,
    P + "limits": keys.LIMITS_SEEN,
}
"""Old single keys and their new names: the counter hashes and the live feed become bucket 0's
(a read adds the buckets up), the keys of beat, the limits and the subscriptions go to their
group's slot."""
OLD_PREFIXES = {
    P + "subs:source:": keys.subs_source(""),
    P + "fired:": keys.BEAT_GROUP + "fired:",
    P + "limit:": keys.LIMITS_GROUP + "limit:",
    P + "fair:": keys.FAIR_GROUP,
}
"""Old key prefixes and the group prefix each moved under (the rest of the name unchanged)."""
OLD_INDEXES: dict[str, keys.Index] = {keys.PREFIX + name: name for name in get_args(keys.Index)}
"""The old single key of each global index."""
_BATCH = 500


@dataclass
class Migrated:
    """What ``migrate`` did."""

    renamed: int = 0
    """Keys of conversations and runs given their new names."""
    index_members: int = 0
    """Members of the old global indexes moved into their buckets."""
    conflicts: list[str] = field(default_factory=list)
    """Old keys left in place because the new name is taken (compare by hand, then delete)."""


def new_name(old: str) -> str | None:
    """The bucketed name of a pre-bucket conversation, run or counter key, else None."""
    if old in OLD_NAMES:
        return OLD_NAMES[old]
    for prefix, group in OLD_PREFIXES.items():
        if old.startswith(prefix):
            return group + old[len(prefix) :]
    if old.startswith(OLD_USAGE_HOUR):
        return keys.usage_hour(old[len(OLD_USAGE_HOUR) :], 0)
    if old.startswith(OLD_CONV):
        rest = old[len(OLD_CONV) :]
        cid, _, part = rest.rpartition(":")
        if cid and part in keys.CONV_PARTS:
            return keys.conv(cid, part)
        return None
    if old.startswith(OLD_RUN):
        run_id, sep, tail = old[len(OLD_RUN) :].partition(":")
        return (keys.run(run_id) + sep + tail) if run_id else None
    return None


PENDING = "Redis holds state written by an earlier release: stop walrus and run `walrus migrate`"
"""Why a process refuses to start over state in the old names."""


def pending(r: redis.Redis) -> bool:
    """True when Redis still holds state in the old names (a check at start, one command)."""
    return bool(r.exists(*OLD_INDEXES))


def _old_keys(r: redis.Redis) -> Iterator[str]:
    for prefix in (OLD_CONV, OLD_RUN, OLD_USAGE_HOUR, *OLD_PREFIXES):
        yield from r.scan_iter(match=prefix + "*", count=1000)
    yield from (old for old in OLD_NAMES if r.exists(old))


def migrate(r: redis.Redis, progress: Callable[[int], None] = lambda n: None) -> Migrated:
    """Rename every old key and split every old index; ``progress`` hears how many so far.

    On one Redis only: a cluster holds nothing of an earlier release (it could not run there).
    """
    if topology.is_cluster(r):
        raise InvalidInput("walrus migrate runs on one Redis (a cluster starts empty)")
    done = Migrated()
    batch: list[tuple[str, str]] = []
    seen = [0]

    def flush() -> None:
        pipe = r.pipeline(transaction=False)
        for old, new in batch:
            pipe.renamenx(old, new)
        for (old, _), ok in zip(batch, pipe.execute(raise_on_error=False), strict=True):
            if ok is True or ok == 1:
                done.renamed += 1
            elif ok == 0:
                done.conflicts.append(old)
        seen[0] += len(batch)
        progress(seen[0])
        batch.clear()

    for old in _old_keys(r):
        new = new_name(old)
        if new is not None:
            batch.append((old, new))
        if len(batch) >= _BATCH:
            flush()
    if batch:
        flush()
    for old_key, name in OLD_INDEXES.items():
        done.index_members += _split(r, old_key, name)
    return done


def _split(r: redis.Redis, old_key: str, name: keys.Index) -> int:
    """Move the members of the old index ``old_key`` into the buckets of ``name``; drop it."""
    kind = r.type(old_key)
    if kind == "none":
        return 0
    members: Any = (
        r.smembers(old_key) if kind == "set" else r.zrange(old_key, 0, -1, withscores=True)
    )
    pipe = r.pipeline(transaction=True)  # the old key goes with the last of its members
    if kind == "set":
        for key, found in indexes.by_bucket(name, members).items():
            pipe.sadd(key, *found)
    else:
        scores = dict(members)
        for key, found in indexes.by_bucket(name, scores).items():
            pipe.zadd(key, {m: scores[m] for m in found}, nx=True)
    pipe.delete(old_key)
    pipe.execute()
    return len(members)
