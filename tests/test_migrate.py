"""``walrus migrate``: state in the key names of the release before the hash-tag buckets keeps
working after an upgrade (docs/design.md, "Keys and slots").

The old state is made by the new code and then given the old names (``to_old_names``, the
inverse of ``walrus_tasks.migrate``, spelled out from the old schema), with run ids made the old
way (random: their first digit names no particular bucket).
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.cluster import Cluster, wait_for
from tests.conftest import redis_db_url
from walrus_tasks import crons, indexes, keys, runs
from walrus_tasks.migrate import OLD_INDEXES, OLD_NAMES, OLD_PREFIXES, migrate, new_name, pending
from walrus_tasks.models import CronSpec
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.usage import read_totals


def old_run_id(agent: str, sender: str) -> str:
    """A run id as releases before the buckets made them, never in its conversation's bucket."""
    while True:
        run_id = uuid.uuid4().hex
        if keys.run_bucket(run_id) != keys.bucket_of(keys.cid(agent, sender)):
            return run_id


def to_old_names(r: redis.Redis) -> None:
    """Give every bucketed key its pre-bucket name and merge each index into one key."""
    for old, new in OLD_NAMES.items():
        if r.exists(new):
            r.rename(new, old)
    for old_prefix, group in OLD_PREFIXES.items():
        for key in list(r.scan_iter(match=group + "*", count=1000)):
            r.rename(key, old_prefix + key[len(group) :])
    for key in list(r.scan_iter(match=keys.PREFIX + "{*}:*", count=1000)):
        rest = key[key.index("}:") + 2 :]
        if rest.startswith(("conv:", "run:")):
            r.rename(key, keys.PREFIX + rest)
    for old, name in OLD_INDEXES.items():
        for bucket_key in keys.every(name):
            kind = r.type(bucket_key)
            if kind == "set":
                r.sadd(old, *r.smembers(bucket_key))
            elif kind == "zset":
                r.zadd(old, dict(r.zrange(bucket_key, 0, -1, withscores=True)))
            r.delete(bucket_key)


def test_old_names_map_to_the_bucketed_ones() -> None:
    assert new_name("walrus:conv:echo:tenant:acme:bob:history") == keys.conv(
        "echo:tenant:acme:bob", "history"
    )
    assert new_name("walrus:run:abc:events") == keys.run_part("abc", "events")
    assert new_name("walrus:run:abc:claim:call_1") == keys.run_call("abc", "claim", "call_1")
    assert new_name("walrus:run:abc") == keys.run("abc")
    assert new_name("walrus:conv:echo:bob:unknownpart") is None
    assert new_name("walrus:metrics:runs") == keys.metrics_runs(0)
    assert new_name("walrus:usage:totals") == keys.usage_totals(0)
    assert new_name("walrus:usage:hour:2026120519") == keys.usage_hour("2026120519", 0)
    assert new_name("walrus:crons") == keys.CRONS and new_name("walrus:subs") == keys.SUBSCRIPTIONS
    assert new_name("walrus:subs:source:agent:a:done") == keys.subs_source("agent:a:done")
    assert new_name("walrus:fair:ready:t:a") == keys.fair_ready("t", "a")
    assert new_name("walrus:limit:p/m:slots") == keys.limit("p/m", "slots")
    assert new_name("walrus:fired:cron:x:1") == keys.fired("cron:x", 1)


@pytest.mark.one_redis  # an earlier release ran on one Redis only
def test_migrate_renames_keeps_ttls_splits_indexes_and_reports_conflicts(r: redis.Redis) -> None:
    sender = f"m-{uuid.uuid4().hex[:8]}"
    run_id = old_run_id("echo", sender)
    assert runs.enqueue(r, run_id, "echo", sender, "hello", "enqueue", {}).state == "ok"
    r.expire(keys.run(run_id), 3600)
    cid = keys.cid("echo", sender)
    r.rpush(keys.conv(cid, "history"), '{"role": "user", "content": "before"}')
    to_old_names(r)
    r.hset("walrus:usage:totals", "|echo|fake/x|in", 7)  # counters of the old release
    r.hset("walrus:usage:hour:2026120519", "|echo|fake/x|in", 7)
    r.expire("walrus:usage:hour:2026120519", 600)
    assert pending(r)
    assert r.exists(f"walrus:run:{run_id}", f"walrus:conv:{cid}:inbox") == 2
    # A key the new release already wrote under its new name is left for a human to compare.
    r.rpush(keys.conv(cid, "archive"), "new")
    r.rpush(f"walrus:conv:{cid}:archive", "old")

    done = migrate(r)

    assert not pending(r)
    assert done.renamed >= 4 and done.index_members >= 3  # inboxes, conversations, runs
    assert done.conflicts == [f"walrus:conv:{cid}:archive"]
    assert r.hget(keys.run(run_id), "content") == "hello"
    assert 0 < r.ttl(keys.run(run_id)) <= 3600, "the TTL came along"
    assert r.lrange(keys.conv(cid, "inbox"), 0, -1) == [run_id]
    assert r.zscore(keys.conv_index("inboxes", cid), cid) is not None
    assert r.zscore(keys.conv_index("conversations", cid), cid) is not None
    assert r.zscore(keys.run_index("runs", run_id), run_id) is not None
    assert not r.exists(*OLD_INDEXES)
    assert read_totals(r)[("", "echo", "fake/x")].input_tokens == 7
    assert 0 < r.ttl(keys.usage_hour("2026120519", 0)) <= 600
    again = migrate(r)
    assert (again.renamed, again.index_members) == (0, 0), "a second run has nothing to do"


def _queued_the_old_way(r: redis.Redis, sender: str) -> str:
    run_id = old_run_id("echo", sender)
    assert runs.enqueue(r, run_id, "echo", sender, "after the upgrade", "enqueue", {}).state == "ok"
    cid = keys.cid("echo", sender)
    r.zadd(keys.conv_index("inboxes", cid), {cid: 1})  # waiting long: the reaper drains it
    return run_id


@pytest.mark.timeout(240)
def test_a_conversation_of_the_old_release_goes_on_after_walrus_migrate(
    redis_server: RedisServer, home: Path, tmp_path: Path
) -> None:
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    sender = f"up-{uuid.uuid4().hex[:8]}"
    try:
        c.start_gateway()
        c.start_worker("worker1")
        c.start_beat()
        c.wait_ready()
        first = c.send("echo", "before the upgrade", sender)
        assert c.wait_run(first)["status"] == "succeeded"
        c.stop()
        r = c.redis()
        spec = CronSpec(schedule="@every 1h", agent="echo", message="tick")
        cron = crons.create(r, spec, ["echo"])
        queued = _queued_the_old_way(r, sender)
        to_old_names(r)
        env: dict[str, Any] = c.env()
        refused = subprocess.run(
            [sys.executable, "-m", "walrus_tasks.cli", "doctor"], env=env,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "walrus migrate" in refused.stdout, refused.stdout
        out = subprocess.run(
            [sys.executable, "-m", "walrus_tasks.cli", "migrate"], env=env,
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert "renamed" in out and "index entries" in out, out
        c.procs.clear()
        c.start_gateway()
        c.start_worker("worker1")
        c.start_beat()
        c.wait_ready()
        assert c.wait_run(queued, timeout=90)["status"] == "succeeded"
        assert c.run(first)["status"] == "succeeded", "an old run is read by its id"
        assert [e.id for e in crons.list_all(r)] == [cron.id], "beat's crons came along"
        contents = [m["content"] for m in c.history("echo", sender) if m["role"] == "user"]
        assert contents == ["before the upgrade", "after the upgrade"]
        wait_for(lambda: indexes.sizes(r, "leases", "runs:active") == [0, 0], 30)
    finally:
        c.stop()
