"""One step's LLM call, made to last: cluster-wide limits, retries with backoff, fallbacks.

::

    admitted by every limit? --no--> Deferred(wait)               the step goes back to the queue
        |yes
    stream the call --ok--> the model that answered
        |transient error, retries left: retry {attempt, delay_ms, reason, model}
        |      (after ``restart`` if the call had streamed output), then the same call again:
        |      in this task if the wait is short, else Deferred(wait)
        |retries exhausted, or the request too long for the model: the next fallback model
        `-- none left: the error fails the run

The attempt count, the model in use and the time of the next attempt are persisted on the run
(``runs.retry``), so a step that went back to the queue goes on where it was.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import redis

from walrus_tasks import event_types, ids, limits, runs, tracing
from walrus_tasks.celery_app import send_step
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.errors import LeaseLost, ProviderError
from walrus_tasks.lease import Fence, LeaseKeeper, now_ms
from walrus_tasks.settings import get_settings

log = logging.getLogger("walrus.run")

INLINE_WAIT = 1.0
"""Seconds a retry may wait inside the task; a longer wait re-queues the step with a countdown
so the pool slot serves other conversations meanwhile."""
MAX_HOP = 5.0
"""Longest countdown of one re-queue: a killed run waiting to retry ends within about this."""
BASE_DELAY = 0.5
"""Seconds before the first retry when the provider does not say (doubling each time)."""


class Deferred(Exception):
    """The step must wait ``delay`` seconds outside the pool: re-queue it with that countdown."""

    def __init__(self, delay: float, why: str) -> None:
        super().__init__(why)
        self.delay = delay
        self.why = why


def retry_delay(error: ProviderError, attempt: int, agent: AgentConfig) -> float | None:
    """Seconds before retry number ``attempt`` (1 = the first) of a failed call; None: give up.

    Exponential backoff with jitter, or the provider's ``Retry-After`` (reset headers) plus a
    little jitter; a wait the provider asks for beyond ``max_retry_wait`` is not waited.
    """
    if not error.transient or error.context_length or attempt > agent.retries:
        return None
    jitter = random.random()
    if error.retry_after is not None:
        if error.retry_after > agent.max_retry_wait:
            return None
        return min(float(error.retry_after) * (1 + 0.1 * jitter) + 0.05, agent.max_retry_wait)
    return min(BASE_DELAY * 2.0 ** (attempt - 1), agent.max_retry_wait) * (0.5 + 0.5 * jitter)


StreamFn = Callable[[AgentConfig], tuple[int, int]]
"""Streams one call of the given agent (its ``model`` possibly a fallback) and returns the
usage; raises ProviderError. ``streamed()`` says whether it emitted any output."""


def call(
    r: redis.Redis,
    fence: Fence,
    step: int,
    agent: AgentConfig,
    config: Config,
    record: dict[str, str],
    keeper: LeaseKeeper,
    estimate: int,
    stream: StreamFn,
    streamed: Callable[[], bool],
    reset: Callable[[], None],
) -> str:
    """Make step ``step``'s LLM call under the limits, retrying and falling back.

    Returns the model that answered. Raises Deferred (re-queue the step), or the last
    ProviderError once retries and fallbacks are exhausted.
    """
    models = [agent.model, *agent.fallback_models]
    attempts = int(record.get("attempts", 0))
    tries = int(record.get("tries", 0))
    index = min(int(record.get("fallback", 0)), len(models) - 1)
    tenant = record.get("tenant") or limits.tenant_of(fence.sender)
    hold = get_settings().lease_ttl
    # A delivery that came back before the retry's time (a hop of a long wait) waits on.
    if (left := (int(record.get("not_before", 0)) - now_ms()) / 1000) > 0:
        raise Deferred(left, "waiting to retry")
    while True:
        model = models[index]
        applied = limits.limits_for(config, model, tenant)
        holder = ids.hex_id()
        full = limits.acquire(r, applied, holder, fence.run_id, estimate, hold)
        if full is not None:
            raise Deferred(limits.jittered(full[0]), f"waiting for capacity: {full[1]}")

        def renew(applied: list[limits.Limit] = applied, holder: str = holder) -> None:
            limits.renew(r, applied, holder, hold)

        keeper.on_renew.append(renew)
        used = estimate
        try:
            keeper.check()
            usage = stream(agent.model_copy(update={"model": model}) if index else agent)
            used = sum(usage) or estimate
            return model
        except ProviderError as e:
            error = e
        finally:
            keeper.on_renew.remove(renew)
            wake(limits.release(r, applied, holder, used - estimate))
        restart = event_types.restart(step, error.message) if streamed() else None
        reset()
        delay = retry_delay(error, tries + 1, agent)
        if delay is None:
            if index + 1 >= len(models):
                raise error
            index, tries, delay = index + 1, 0, 0.0
        else:
            tries += 1
        attempts += 1
        tracing.event("retry", {"walrus.retry.attempt": attempts, "walrus.retry.delay_ms":
                                int(delay * 1000), "error.message": error.message})  # fmt: skip
        event = event_types.retry(attempts, int(delay * 1000), error.message, models[index])
        state = runs.retry(
            r, fence, step, attempts, tries, index, now_ms() + int(delay * 1000), event, restart
        )
        if state != "ok":
            raise LeaseLost(f"run {fence.run_id}: lease lost while recording a retry ({state})")
        if delay > INLINE_WAIT:
            raise Deferred(delay, f"retry {attempts} in {delay:.1f} s")
        keeper.wait(delay)


def wake(woken: limits.Woken | None) -> None:
    """Send the step a released slot woke (``limits.release``) now, as the message it expects.

    Should the send fail, the step's countdown message is stale already: the run is recovered
    when its lease (kept for the countdown plus the dispatch grace) expires.
    """
    if woken is None:
        return
    fence = Fence(woken.agent, woken.sender, woken.run_id, woken.token)
    try:
        send_step(fence, woken.step, task_id=woken.task_id)
    except Exception:
        log.exception("waking step %d of run %s failed", woken.step, woken.run_id)


def hop(delay: float) -> float:
    """The countdown of one re-queue for a wait of ``delay`` seconds."""
    return min(delay, MAX_HOP)
