"""The Celery app, its queues, and the task contract: each task's name and its one sender.

Processes send tasks by *name*, so the gateway never imports agent code; the worker package
registers the bodies under these names (``worker/tasks.py``), with the parameters the
``send_*`` functions below give, in the same order. Nothing else builds a task's arguments.
None of these tasks has a result, and each sender says so (``ignore_result``): else the sender
would subscribe to a result channel for every message. Where the broker is the state Redis the
message is pushed without Celery's producer (``walrus_tasks.task_push``), else ``send_task``.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery
from kombu import Exchange, Queue  # type: ignore[attr-defined]

from walrus_tasks import kombu_closed_transport, redis_url, task_push
from walrus_tasks.connection import get_redis
from walrus_tasks.errors import InvalidInput
from walrus_tasks.lease import Fence
from walrus_tasks.settings import get_settings

RUNS_QUEUE = "walrus.runs"
TOOLS_QUEUE = "walrus.tools"
CONTROL_QUEUE = "walrus.control"
ALL_QUEUES = (RUNS_QUEUE, TOOLS_QUEUE, CONTROL_QUEUE)

DRAIN = "walrus.session.drain"
"""Take the conversation lease (or exit: the holder drains) and start the next run."""
STEP = "walrus.run.step"
"""One LLM call of a run, and the dispatch of the tool calls it asks for."""
TOOL_CALL = "walrus.tool.call"
"""One tool call; the last of a step's calls starts the next step."""
REAP = "walrus.lease.reap"
"""Sweep expired conversation leases and resume (or fail) the runs behind them."""
WEBHOOK = "walrus.webhook.post"
"""POST an ended run's webhook (its retries come back as the same task, with a countdown)."""
PING = "walrus.control.ping"
"""A no-op round trip: the benchmark's baseline and a liveness probe."""

QUEUE_OF = {
    DRAIN: RUNS_QUEUE, STEP: RUNS_QUEUE, TOOL_CALL: TOOLS_QUEUE,
    REAP: CONTROL_QUEUE, WEBHOOK: CONTROL_QUEUE, PING: CONTROL_QUEUE,
}  # fmt: skip
"""Each task's queue (its route)."""


def is_amqp(url: str) -> bool:
    """True for a RabbitMQ (AMQP) broker URL."""
    return url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def broker_config(url: str, visibility_timeout: int) -> dict[str, Any]:
    """The broker half of the Celery settings: a Redis (or Sentinel) broker, or RabbitMQ.

    On RabbitMQ the walrus queues are quorum queues (replicated with Raft, so a message a
    broker confirmed survives the loss of a node), as Celery documents for them: publisher
    confirms, and topic exchanges so that countdowns (task retries) use native delayed
    delivery; Celery detects the quorum queues and switches to per-consumer QoS.
    """
    if not is_amqp(url):
        settings = redis_url.celery_broker(url)
        # Unacked messages come back after the visibility timeout: keep it above any step.
        settings["broker_transport_options"]["visibility_timeout"] = visibility_timeout
        # Each queue names its own exchange and key: a Queue without them is bound to the
        # default one (walrus.runs), which is what the worker banner would show for all three.
        # Routing does not change: a task routed to a queue of a direct exchange is published
        # to the default exchange with the queue's name as key (celery.app.amqp).
        settings["task_queues"] = [
            Queue(q, Exchange(q, type="direct"), routing_key=q)  # type: ignore[no-untyped-call]
            for q in ALL_QUEUES
        ]
        return settings
    quorum = {"x-queue-type": "quorum"}
    return dict(
        broker_url=url,
        broker_transport_options={"confirm_publish": True},
        task_default_queue_type="quorum",
        task_default_exchange_type="topic",
        worker_detect_quorum_queues=True,
        task_queues=[
            Queue(q, Exchange(q, type="topic"), routing_key=q, queue_arguments=quorum)  # type: ignore[no-untyped-call]
            for q in ALL_QUEUES
        ],
    )


def backend_config(state_url: str, broker_url: str, visibility_timeout: int) -> dict[str, Any]:
    """The result backend half of the Celery settings: the state Redis, or beside the broker.

    Only the ``PING`` task keeps a result (every sender of the others says ``ignore_result``),
    and only the benchmark's baseline (``bench/measure.py``) and a round-trip test
    (``tests/test_task_bodies.py``) read one (``AsyncResult.get``); walrus itself reads none:
    a run's outcome is in the state. So with a Redis Cluster state, which Celery's Redis
    backend does not support, the backend goes with a Redis (or Sentinel) broker, and is off
    (``result_backend=None``: Celery's disabled backend) with RabbitMQ, where a ``PING``'s
    result cannot be read.
    """
    if redis_url.is_cluster(state_url):
        if not broker_url:  # Settings refuses this at start too
            raise InvalidInput("a Redis Cluster state needs WALRUS_BROKER_URL (Celery's broker)")
        if is_amqp(broker_url):
            return {"result_backend": None}
        backend = redis_url.celery_backend(broker_url)
    else:
        backend = redis_url.celery_backend(state_url)
    backend["result_backend_transport_options"]["visibility_timeout"] = visibility_timeout
    return backend


def celery_config() -> dict[str, Any]:
    """The Celery settings, derived from the process settings when the app is first used.

    The broker is ``WALRUS_BROKER_URL``, else the state Redis; the result backend is the state
    Redis, or beside the broker when the state is a Redis Cluster (``backend_config``). Either
    may be a Sentinel group (``walrus_tasks.redis_url``).
    """
    settings = get_settings()
    broker = settings.broker_url or settings.redis_url
    return dict(
        **broker_config(broker, settings.visibility_timeout),
        **backend_config(settings.redis_url, settings.broker_url, settings.visibility_timeout),
        accept_content=["json"],
        task_serializer="json",
        result_serializer="json",
        result_accept_content=["json"],
        # At-least-once: a message is acked after its task body, and requeued if the process
        # running it dies. walrus makes the *effect* exactly-once (fencing + idempotent steps).
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=settings.step_soft_time_limit,
        task_time_limit=settings.step_time_limit,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        result_expires=3600,
        # Flower sees every task.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_default_queue=RUNS_QUEUE,
        task_routes={name: {"queue": queue} for name, queue in QUEUE_OF.items()},
        beat_schedule={
            "walrus-reaper": {
                "task": REAP,
                "schedule": settings.reaper_interval,
                "options": {"queue": CONTROL_QUEUE, "expires": settings.reaper_interval * 2},
            }
        },
        worker_hijack_root_logger=False,
    )


def make_app() -> Celery:
    """The Celery app, configured lazily.

    Nothing is read at import: the settings (and so the broker URL) are read when the app is
    first used, so a process, or a test session, that sets ``WALRUS_REDIS_URL`` after importing
    walrus modules still sends to the Redis it names, never to the default one.
    """
    kombu_closed_transport.install()  # a worker survives a Redis restart (see the module)
    app = Celery("walrus")
    app.add_defaults(celery_config)
    return app


app = make_app()


def send_drain(agent: str, sender: str, run_id: str | None = None) -> None:
    """``walrus.session.drain(agent, sender, run_id=)``: start the conversation's next run.

    ``run_id`` (the run just submitted) goes in kwargs only so Flower can show and find it.
    """
    _send(DRAIN, (agent, sender), {"run_id": run_id} if run_id else None)


def drain_push(r: redis.Redis, agent: str, sender: str, run_id: str) -> task_push.Push | None:
    """``send_drain``'s message, for a script on ``r`` that pushes it when due.

    None where the script cannot push it (``task_push.applies``).
    """
    if not task_push.applies(r):
        return None
    return task_push.build(app, r, DRAIN, RUNS_QUEUE, (agent, sender), {"run_id": run_id})


def send_step(
    fence: Fence, step: int, countdown: float | None = None, task_id: str | None = None
) -> None:
    """``walrus.run.step(agent, sender, run_id, token, step)``: one LLM step of a fenced run.

    With ``countdown`` (seconds) the step is delivered no sooner: the worker holds the message
    without a pool slot until then (a retry's wait, a deferral for capacity). ``task_id``: the
    message's id, which the run expects for a re-queued step (``runs.defer``, ``limits.release``).
    """
    args = (fence.agent, fence.sender, fence.run_id, fence.token, step)
    if countdown or task_id:
        app.send_task(STEP, args=args, countdown=countdown, task_id=task_id, ignore_result=True)
    else:
        _send(STEP, args)


def send_tool_call(fence: Fence, step: int, index: int) -> None:
    """``walrus.tool.call(agent, sender, run_id, token, step, index)``: one tool call."""
    _send(TOOL_CALL, (fence.agent, fence.sender, fence.run_id, fence.token, step, index))


def send_webhook(run_id: str, chain: str = "0") -> None:
    """``walrus.webhook.post(run_id, chain)``: deliver the ended run's webhook.

    ``chain``: ``0`` from the worker that ended the run, a new one from each re-send by the
    reaper (``walrus_tasks.webhooks``).
    """
    _send(WEBHOOK, (run_id, chain))


def _send(name: str, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None) -> None:
    # Pushed by walrus where the broker is the state Redis (walrus_tasks.task_push), else
    # Celery's producer.
    r = get_redis()
    if task_push.applies(r):
        task_push.push(r, task_push.build(app, r, name, QUEUE_OF[name], args, kwargs))
    else:
        app.send_task(name, args=args, kwargs=kwargs, ignore_result=True)
