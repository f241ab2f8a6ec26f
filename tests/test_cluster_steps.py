"""On Redis Cluster, what spans two slots is two steps (docs/design.md, "Keys and slots"): what
the reaper finishes when a caller dies between them, and a submit after its slot's master died.

Each test has a cluster of its own (``tests.redis_cluster``) and no walrus process: it plays
the caller that dies, then the reaper.
"""

from __future__ import annotations

import json
import time

import redis

from tests.redis_cluster import RedisClusterGroup
from walrus_tasks import connection, durable, fair, keys, runs
from walrus_tasks.submit import new_run_id


def accepted(redis_cluster: RedisClusterGroup, sender: str) -> tuple[redis.Redis, str, str]:
    """A message to echo/``sender`` accepted on the cluster (submit's two steps).

    The client, the conversation id, and the dispatcher's ready set it is marked in.
    """
    r = connection.client(redis_cluster.url)
    run_id = new_run_id("echo", sender)
    assert runs.enqueue(r, run_id, "echo", sender, "go", "enqueue", {}).state == "ok"
    return r, keys.cid("echo", sender), keys.fair_ready(sender, "echo")


def test_a_pick_whose_drain_died_before_starting_it_is_ready_again_once_its_claim_runs_out(
    redis_cluster: RedisClusterGroup,
) -> None:
    r, cid, ready = accepted(redis_cluster, "claimed")
    assert r.zscore(ready, cid) is not None, "submit's second step marked it ready"
    assert fair.pick(r, fair.EVEN) == cid  # the drain's first step ...
    assert r.zscore(ready, cid) is None and r.zscore(keys.FAIR_CLAIMS, cid) is not None
    r.zadd(keys.FAIR_CLAIMS, {cid: 1})  # ... and its drain died: the claim runs out
    due = fair.claims_due(r)
    assert due == [cid] and not r.zcard(keys.FAIR_CLAIMS)
    assert fair.reap(r, due) == [cid], "a drain is sent for it again"
    assert r.zscore(ready, cid) is not None, "and the dispatcher holds it ready again"


def test_a_message_whose_mark_was_lost_is_marked_ready_by_the_reaper(
    redis_cluster: RedisClusterGroup,
) -> None:
    r, cid, ready = accepted(redis_cluster, "unmarked")
    r.zrem(ready, cid)  # accepted, but its submitter died before the dispatcher's step
    r.zadd(keys.conv_index("inboxes", cid), {cid: 1})  # its inbox has waited long since
    assert fair.reap(r, [cid]) == [cid]
    assert r.zscore(ready, cid) is not None


def test_a_childs_end_whose_ender_died_before_telling_the_parent_wakes_it_once(
    redis_cluster: RedisClusterGroup,
) -> None:
    r = connection.client(redis_cluster.url)
    parent = new_run_id("boss", "p")
    child = new_run_id("w1", "delegate:boss")
    assert keys.run_bucket(parent) != keys.run_bucket(child), "two slots, or nothing to show"
    pcid = keys.cid("boss", "p")
    r.hset(keys.run(parent), mapping={"agent": "boss", "sender": "p", "status": "waiting",
                                      "step": 1, "calls": json.dumps([{"id": "c1"}])})  # fmt: skip
    since = {"kind": "delegate", "deadline": 0, "data": {}, "since": 1}
    r.hset(keys.run_part(parent, "waits"), "c1", json.dumps(since))
    r.hset(keys.run_call(parent, "children", "c1"), child, "")
    r.set(keys.conv(pcid, "lease"), "77")
    result = json.dumps({"agent": "w1", "result": "done", "error": None})
    # What finish.lua leaves on a cluster: the result with the child, the child in its outbox.
    r.hset(keys.run(child), mapping={"parent_run": parent, "parent_call": "c1",
                                     "parent_result": result})  # fmt: skip
    r.zadd(keys.run_index("parents", child), {child: 1})
    [wake] = runs.parents_due(r)
    assert (wake.agent, wake.sender, wake.run_id) == ("boss", "p", parent)
    assert wake.woken.token == "77" and wake.woken.call_id == "c1"
    assert r.hget(keys.run_call(parent, "children", "c1"), child) == result
    assert r.hget(keys.run(parent), "status") == "running"
    assert not r.zcard(keys.run_index("parents", child))
    r.zadd(keys.run_index("parents", child), {child: 1})  # told again: woken once
    assert runs.parents_due(r) == []


def test_a_submit_after_its_slots_master_died_goes_to_the_promoted_replica(
    redis_cluster: RedisClusterGroup,
) -> None:
    """``submit()``'s write and ``WAIT`` go down the slot master's own connection, which the
    cluster client does not re-route by itself: once the old master fails, the slot map is read
    again (a run under load once retried the dead address until ``WALRUS_SUBMIT_RETRY``)."""
    r = connection.client(redis_cluster.url)
    sender = "after-failover"
    lease = keys.conv(keys.cid("echo", sender), "lease")
    first = new_run_id("echo", sender)
    assert runs.enqueue(r, first, "echo", sender, "one", "enqueue", {}).state == "ok"
    master = r.get_node_from_key(lease).port  # type: ignore[attr-defined]
    redis_cluster.kill9_master(master)
    redis_cluster.wait_failover()
    second = new_run_id("echo", sender)
    started = time.monotonic()
    done = durable.retrying(
        lambda: runs.enqueue(r, second, "echo", sender, "two", "enqueue", {}), "a submit"
    )
    assert done.state == "ok" and time.monotonic() - started < 5
    assert r.lrange(keys.conv(keys.cid("echo", sender), "inbox"), 0, -1) == [first, second]
    assert r.get_node_from_key(lease).port != master  # type: ignore[attr-defined]
