"""Invariants 2 and 3 with real processes: kill -9 of the worker mid-run."""

from __future__ import annotations

import time

from tests.cluster import Cluster, wait_for
from walrus_tasks import keys


def worker_running(cluster: Cluster, sender: str) -> str:
    """The hostname of the worker whose pool executes a task of ``sender``'s conversation."""
    with cluster.control_app() as app:
        active = app.control.inspect(timeout=1).active() or {}
    for host, tasks in active.items():
        if any(sender in str(t.get("args")) for t in tasks):
            return str(host)
    return ""


def kill_worker_mid_stream(c: Cluster, run_id: str, sender: str) -> float:
    """Once the run streams its first chunk, ``kill -9`` the worker running it; the time."""
    with c.http() as h, h.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        for line in resp.iter_lines():
            if line == "event: chunk":
                break
    host = wait_for(lambda: worker_running(c, sender), 10, 0.1, "the worker running the run")
    killed_at = time.monotonic()
    c.kill9(host.split("@")[0])
    return killed_at


def test_kill_9_of_the_worker_mid_run_resumes_on_another_worker(
    private_cluster: Cluster, sender: str
) -> None:
    c = private_cluster  # default lease TTL (15 s) and reaper interval: the documented bound
    c.start_gateway()
    c.start_worker("worker-a", concurrency=1)
    c.start_worker("worker-b", concurrency=1)
    c.start_beat()
    c.wait_ready()
    run_id = c.send("slow", "count to twenty", sender)
    killed_at = kill_worker_mid_stream(c, run_id, sender)
    info = c.wait_run(run_id, timeout=60)
    recovered_in = time.monotonic() - killed_at
    assert info["status"] == "succeeded", info
    events = c.events(run_id)
    assert [e["type"] for _, e in events].count("end") == 1
    assert events[-1][1]["status"] == "succeeded"
    history = c.history("slow", sender)
    assert [m["role"] for m in history] == ["user", "assistant"], "no step persisted twice"
    assert history[1]["content"].endswith("w20")
    assert recovered_in < 60
    nxt = c.send("slow", "again", sender)
    assert c.wait_run(nxt, timeout=30)["status"] == "succeeded"
    assert c.redis().hget(keys.run(run_id), "recoveries") == "1"


def pool_process_running(cluster: Cluster, run_id: str) -> int:
    """The PID of the pool process executing a step task of ``run_id``."""
    with cluster.control_app() as app:
        active = app.control.inspect(timeout=1).active() or {}
    for tasks in active.values():
        for t in tasks:
            if t.get("name") == "walrus.run.step" and run_id in str(t.get("args")):
                return int(t["worker_pid"])
    return 0


def test_a_redelivered_step_resumes_the_run_without_the_reaper(
    private_cluster: Cluster, sender: str
) -> None:
    """kill -9 of the pool process only, and no beat: Celery redelivers the step message."""
    import os
    import signal

    c = private_cluster
    c.start_gateway()
    c.start_worker("worker-a", concurrency=2)
    c.wait_ready()
    run_id = c.send("slowtool", "clock, then count", sender)
    with c.http() as h, h.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        for line in resp.iter_lines():
            if line == "event: chunk":  # step 1 streams: a walrus.run.step task
                break
    pid = wait_for(lambda: pool_process_running(c, run_id), 10, 0.1, "the step's pool process")
    os.kill(pid, signal.SIGKILL)
    info = c.wait_run(run_id, timeout=60)
    assert info["status"] == "succeeded", info
    assert c.redis().hget(keys.run(run_id), "recoveries") is None, "no reaper involved"
    history = c.history("slowtool", sender)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "assistant"]
