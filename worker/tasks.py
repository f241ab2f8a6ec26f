"""The Celery task bodies: parse, bind log context, call the typed runtime."""

from __future__ import annotations

import logging
from typing import Any

import redis

from walrus_tasks import keys
from walrus_tasks.celery_app import DRAIN, PING, REAP, STEP, TOOL_CALL, WEBHOOK, app
from walrus_tasks.connection import get_redis
from walrus_tasks.lease import Fence
from walrus_tasks.log import bound
from walrus_tasks.settings import get_settings
from worker import in_place, recovery, runtime, webhook
from worker.config_cache import current_config

log = logging.getLogger("walrus.worker")

# Redis blips are transient: retry the task (its effect is idempotent) instead of dropping it.
_RETRY: dict[str, Any] = {
    "autoretry_for": (redis.ConnectionError, redis.TimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 10,
    "max_retries": 10,
}


BUSY_RETRIES = 8
"""How often a delivery that found its step claimed comes back to look again."""


def _retry_if_busy(task: Any, state: str) -> None:
    # A redelivered message (its worker process died) finds the dead delivery's claim until the
    # claim's TTL runs out: come back after one lease TTL and resume the run ourselves, unless
    # the reaper took over first (then the retry is fenced and does nothing).
    if state == "busy" and task.request.retries < BUSY_RETRIES:
        raise task.retry(countdown=get_settings().lease_ttl)


@app.task(name=DRAIN, bind=True, **_RETRY)  # type: ignore[untyped-decorator]
def drain(self: Any, agent: str, sender: str, run_id: str | None = None) -> str | None:
    """Start the next conversation the fair dispatcher picks (``walrus_tasks.fair``).

    ``agent``/``sender``: the conversation whose submission sent this drain, and ``run_id``
    its run, for Flower (its task list shows kwargs, and its search finds
    ``kwargs:run_id=…``). The drain starts whichever run is due; its result, which Flower
    shows, names that run (None: nothing was ready), and the runs of that conversation it
    went on with in place (``worker.in_place``).
    """
    with bound(agent=agent, sender=sender, task_id=self.request.id), in_place.task_slice() as held:
        drained = runtime.drain(agent, sender)
        if drained is None:
            return None
        acquired = drained.acquired
        if acquired.orphan:
            with bound(run_id=acquired.orphan):
                recovery.recover(get_redis(), keys.cid(agent, sender))
        if acquired.run_id is None:
            return None
        if (acquired.agent, acquired.sender) != (agent, sender):
            log.info("drain of %s/%s starts %s/%s", agent, sender, acquired.agent, acquired.sender)
        runtime.start(drained)
        runtime.run_taken(held)
        started = f"{acquired.agent}/{acquired.sender} {acquired.run_id}"
        return f"{started}, {held.result}" if held.ran else started


@app.task(name=STEP, bind=True, **_RETRY)  # type: ignore[untyped-decorator]
def step(self: Any, agent: str, sender: str, run_id: str, token: str, step: int) -> str | None:
    """One LLM step of a run; its result names the runs it went on with in place, if any."""
    with bound(agent=agent, sender=sender, task_id=self.request.id), in_place.task_slice() as held:
        with bound(run_id=run_id):
            _retry_if_busy(
                self, runtime.run_step(Fence(agent, sender, run_id, token), step, self.request.id)
            )
        runtime.run_taken(held)
        return held.result if held.ran else None


@app.task(name=TOOL_CALL, bind=True, **_RETRY)  # type: ignore[untyped-decorator]
def tool_call(
    self: Any, agent: str, sender: str, run_id: str, token: str, step: int, index: int
) -> None:
    """One tool call of a step."""
    with bound(agent=agent, sender=sender, run_id=run_id, task_id=self.request.id):
        _retry_if_busy(
            self, runtime.run_tool_call(Fence(agent, sender, run_id, token), step, index)
        )


# No task events: a sweep every few seconds would flood Flower's task list (beat sends no
# task-sent event for it either, see beat.scheduler).
@app.task(name=REAP, bind=True, send_events=False)  # type: ignore[untyped-decorator]
def reap(self: Any) -> int:
    """Sweep expired leases and lost drains."""
    with bound(task_id=self.request.id):
        return recovery.reap()


@app.task(name=WEBHOOK, bind=True, **_RETRY)  # type: ignore[untyped-decorator]
def post_webhook(self: Any, run_id: str, chain: str) -> str:
    """POST an ended run's webhook; a transient failure comes back with a countdown."""
    with bound(run_id=run_id, task_id=self.request.id):
        done = webhook.deliver(get_redis(), current_config(), run_id, chain, self.request.retries)
        if done.outcome == "retry":
            # A countdown, not a sleep: the worker holds the message without a pool slot.
            raise self.retry(countdown=done.retry_in, max_retries=None)
        return done.outcome


@app.task(name=PING, ignore_result=False)  # type: ignore[untyped-decorator]
def ping() -> str:
    """No-op round trip."""
    return "pong"
