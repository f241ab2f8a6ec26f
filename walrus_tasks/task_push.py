"""Task messages that walrus pushes to the broker itself: built by Celery, carried by us.

``app.send_task`` costs about 0.9 ms of CPU a message on a bench machine (its router, kombu's
producer and envelope, and the ``task-sent`` event's dispatcher, each a round trip of its
own). When the broker is the state Redis (``WALRUS_BROKER_URL`` unset, or naming the same
Redis), the send functions of ``walrus_tasks.celery_app`` build the message with Celery's own
``app.amqp.as_task_v2`` (once a process and task, as a template: :func:`build`), wrap it as
kombu's Redis transport does (a JSON envelope, the body in
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
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.utils.time import utcoffset

from walrus_tasks import ids, topology, tracing
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

    Filled into this process's :class:`_Templates` of the task: what differs from one message
    to the next (ids, arguments, the event's clock and time) set into the JSON that Celery's
    ``app.amqp.as_task_v2`` and kombu's envelope gave once (a build took 95 us of CPU on a slow
    machine, filling the templates 46-56; docs/benchmarks.md, issue 25, twenty-second round).
    """
    task_id = ids.uuid_str()
    parent = app.current_worker_task
    root_id = parent_id = None
    if parent is not None:
        root_id = parent.request.root_id or parent.request.id
        parent_id = parent.request.id
    send_event = bool(app.conf.task_send_sent_event)
    kwargs = kwargs or {}
    templates = _templates(app, name, queue, send_event)
    # The reprs Flower shows: `repr` is what Celery's `saferepr` gives for these arguments (short
    # names and ids, numbers, well under its size limit).
    named = {
        "id": _str(task_id),
        "root_id": _str(root_id or task_id),  # as_task_v2: an empty root is the task itself
        "parent_id": "null" if parent_id is None else _str(parent_id),
        "argsrepr": _str(repr(args)),
        "kwargsrepr": _str(repr(kwargs)),
    }
    body = json.dumps((args, kwargs, _EMBED))
    message = templates.message.fill(
        named,
        body=_b64(body),
        reply_to=_str(app.thread_oid),
        delivery_tag=_str(ids.uuid_str()),
    )
    if templates.event is None:
        return Push(queue, message, "", "")
    event = templates.event.fill(
        named,
        # As json.dumps writes them: a float by its repr, an int in decimal.
        utcoffset=repr(float(utcoffset())),
        clock=str(int(app.clock.forward())),
        timestamp=repr(time.time()),
    )
    event_message = templates.event_envelope.fill(
        {}, body=_b64(event), delivery_tag=_str(ids.uuid_str())
    )
    return Push(queue, message, _event_channel(r), event_message)


_str = json.encoder.encode_basestring_ascii
"""A string as ``json.dumps`` writes it (quoted, escaped, ASCII): a template's value."""
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
"""A task message body's third part, as ``as_task_v2`` writes it for a task with none."""
_EVENT_ROUTE = {"exchange": EVENT_EXCHANGE, "routing_key": "task.sent"}


def _b64(text: str) -> str:
    return '"' + base64.b64encode(text.encode()).decode() + '"'


class _Template:
    """A JSON text with holes where values go.

    Each hole is a string, a name between two NULs (:func:`_hole`), as ``json.dumps`` escapes
    it; :meth:`fill` puts a value, already JSON, in each.
    """

    __slots__ = ("literals", "names")

    def __init__(self, value: Any) -> None:
        parts = re.split(r'"\\u0000(\w+)\\u0000"', json.dumps(value))
        self.literals, self.names = parts[::2], parts[1::2]

    def fill(self, values: Mapping[str, str], **more: str) -> str:
        out = [self.literals[0]]
        for name, literal in zip(self.names, self.literals[1:], strict=True):
            out.append(more[name] if name in more else values[name])
            out.append(literal)
        return "".join(out)


def _hole(name: str) -> str:
    return f"\x00{name}\x00"


@dataclass(frozen=True)
class _Templates:
    """A task's message (and its ``task-sent`` event, if sent) in this process, with holes."""

    message: _Template
    event: _Template | None
    event_envelope: _Template


_cache: dict[tuple[int, str, str, bool], _Templates] = {}
"""The templates by (process, task, queue, whether events are sent): nothing else of an app
goes into them."""


def _templates(app: Celery, name: str, queue: str, send_event: bool) -> _Templates:
    # The process is in the key: a fork's origin and event name its own pid.
    key = (os.getpid(), name, queue, send_event)
    found = _cache.get(key)
    if found is None:
        found = _cache[key] = _made(app, name, queue, send_event)
    return found


def _made(app: Celery, name: str, queue: str, send_event: bool) -> _Templates:
    """The templates, from what Celery and kombu build for a message whose values are holes."""
    headers, properties, _, sent = app.amqp.as_task_v2(
        _hole("id"), name, (), {}, reply_to=_hole("reply_to"), create_sent_event=send_event,
        root_id=_hole("root_id"), parent_id=_hole("parent_id"), ignore_result=True,
        argsrepr=_hole("argsrepr"), kwargsrepr=_hole("kwargsrepr"),
    )  # fmt: skip
    message = _envelope(
        _hole("body"), headers,
        {**properties, "delivery_mode": 2, "delivery_info": {"exchange": "", "routing_key": queue}},
    )  # fmt: skip
    event = None
    if send_event:
        event = _Template({
            "hostname": anon_nodename(), "utcoffset": _hole("utcoffset"), "pid": os.getpid(),
            "clock": _hole("clock"), **sent,
            "queue": queue, "exchange": "", "routing_key": queue,
            "timestamp": _hole("timestamp"), "type": "task-sent",
        })  # fmt: skip
    event_envelope = _envelope(
        _hole("body"), {"hostname": anon_nodename()},
        {"delivery_mode": 1, "delivery_info": _EVENT_ROUTE},
    )  # fmt: skip
    return _Templates(_Template(message), event, _Template(event_envelope))


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


def _envelope(body: str, headers: Mapping[str, Any], properties: Mapping[str, Any]) -> Any:
    # kombu's Redis transport: the body serialised, then base64 (body_encoding), and a fresh
    # delivery tag; the envelope itself JSON.
    return {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties, "priority": 0, "body_encoding": "base64",
            "delivery_tag": _hole("delivery_tag"),
        },
    }  # fmt: skip


def _event_channel(r: redis.Redis) -> str:
    # kombu publishes a fanout exchange's message on `/<db>.<exchange>/<routing key>`.
    db = r.connection_pool.connection_kwargs.get("db", 0)
    return f"/{db}.{EVENT_EXCHANGE}/task.sent"
