"""``WALRUS_BROKER_URL`` on RabbitMQ (quorum queues), state in Redis: order and recovery hold.

A private ``rabbitmq-server`` node (its own node name, ports, epmd and data directory) is
started for the module and stopped by PID.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kombu import Connection

from tests.cluster import Cluster, running
from tests.conftest import redis_db_url
from tests.ha import RabbitNode, rabbitmq_server_binary
from tests.test_broker_depth import send_pings, status
from tests.test_ordering import assert_ordered
from tests.test_recovery import kill_worker_mid_stream
from walrus_tasks.redis_server import RedisServer


@pytest.fixture(scope="module")
def rabbit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitNode]:
    binary = rabbitmq_server_binary()
    if binary is None:
        pytest.skip("rabbitmq-server is not installed (.ci/run installs it)")
    node = RabbitNode(tmp_path_factory.mktemp("rabbitmq"))
    try:
        yield node.start(binary)
    finally:
        node.stop()


@pytest.fixture
def rabbit_cluster(
    rabbit: RabbitNode, redis_server: RedisServer, home: Path, tmp_path: Path
) -> Iterator[Cluster]:
    """Gateway, two workers and beat: broker on RabbitMQ, state on a fresh Redis database."""
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        broker_url=rabbit.url,
        home=home,
        log_dir=tmp_path,
        env_extra={"WALRUS_LEASE_TTL": "5", "WALRUS_REAPER_INTERVAL": "1"},
    )
    with running(c, workers=("worker-a", "worker-b"), concurrency=1, beat=True):
        yield c


def test_the_walrus_queues_are_quorum_queues(rabbit_cluster: Cluster) -> None:
    with rabbit_cluster.control_app() as app, app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in ("walrus.runs", "walrus.tools", "walrus.control"):
            # A passive declare of a quorum queue as classic fails; as quorum it answers.
            declared = app.amqp.queues[queue].bind(channel)
            declared.queue_declare(passive=True)
            assert declared.queue_arguments == {"x-queue-type": "quorum"}


def test_messages_to_one_conversation_run_in_acceptance_order(
    rabbit_cluster: Cluster, sender: str
) -> None:
    c = rabbit_cluster
    with ThreadPoolExecutor(max_workers=8) as pool:
        run_ids = list(pool.map(lambda i: c.send("echo", f"m{i}", sender), range(20)))
    infos = [c.wait_run(r) for r in run_ids]
    assert [i["status"] for i in infos] == ["succeeded"] * 20
    assert sorted(i["seq"] for i in infos) == list(range(1, 21))
    assert_ordered(c, "echo", sender, infos)


def test_kill_9_of_the_worker_mid_run_resumes_the_run(rabbit_cluster: Cluster, sender: str) -> None:
    c = rabbit_cluster
    run_id = c.send("slow", "count to twenty", sender)
    killed_at = kill_worker_mid_stream(c, run_id, sender)
    info = c.wait_run(run_id, timeout=60)
    print(f"\nresumed and finished {time.monotonic() - killed_at:.1f} s after the kill")
    assert info["status"] == "succeeded", info
    events = c.events(run_id)
    assert [e["type"] for _, e in events].count("end") == 1
    history = c.history("slow", sender)
    assert [m["role"] for m in history] == ["user", "assistant"], "no step persisted twice"
    assert history[1]["content"].endswith("w20")
    nxt = c.send("slow", "again", sender)
    assert c.wait_run(nxt, timeout=30)["status"] == "succeeded"


def test_status_counts_the_queues_on_rabbitmq(
    rabbit: RabbitNode, redis_server: RedisServer
) -> None:
    env = {"WALRUS_REDIS_URL": redis_db_url(redis_server), "WALRUS_BROKER_URL": rabbit.url}
    send_pings(env, 3)  # declares the walrus queues (quorum) and leaves 3 in walrus.control
    try:
        data = status(env)
        assert data["broker_up"] is True
        assert data["queues"] == {"walrus.runs": 0, "walrus.tools": 0, "walrus.control": 3}
        assert data["unacked"] is None, "AMQP does not count delivered messages in a queue"
    finally:
        with Connection(rabbit.url) as conn:
            conn.default_channel.queue_purge("walrus.control")
