"""What a worker killed with kill -9 leaves in kombu's ``unacked`` hash, and why its
redelivery after the visibility timeout changes nothing (docs/reliability.md, "unacked")."""

from __future__ import annotations

import json
from typing import Any

from kombu import Connection

from tests.cluster import Cluster, wait_for
from tests.test_redis_restart import FAST, first_chunk
from walrus_tasks import indexes, keys
from walrus_tasks.celery_app import DRAIN, STEP


def unacked_tasks(c: Cluster) -> dict[str, str]:
    """Task id -> task name of every message in kombu's ``unacked`` hash."""
    with c.redis() as r:
        entries: dict[str, str] = r.hgetall("unacked")  # type: ignore[assignment]
    tasks = {}
    for raw in entries.values():
        message, _exchange, _routing_key = json.loads(raw)
        tasks[message["headers"]["id"]] = message["headers"]["task"]
    return tasks


def state(c: Cluster, runs: dict[str, str], sender: str) -> dict[str, Any]:
    """Everything a redelivered task could change: histories, run records and streams, the
    set of runs, the live feed, leases and inboxes."""
    with c.redis() as r:
        return {
            "history": {agent: c.history(agent, sender) for agent in runs},
            "records": {run: r.hgetall(keys.run(run)) for run in runs.values()},
            "events": {run: r.xrange(keys.run_part(run, "events")) for run in runs.values()},
            "runs": sorted(k for k in r.scan_iter(keys.run("*")) if k.count(":") == 2),
            "feed": sum(r.xlen(keys.feed(b)) for b in range(keys.BUCKETS)),
            "active": set(indexes.members(r, "runs:active")),
            "leases": indexes.members(r, "leases"),
            "inboxes": indexes.members(r, "inboxes"),
        }


def succeeded(c: Cluster, task_ids: set[str]) -> bool:
    """True once every task id has a "succeeded" line in some worker's log."""
    logs = "".join(p.read_text() for p in c.log_dir.glob("worker*.log"))
    return all(f"[{task_id}] succeeded" in logs for task_id in task_ids)


def test_messages_left_unacked_by_a_killed_worker_are_redelivered_as_no_ops(
    private_cluster: Cluster, sender: str
) -> None:
    c = private_cluster
    c.env_extra.update(FAST)
    c.start_gateway()
    c.start_beat()
    c.start_worker("worker1", concurrency=2)
    c.wait_ready()
    runs = {
        "slow": c.send("slow", "count to twenty", sender),  # streams in the drain task's step 0
        "slowtool": c.send("slowtool", "clock, then count", sender),  # streams in step 1
    }
    for run_id in runs.values():
        first_chunk(c, run_id)
    left = unacked_tasks(c)
    assert sorted(left.values()) == sorted([DRAIN, STEP])
    c.kill9("worker1")
    c.env_extra["WALRUS_LOG_LEVEL"] = "DEBUG"  # Celery's "Task name[id] succeeded" lines
    c.start_worker("worker2", concurrency=2)

    # The reaper resumes both runs on worker2; the killed worker's messages stay unacked.
    for run_id in runs.values():
        assert c.wait_run(run_id, timeout=60)["status"] == "succeeded"
        assert c.redis().hget(keys.run(run_id), "recoveries") == "1"
    assert left.items() <= unacked_tasks(c).items()
    before = state(c, runs, sender)
    assert [m["role"] for m in before["history"]["slow"]] == ["user", "assistant"]
    assert [m["role"] for m in before["history"]["slowtool"]] == [
        "user", "assistant", "tool", "assistant",
    ]  # fmt: skip

    # What every worker does for the unacked entries older than the visibility timeout (an
    # hour), here at once. The drain finds no lease to take and an empty inbox; the step's
    # lease token is the dead worker's, so it is fenced.
    with Connection(c.redis_url, transport_options={"visibility_timeout": 0}) as conn:
        conn.default_channel.qos.restore_visible(num=100)
    wait_for(lambda: succeeded(c, set(left)), 30, 0.1, "the redelivered tasks to run")
    wait_for(lambda: not set(left) & set(unacked_tasks(c)), 10, 0.1, "their acks")
    [step_id] = [task_id for task_id, name in left.items() if name == STEP]
    logs = "".join(p.read_text() for p in c.log_dir.glob("worker*.log")).splitlines()
    assert any(step_id in line and "not executed: fenced" in line for line in logs)
    assert state(c, runs, sender) == before
