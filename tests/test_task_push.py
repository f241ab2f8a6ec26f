"""A task message walrus pushes itself is the one Celery's producer pushes (``task_push``).

Each send is made both ways on a Redis of the test's own, and the two messages popped from the
queue, and the two ``task-sent`` events caught on their channel, are compared field by field:
only the message's id, its delivery tag, the event's clock and its time may differ.
"""

from __future__ import annotations

import base64
import json
import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from celery._state import _task_stack

from tests.conftest import redis_db_url
from walrus_tasks import celery_app, submit, task_push, topology
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.settings import get_settings

SENDS = [
    (celery_app.DRAIN, ("echo", "alice"), {"run_id": "run-1"}),
    # What JSON escapes (a quote, beyond ASCII) in the arguments and the reprs a message carries
    # (a name holds no backslash nor control character, where `repr` and Celery's `saferepr`
    # would differ).
    (celery_app.DRAIN, ('e"cho', "\u00e9\u2603", "acme/thread:1@x"), {"run_id": 'r"1\u00e9'}),
    (celery_app.STEP, ("echo", "alice", "run-1", "7", 0), None),
    (celery_app.TOOL_CALL, ("echo", "alice", "run-1", "7", 2, 1), None),
    (celery_app.WEBHOOK, ("run-1", "0"), None),
]


@pytest.fixture
def app(redis_server: RedisServer) -> Iterator[tuple[Celery, redis.Redis]]:
    url = redis_db_url(redis_server)
    app = Celery("push", set_as_current=False)
    app.conf.update({**celery_app.celery_config(), **celery_app.broker_config(url, 3600)})
    r = redis.Redis.from_url(url, decode_responses=True)
    yield app, r
    r.flushdb()
    r.close()


def unpacked(raw: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def _varying(message: dict[str, Any]) -> dict[str, Any]:
    """The fields of one message that differ from send to send, set aside."""
    message["properties"].pop("delivery_tag")
    body, headers = message["body"], message["headers"]
    if "uuid" in body:  # an event
        varying = {k: body.pop(k) for k in ("uuid", "clock", "timestamp")}
        if body["root_id"] == varying["uuid"]:
            body["root_id"] = "<id>"
        return varying
    task_id = headers.pop("id")
    assert message["properties"].pop("correlation_id") == task_id
    if headers["root_id"] == task_id:
        headers["root_id"] = "<id>"
    return {"id": task_id}


def both_ways(
    app: Celery, r: redis.Redis, name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(queue, message, event) as ``task_push`` pushes it, then as ``send_task`` does."""
    events = r.pubsub()
    # PUB/SUB channels span every database of the server: only this database's events (a
    # worker of another test, on another database, publishes its heartbeats meanwhile).
    events.psubscribe(f"/{r.connection_pool.connection_kwargs['db']}.*")
    assert events.get_message(timeout=5)["type"] == "psubscribe"  # type: ignore[index]
    queue = celery_app.QUEUE_OF[name]
    task_push.push(r, task_push.build(app, r, name, queue, args, kwargs))
    app.send_task(name, args=args, kwargs=kwargs, ignore_result=True)
    out = []
    for _ in range(2):
        lists = [q for q in celery_app.ALL_QUEUES if r.llen(q)]
        assert lists == [queue]
        event = events.get_message(timeout=5)
        assert event is not None and event["type"] == "pmessage"
        message = unpacked(r.rpop(queue))  # type: ignore[arg-type]
        out.append((event["channel"], message, unpacked(event["data"])))
    events.close()
    return out


@pytest.mark.parametrize(("name", "args", "kwargs"), SENDS)
def test_a_pushed_message_and_its_event_are_what_send_task_publishes(
    app: tuple[Celery, redis.Redis], name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> None:
    celery, r = app
    (ours_channel, ours, ours_event), (celerys_channel, celerys, celerys_event) = both_ways(
        celery, r, name, args, kwargs
    )
    db = r.connection_pool.connection_kwargs["db"]
    assert ours_channel == celerys_channel == f"/{db}.celeryev/task.sent"
    ours_ids, celerys_ids = _varying(ours), _varying(celerys)
    assert ours == celerys
    assert ours_ids["id"] != celerys_ids["id"]
    ours_varying, celerys_varying = _varying(ours_event), _varying(celerys_event)
    assert ours_event == celerys_event
    assert ours_varying["uuid"] == ours_ids["id"]  # each event names its own message
    assert celerys_varying["clock"] > ours_varying["clock"]  # one Lamport clock, forwarded


def test_sent_from_inside_a_task_a_message_names_it_as_parent_and_its_root_as_root(
    app: tuple[Celery, redis.Redis],
) -> None:
    celery, r = app

    def body() -> None: ...

    parent = celery.task(name="walrus.test.parent")(body)
    parent.push_request(id="the-parent", root_id="the-root", called_directly=False)
    _task_stack.push(parent)
    try:
        (_, ours, _), (_, celerys, _) = both_ways(celery, r, *SENDS[1])
    finally:
        _task_stack.pop()
        parent.pop_request()
    assert ours["headers"]["parent_id"] == celerys["headers"]["parent_id"] == "the-parent"
    assert ours["headers"]["root_id"] == celerys["headers"]["root_id"] == "the-root"


def _built_here(app: Celery, r: redis.Redis) -> tuple[int, dict[str, Any], dict[str, Any]]:
    pushed = task_push.build(app, r, *SENDS[0][:1], celery_app.RUNS_QUEUE, *SENDS[0][1:])
    return os.getpid(), unpacked(pushed.message), unpacked(pushed.event)


def test_a_forked_process_builds_messages_that_name_it_not_its_parent(
    app: tuple[Celery, redis.Redis],
) -> None:
    """The message and event templates are per process: a prefork pool process (forked after
    the parent built some) names its own pid as origin and in its events."""
    celery, r = app
    parent_pid, parent_message, parent_event = _built_here(celery, r)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: build, hand it over, and go without running anything else
        try:
            os.write(write, json.dumps(_built_here(celery, r)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child_pid, message, event = json.loads(pipe.read())
    assert os.waitpid(child, 0)[1] == 0
    assert child_pid != parent_pid
    assert message["headers"]["origin"] == f"gen{child_pid}@{socket.gethostname()}"
    assert parent_message["headers"]["origin"] == f"gen{parent_pid}@{socket.gethostname()}"
    assert (event["body"]["pid"], parent_event["body"]["pid"]) == (child_pid, parent_pid)
    assert event["body"]["hostname"] == message["headers"]["origin"]
    assert event["headers"]["hostname"] == message["headers"]["origin"]


def test_a_new_conversations_drain_leaves_with_its_message_in_one_step(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """submit.lua pushes the drain as it queues the message; a busy conversation's pushes none."""
    if not task_push.applies(r):
        pytest.skip("the state is no broker here (a Redis Cluster)")
    monkeypatch.setattr(submit, "send_drain", lambda *_: pytest.fail("sent through Celery"))
    first = submit.submit(r, "echo", "push-a", "hello")
    assert r.llen(celery_app.RUNS_QUEUE) == 1
    pushed = unpacked(r.lindex(celery_app.RUNS_QUEUE, 0))  # type: ignore[arg-type]
    assert pushed["headers"]["task"] == celery_app.DRAIN
    assert pushed["body"][:2] == [["echo", "push-a"], {"run_id": first.run_id}]
    submit.submit(r, "echo", "push-a", "again")  # the first run starts it as it ends
    assert r.llen(celery_app.RUNS_QUEUE) == 1


def test_a_broker_apart_from_the_state_is_sent_to_through_celery(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert task_push.applies(r) != topology.is_cluster(r)
    monkeypatch.setenv("WALRUS_BROKER_URL", "redis://127.0.0.1:1/0")
    get_settings.cache_clear()
    try:
        assert not task_push.applies(r)
        assert celery_app.drain_push(r, "echo", "alice", "run-1") is None
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
