"""The task contract: what ``celery_app.send_*`` sends is what the worker's task bodies take."""

from __future__ import annotations

import base64
import inspect
import json
from typing import Any

import pytest
import redis
from celery import Celery

from tests.conftest import redis_db_url
from walrus_tasks import celery_app, task_push
from walrus_tasks.lease import Fence
from walrus_tasks.redis_server import RedisServer
from worker import tasks

FENCE = Fence("echo", "alice", "run-1", "7")


def sent(
    monkeypatch: pytest.MonkeyPatch, send: Any, *args: Any
) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """The task ``send(*args)`` sends: through Celery's producer, or pushed (``task_push``)."""
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(
        celery_app.app,
        "send_task",
        lambda name, args, kwargs=None, **_: calls.append((name, tuple(args), kwargs or {})),
    )

    def pushed(r: redis.Redis, push: task_push.Push) -> None:
        message = json.loads(push.message)
        task_args, task_kwargs, _ = json.loads(base64.b64decode(message["body"]))
        calls.append((message["headers"]["task"], tuple(task_args), task_kwargs))

    monkeypatch.setattr(task_push, "push", pushed)
    send(*args)
    assert len(calls) == 1
    return calls[0]


@pytest.mark.parametrize(
    ("send", "args", "expected"),
    [
        (celery_app.send_drain, ("echo", "alice"), {"agent": "echo", "sender": "alice"}),
        (
            celery_app.send_drain,
            ("echo", "alice", "run-1"),
            {"agent": "echo", "sender": "alice", "run_id": "run-1"},
        ),
        (
            celery_app.send_step,
            (FENCE, 3),
            {"agent": "echo", "sender": "alice", "run_id": "run-1", "token": "7", "step": 3},
        ),
        (
            celery_app.send_tool_call,
            (FENCE, 3, 1),
            {
                "agent": "echo",
                "sender": "alice",
                "run_id": "run-1",
                "token": "7",
                "step": 3,
                "index": 1,
            },
        ),
        (celery_app.send_webhook, ("run-1",), {"run_id": "run-1", "chain": "0"}),
        (celery_app.send_webhook, ("run-1", "3"), {"run_id": "run-1", "chain": "3"}),
    ],
)
def test_every_sent_task_binds_to_its_body_by_name(
    monkeypatch: pytest.MonkeyPatch, send: Any, args: tuple[Any, ...], expected: dict[str, Any]
) -> None:
    name, sent_args, sent_kwargs = sent(monkeypatch, send, *args)
    body = {t.name: t for t in (tasks.drain, tasks.step, tasks.tool_call, tasks.post_webhook)}[name]
    bound = inspect.signature(body.run).bind(*sent_args, **sent_kwargs)
    assert dict(bound.arguments) == expected


ROUTED = {
    celery_app.DRAIN: celery_app.RUNS_QUEUE,
    celery_app.STEP: celery_app.RUNS_QUEUE,
    celery_app.TOOL_CALL: celery_app.TOOLS_QUEUE,
    celery_app.REAP: celery_app.CONTROL_QUEUE,
    celery_app.WEBHOOK: celery_app.CONTROL_QUEUE,
    celery_app.PING: celery_app.CONTROL_QUEUE,
}


def test_each_queue_is_bound_by_its_own_name_and_tasks_land_where_they_are_routed(
    redis_server: RedisServer,
) -> None:
    """The worker banner lists each queue with its exchange and key: both are its own name.

    A queue declared without them was bound to walrus.runs's, so the banner said
    ``walrus.tools exchange=walrus.runs key=walrus.runs``, and a message published that way
    reached every queue.
    """
    url = redis_db_url(redis_server)
    app = Celery("contract", set_as_current=False)
    app.conf.update({**celery_app.celery_config(), **celery_app.broker_config(url, 3600)})
    banner = app.amqp.queues.format().splitlines()
    for queue in celery_app.ALL_QUEUES:
        assert any(f" {queue} " in line and f"exchange={queue}(direct) key={queue}" in line
                   for line in banner), banner  # fmt: skip
    r = redis.Redis.from_url(url)
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in app.amqp.queues.values():  # what a worker consuming every queue declares
            queue(channel).declare()
        for name, queue_name in ROUTED.items():
            app.send_task(name, args=(), ignore_result=True, connection=conn)
            assert {q: r.llen(q) for q in celery_app.ALL_QUEUES if r.llen(q)} == {queue_name: 1}
            r.delete(queue_name)
        for queue in app.amqp.queues.values():  # by the exchange and key the banner shows
            with app.producer_or_acquire() as producer:
                producer.publish({}, exchange=queue.exchange, routing_key=queue.routing_key)
            assert {q: r.llen(q) for q in celery_app.ALL_QUEUES if r.llen(q)} == {queue.name: 1}
            r.delete(queue.name)
    r.close()
