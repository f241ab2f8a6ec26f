"""Restart everything, Redis included (AOF on): conversations, crons, subscriptions and agent
memory are all there afterwards, and the next message of an old conversation continues it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from tests.cluster import Cluster
from walrus_tasks import memory
from walrus_tasks.redis_server import RedisServer, start_redis


def start(cluster: Cluster) -> Cluster:
    """A gateway, a worker and beat, as a deployment runs them."""
    cluster.log_dir.mkdir()
    cluster.start_gateway()
    cluster.start_worker("worker1")
    cluster.start_beat()
    for attempt in range(3):
        try:
            cluster.wait_ready()
            break
        except redis.ConnectionError:  # this process's pooled broker connection, to the old Redis
            if attempt == 2:
                raise
    return cluster


def shutdown(server: RedisServer) -> None:
    """A clean SHUTDOWN: Redis fsyncs the AOF before it exits."""
    redis.Redis.from_url(server.url).shutdown()
    assert server.process.wait(timeout=10) == 0


def snapshot(cluster: Cluster, sender: str) -> dict[str, Any]:
    """What must survive: histories, the conversation index, crons, subscriptions, memory."""
    with cluster.http() as c:
        crons = c.get("/v1/crons").json()["crons"]
        subs = c.get("/v1/subscriptions").json()["subscriptions"]
        conversations = c.get("/v1/conversations").json()["conversations"]
    with cluster.redis() as r:
        notes = [e.model_dump() for e in memory.entries(r, "echo")]
    return {
        "memory": notes,
        "echo": cluster.history("echo", sender),
        "tooly": cluster.history("tooly", sender),
        "crons": sorted(crons, key=lambda e: e["id"]),
        "subscriptions": sorted(subs, key=lambda s: s["id"]),
        "conversations": sorted(
            (row["agent"], row["sender"], row["last_active"])
            for row in conversations
            if row["sender"] == sender
        ),
    }


def test_conversations_crons_subscriptions_and_memory_survive_a_restart_of_everything(
    home: Path, tmp_path: Path, sender: str
) -> None:
    server = start_redis(tmp_path / "redis")  # appendonly yes, appendfsync everysec
    clusters = [Cluster(redis_url=server.url, home=home, log_dir=tmp_path / f"logs-{n}")
                for n in (1, 2)]  # fmt: skip
    try:
        cluster = start(clusters[0])
        first = cluster.send("echo", "first", sender)
        assert cluster.wait_run(first)["status"] == "succeeded"
        assert cluster.wait_run(cluster.send("tooly", "time?", sender))["status"] == "succeeded"
        with cluster.http() as c:
            cron = c.post(
                "/v1/crons",
                json={"schedule": "0 0 1 1 *", "agent": "echo", "message": "happy new year"},
            )
            assert cron.status_code == 201, cron.text
            sub = c.post(
                "/v1/subscriptions", json={"source": f"test.{sender}", "target_agent": "echo"}
            )
            assert sub.status_code == 201, sub.text
        with cluster.redis() as r:
            memory.remember(r, "echo", "birthday", "The user was born on 1 May.", ["born"])
        before = snapshot(cluster, sender)
        assert len(before["echo"]) == 2 and len(before["tooly"]) == 6
        assert cron.json()["id"] in {e["id"] for e in before["crons"]}
        assert sub.json()["id"] in {s["id"] for s in before["subscriptions"]}
        assert [e["name"] for e in before["memory"]] == ["birthday"]

        cluster.stop()
        shutdown(server)
        assert list((tmp_path / "redis").rglob("*.aof"))  # the state is in the AOF alone
        server = start_redis(tmp_path / "redis", port=server.port)
        cluster = start(clusters[1])

        assert snapshot(cluster, sender) == before
        with cluster.redis() as r:
            [hit] = memory.recall(r, "echo", "when was the user born?", 5)
        assert hit.name == "birthday"
        with cluster.http() as c:
            assert c.get(f"/v1/runs/{first}").json()["status"] == "succeeded"
            # The subscription is live: an event published now reaches the agent.
            fired = c.post("/v1/events", json={"source": f"test.{sender}", "payload": "ping"})
        assert fired.status_code == 202, fired.text
        [event_run] = fired.json()["fired"]
        assert cluster.wait_run(event_run)["status"] == "succeeded"

        # A new message to an old conversation continues it.
        assert cluster.wait_run(cluster.send("echo", "second", sender))["status"] == "succeeded"
        after = cluster.history("echo", sender)
        assert after[:2] == before["echo"]
        assert [(m["role"], m["content"]) for m in after[2:]] == [
            ("user", "second"),
            ("assistant", "Hello from the mock model."),
        ]
    finally:
        for c in clusters:
            c.stop()
        server.stop()
