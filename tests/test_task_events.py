"""A worker publishes its Celery task events a batch at a time (``worker.consumer``).

Real workers on a Redis database of the test's own; the test subscribes to the Celery event
channels as Flower does. Within ``WALRUS_TASK_EVENTS_BATCH_MS`` of its first buffered event the
worker publishes every task event it buffered in one message; with 0, Celery's own timing, a
task's events go out as they happen. None is lost: what is buffered goes out as the worker
stops.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.asynchronous import Hub

from tests.cluster import Cluster, running, wait_for
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeLLM
from tests.test_task_push import unpacked
from walrus_tasks.celery_app import DRAIN
from walrus_tasks.redis_server import RedisServer
from worker import consumer

QUICK = """
model = "mock"
[mock]
reply = "one two three"
chunk_delay_ms = 10
"""
"""About 30 ms a run."""

Message = tuple[float, list[dict[str, Any]]]
"""One event message as it arrived: when, and the task events it carried."""


def cluster(redis_server: RedisServer, fake: FakeLLM, tmp: Path, batch_ms: str) -> Cluster:
    home = agents_home(tmp / "home", fake.base_url, {"quick": QUICK})
    env = {"WALRUS_TASK_EVENTS_BATCH_MS": batch_ms}
    return Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp, env_extra=env)


def subscribed(c: Cluster) -> redis.client.PubSub:
    """The task event channels of the cluster's database, as Flower's receiver reads them."""
    db = c.redis().connection_pool.connection_kwargs["db"]
    pubsub = c.redis().pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe(f"/{db}.celeryev/task.*")
    return pubsub


def read(pubsub: redis.client.PubSub, into: list[Message], seconds: float) -> None:
    """Add the worker's task event messages that arrive within ``seconds`` to ``into``."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        raw = pubsub.get_message(timeout=left)
        if raw is None:
            continue
        body = unpacked(raw["data"])["body"]
        events = body if isinstance(body, list) else [body]
        events = [e for e in events if e["type"] != "task-sent"]  # the sender's (the test's)
        if events:
            into.append((time.time(), events))


def drain_task(messages: list[Message]) -> str:
    received = [e for _, es in messages for e in es if e["type"] == "task-received"]
    assert [e["name"] for e in received] == [DRAIN]
    return str(received[0]["uuid"])


def of_task(messages: list[Message], task: str) -> list[Message]:
    """The messages that carry events of ``task``, with only those events."""
    mine = [(at, [e for e in es if e["uuid"] == task]) for at, es in messages]
    return [(at, es) for at, es in mine if es]


def ran_one(c: Cluster, pubsub: redis.client.PubSub, into: list[Message]) -> None:
    """Run one message to its end while reading the events."""
    run_id = c.enqueue("quick", "t:events")
    c.send_drains("quick", "t:events", 1)
    deadline = time.monotonic() + 60
    while (status := c.run(run_id).get("status")) != "succeeded":
        assert time.monotonic() < deadline, f"the run is still {status} after 60 s"
        read(pubsub, into, 0.05)


@pytest.mark.parametrize("batch_ms", ["3000", "0"])
def test_a_task_s_events_go_out_in_one_message_within_the_batch_and_as_they_happen_without(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path, batch_ms: str
) -> None:
    c = cluster(redis_server, fake_llm, tmp_path, batch_ms)
    messages: list[Message] = []
    with running(c, concurrency=1):
        pubsub = subscribed(c)
        ran_one(c, pubsub, messages)
        read(pubsub, messages, 4.0)  # past the batch
        pubsub.close()
    task = drain_task(messages)
    mine = of_task(messages, task)
    types = [e["type"] for _, es in mine for e in es]
    assert types == ["task-received", "task-started", "task-succeeded"]
    received_at = mine[0][1][0]["timestamp"]
    if batch_ms == "0":  # received as it is read, succeeded after ~30 ms of run: two turns
        assert len(mine) >= 2
        assert mine[0][0] - received_at < 2.0
    else:  # held for the batch after the first, then all at once
        assert len(mine) == 1
        assert mine[0][0] - received_at >= 2.5


def test_what_is_buffered_goes_out_as_the_worker_stops(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    c = cluster(redis_server, fake_llm, tmp_path, "600000")  # ten minutes: only the stop sends
    messages: list[Message] = []
    with running(c, concurrency=1):
        pubsub = subscribed(c)
        ran_one(c, pubsub, messages)
        read(pubsub, messages, 0.5)
        assert messages == [], "held for the batch"
        c.stop(["worker1"])  # a warm shutdown (SIGTERM)
        wait_for(lambda: c.procs["worker1"].poll() is not None, what="the worker stopped")
        read(pubsub, messages, 1.0)
        pubsub.close()
    task = drain_task(messages)
    types = [e["type"] for _, es in of_task(messages, task) for e in es]
    assert types == ["task-received", "task-started", "task-succeeded"]


def test_a_batch_whose_timer_a_reconnect_cancelled_is_set_again() -> None:
    """Celery cancels a failed connection's timer entries; the next event sets a new one."""
    hub = Hub()
    c = consumer.Consumer.__new__(consumer.Consumer)  # the batching alone, on a real hub
    c.hub, c.event_dispatcher = hub, None
    try:
        c.on_send_event_buffered()
        first = c._batch
        c.on_send_event_buffered()
        assert c._batch is first
        assert [s.entry for s in hub.timer.queue] == [first], "one timer for the whole batch"
        hub.timer.cancel(first)  # as celery.worker.loops.asynloop does on a connection error
        c.on_send_event_buffered()
        assert c._batch is not first
        assert not c._batch.canceled
        c._flush_batch()
        assert c._batch is None
    finally:
        hub.close()
