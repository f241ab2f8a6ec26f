"""Recovery: find conversations whose lease holder died, and resume (or fail) their runs."""

from __future__ import annotations

import logging

import redis

from walrus_tasks import fair, indexes, keys, reads, runs, topology, waits, webhooks
from walrus_tasks.celery_app import send_drain, send_webhook
from walrus_tasks.connection import get_redis
from walrus_tasks.lease import Fence, expired_conversations, now_ms
from walrus_tasks.log import bound
from walrus_tasks.runs import takeover
from walrus_tasks.settings import get_settings
from worker.runtime import dispatch_step, dispatch_tool_call, finish

log = logging.getLogger("walrus.recovery")


def reap() -> int:
    """One sweep; returns how many conversations (and lost webhooks) it acted on.

    Expired leases are taken over; an inbox waiting ``fair.STALE_MS`` with its lease free may
    have lost its drain message: ``fair.reap`` says which want one sent again.
    """
    r = get_redis()
    acted = sum(recover(r, conversation) for conversation in expired_conversations(r))
    stale = [c for c, _ in indexes.scored(r, "inboxes", "-inf", now_ms() - fair.STALE_MS)]
    if topology.is_cluster(r):
        stale = list(dict.fromkeys(stale + fair.claims_due(r)))  # its drain died before starting it
        for wake in runs.parents_due(r):  # its ender died before telling the parent
            acted += 1
            waits.dispatch_wake(wake.agent, wake.sender, wake.run_id, wake.woken)
    for conversation in fair.reap(r, stale):
        acted += 1
        send_drain(*keys.split_cid(conversation))
    # Webhooks whose delivery was lost (a worker died after ending the run, or mid-POST).
    for run_id, chain in webhooks.due(r, get_settings().dispatch_grace):
        acted += 1
        with bound(run_id=run_id):
            log.warning("webhook of run %s still unsent past its hold; sending it again", run_id)
        send_webhook(run_id, chain)
    return acted


def recover(r: redis.Redis, conversation: str) -> bool:
    """Take over a conversation whose lease expired; resume its run or start its next one.

    The reaper calls it for every expired lease, and a drain that found an orphaned run calls
    it at once. False when the lease turned out alive (or its run only waits).
    """
    t = takeover(r, conversation)
    if t is None:
        return False
    agent, sender = keys.split_cid(conversation)
    if t.resume:
        resume(r, Fence(agent, sender, t.resume, t.token))
    elif t.started:
        dispatch_step(Fence(agent, sender, t.started, t.token), 0)
    return True


def resume(r: redis.Redis, fence: Fence) -> None:
    """Continue a run from its last persisted step under the new lease token.

    An LLM step sent again that had streamed output gets a ``restart`` event as it is claimed
    (``lua/begin_step.lua``), so clients drop that output before the step streams again.
    """
    record = reads.run_record(r, fence.run_id)
    recoveries = int(record.get("recoveries", 0))
    step, phase = int(record.get("step", 0)), record.get("phase", "llm")
    with bound(agent=fence.agent, sender=fence.sender, run_id=fence.run_id):
        log.warning("lease expired; resuming at step %d (%s), recovery %d", step, phase, recoveries)
        if recoveries > get_settings().max_recoveries:
            finish(
                r, fence, "failed",
                f"worker lost {recoveries} times (last at step {step}); giving up",
            )  # fmt: skip
        elif phase == "llm":
            dispatch_step(fence, step)
        elif phase == "tools":
            for i in runs.release_calls(r, fence) or ():
                dispatch_tool_call(fence, step, i)
        elif phase == "final":
            finish(r, fence, "succeeded")
        elif phase == "cancelled":
            finish(r, fence, "cancelled")
