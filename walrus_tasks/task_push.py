"""Task messages that walrus pushes to the broker itself: built by Celery, carried by us.

``app.send_task`` costs about 0.9 ms of CPU a message on a bench machine (its router, kombu's
producer and envelope, and the ``task-sent`` event's dispatcher, each a round trip of its
own). When the broker is the state Redis (``WALRUS_BROKER_URL`` unset, or naming the same
Redis), the send functions of ``walrus_tasks.celery_app`` build the message with Celery's own
``app.amqp.as_task_v2``, wrap it as kombu's Redis transport does (a JSON envelope, the body in
base64, pushed on the queue's list), and push it with its ``task-sent`` event in one round trip
(``push``), or inside the Lua script that finds it due (``submit.lua``: a new conversation's
drain leaves with the message that starts it). A worker, and Flower, cannot tell it from
``send_task``'s: ``tests/test_task_push.py`` compares the two field by field.

Anything else goes through ``send_task``: a RabbitMQ broker or a Redis apart from the state, a
countdown (Celery's ETA handling) or a message id the caller chose (``send_step``'s re-queued
steps), and tracing on (the Celery instrumentation's publish span hooks ``send_task``).
"""

from __future__ import annotations

import base64
import json
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset

from walrus_tasks import topology, tracing
from walrus_tasks.script_args import NO_TASK
from walrus_tasks.settings import get_settings

EVENT_EXCHANGE = "celeryev"
"""Celery's event exchange (``celery.events.event.EVENT_EXCHANGE_NAME``); a fanout on Redis."""


@dataclass(frozen=True)
class Push:
    """One task message as the broker's Redis holds it, and its ``task-sent`` event.

    ``queue``: the list the worker pops (a queue of priority 0 is its own name); ``message``:
    the envelope; ``channel``: the PUB/SUB channel of the event ("" when the app sends none);
    ``event``: its envelope.
    """

    queue: str
    message: str
    channel: str
    event: str


def applies(r: redis.Redis) -> bool:
    """Whether a message is pushed through ``r``, the state Redis: it is the broker too.

    Not on a Redis Cluster (the broker is apart then), not with tracing on.
    """
    settings = get_settings()
    if settings.broker_url and settings.broker_url != settings.redis_url:
        return False
    return not topology.is_cluster(r) and not tracing.enabled()


def build(
    app: Celery,
    r: redis.Redis,
    name: str,
    queue: str,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None = None,
) -> Push:
    """The message ``app.send_task(name, args, kwargs, ignore_result=True)`` would push.

    ``queue``: the task's routed queue (the default exchange, the queue's name as routing key,
    as Celery routes a queue bound by its own name). Sent from inside a task, the message names
    that task as its parent and its root as its root, as Celery's do.
    """
    task_id = str(uuid.uuid4())
    parent = app.current_worker_task
    root_id = parent_id = None
    if parent is not None:
        root_id = parent.request.root_id or parent.request.id
        parent_id = parent.request.id
    send_event = bool(app.conf.task_send_sent_event)
    # The reprs Flower shows: `repr` is what Celery's `saferepr` gives for these arguments (short
    # names and ids, numbers, well under its size limit), and took building from 0.13 to 0.09 ms.
    headers, properties, body, sent = app.amqp.as_task_v2(
        task_id, name, args, kwargs, reply_to=app.thread_oid, create_sent_event=send_event,
        root_id=root_id, parent_id=parent_id, ignore_result=True,
        argsrepr=repr(args), kwargsrepr=repr(kwargs or {}),
    )  # fmt: skip
    message = _envelope(
        json.dumps(body), headers,
        {**properties, "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue}},
    )  # fmt: skip
    if not send_event:
        return Push(queue, message, "", "")
    event = {
        "hostname": anon_nodename(), "utcoffset": utcoffset(), "pid": os.getpid(),
        "clock": app.clock.forward(), **sent,
        "queue": queue, "exchange": "", "routing_key": queue,
        "timestamp": time.time(), "type": "task-sent",
    }  # fmt: skip
    event_message = _envelope(
        json.dumps(event), {"hostname": event["hostname"]},
        {"delivery_mode": 1, "delivery_info": _EVENT_ROUTE},
    )  # fmt: skip
    return Push(queue, message, _event_channel(r), event_message)


_EVENT_ROUTE = {"exchange": EVENT_EXCHANGE, "routing_key": "task.sent"}


def push(r: redis.Redis, message: Push) -> None:
    """Push ``message`` and publish its event, in one round trip."""
    with r.pipeline(transaction=False) as pipe:
        pipe.lpush(message.queue, message.message)
        if message.channel:
            pipe.publish(message.channel, message.event)
        pipe.execute()


def script_args(message: Push | None) -> Mapping[str, str]:
    """``message`` as the arguments of a script that pushes it when due (``TASK_PUSH``)."""
    if message is None:
        return NO_TASK
    return {
        "task_queue": message.queue, "task_message": message.message,
        "task_channel": message.channel, "task_event": message.event,
    }  # fmt: skip


def _envelope(body: str, headers: Mapping[str, Any], properties: Mapping[str, Any]) -> str:
    # kombu's Redis transport: the body serialised, then base64 (body_encoding), and a fresh
    # delivery tag; the envelope itself JSON.
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties, "priority": 0, "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }  # fmt: skip
    return json.dumps(envelope)


def _event_channel(r: redis.Redis) -> str:
    # kombu publishes a fanout exchange's message on `/<db>.<exchange>/<routing key>`.
    db = r.connection_pool.connection_kwargs.get("db", 0)
    return f"/{db}.{EVENT_EXCHANGE}/task.sent"
