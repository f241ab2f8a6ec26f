"""Starting an Agent Protocol run: on a thread or stateless, a new message or a resume.

What every run create (background, stream, wait) calls before it answers: the thread found
(created if asked), bound to its assistant, and the run submitted into the thread's
conversation and recorded; or, with ``command: {resume}``, the thread's pending question or
approval answered and the run that asked goes on. :func:`start_async` starts a thread's next
run on the event loop, with no thread hop (docs/design.md, "The operations registry").
"""

from collections.abc import Awaitable
from typing import Any, NamedTuple

import redis
import redis.asyncio as aioredis
from starlette.concurrency import run_in_threadpool

from gateway import operations as ops
from gateway import run_interrupts, thread_bindings, thread_records
from gateway import thread_operations as thread_ops
from gateway.agent_protocol import messages, state
from gateway.agent_protocol.models import RunCreate
from walrus_tasks.config import Config
from walrus_tasks.errors import Conflict, InvalidInput, NotFound


def _thread(
    r: redis.Redis, tenant: str | None, thread_id: str | None, body: RunCreate
) -> dict[str, str]:
    if thread_id is None:  # stateless: a thread of its own
        return thread_ops.create_thread(r, tenant, None, {}, "raise")
    try:
        return thread_ops.get_thread(r, tenant, thread_id)
    except NotFound:
        if body.if_not_exists != "create":
            raise
        return thread_ops.create_thread(r, tenant, thread_id, {}, "do_nothing")


def _resume(
    r: redis.Redis, config: Config, h: dict[str, str], value: Any, webhook: str | None
) -> tuple[str, str]:
    """Answer the thread's pending interrupts with ``value``: ``(run id, stream cursor)``."""
    active = thread_ops.thread_active_run(r, h)
    pending = run_interrupts.pending_interrupts(r, active) if active else []
    if not active or not pending:
        raise Conflict(f"thread {h['thread_id']} has no interrupt to resume")
    if webhook:  # the walrus run that goes on ends this LangGraph run too
        thread_ops.set_webhook(r, active, webhook)
    after = run_interrupts.last_question(r, active)
    agent, sender, tenant = (
        h["agent"],
        thread_ops.thread_sender(h["thread_id"]),
        thread_ops.tenant_in(h),
    )
    ids = {i["id"] for i in pending}
    if isinstance(value, dict) and value and set(value) <= ids:  # {interrupt id: answer}
        for call_id, answer in value.items():
            ops.reply(r, config, agent, sender, messages.resume_text(answer), call_id, tenant)
    else:
        text = messages.resume_text(value)
        ops.reply(r, config, agent, sender, text, pending[0]["id"], tenant)
    return active, after


class Started(NamedTuple):
    """A run :func:`start` started or resumed."""

    run_id: str
    thread: dict[str, str]
    after: str
    """Where its stream is read from: ``0-0``, or past the question a resume answers."""
    view: dict[str, Any] | None
    """The run as :func:`state.run_view` shows it, when it was read on the way (not a resume)."""


def start(
    r: redis.Redis, config: Config, tenant: str | None, thread_id: str | None, body: RunCreate
) -> Started:
    """Start (or resume) a run in ``tenant``."""
    agent = ops.known_agent(config, body.assistant_id)
    if body.webhook is not None:  # before anything is stored, a stateless run's thread too
        thread_ops.check_webhook(config, body.webhook)
    h = _thread(r, tenant, thread_id, body)
    thread_ops.bind_thread(r, h, agent)
    if body.command and "resume" in body.command:
        run_id, after = _resume(r, config, h, body.command["resume"], body.webhook)
        return Started(run_id, h, after, None)
    text = messages.input_text(body.input)
    submitted = thread_ops.send_in_thread(r, config, h, text, body.multitask_strategy, body.webhook)
    view = state.record_run(r, submitted.run_id, h, agent, body)
    return Started(submitted.run_id, h, "0-0", view)


async def start_async(
    r: redis.Redis,
    aredis: aioredis.Redis,
    config: Config,
    tenant: str | None,
    thread_id: str | None,
    body: RunCreate,
    *,
    viewed: bool = False,
) -> Started:
    """:func:`start` from the event loop.

    A run on a thread that exists and has its assistant, or none yet and no metadata (a thread
    this process has not seen bound is bound in the same step), starts with no thread hop, in
    one round trip on ``aredis``: the binding, the submit, guarded by the thread's assistant,
    the run's record and the thread's read (``submit_async``, ``thread_records.record_along``).
    A stateless run's thread is made on the loop first, bound (two round trips more). Any
    other start (a thread to create, or to bind that has metadata, a resume, a webhook; and
    every start on a Redis Cluster or where replicas must acknowledge the write, where the
    guard is not checked) runs :func:`start` on a thread.
    ``viewed``: the run's view is wanted (a create's answer); a resume, which reads none on the
    way, reads it on that same thread.
    """

    def on_a_thread() -> Awaitable[Started]:  # with the thread id as it is by then
        started = _start_viewed if viewed else start
        return run_in_threadpool(started, r, config, tenant, thread_id, body)

    agent = ops.known_agent(config, body.assistant_id)
    if body.webhook is not None or (body.command and "resume" in body.command):
        return await on_a_thread()
    if thread_id is None:  # stateless: a thread of its own, made bound as bind_thread binds it
        messages.input_text(body.input)  # refused (422) before anything is stored
        h, _ = await thread_ops.create_thread_async(
            aredis, tenant, None, thread_ops.bound_meta({}, agent), "raise"
        )
        thread_bindings.remember(h)
        thread_id = h["thread_id"]
    try:
        text = messages.input_text(body.input)
        h = thread_records.thread_as_bound(tenant, thread_id, agent)
    except InvalidInput:  # answered as the thread's checks come first (a missing one: 404)
        return await on_a_thread()
    fields = state.asked(agent, body)
    bind = thread_bindings.known(tenant, h["thread_id"]) != agent  # else bound: a hint
    along = thread_records.record_along(h, fields, bind)
    submitted = await thread_ops.send_in_thread_async(
        aredis, r, config, h, text, body.multitask_strategy, along
    )
    if submitted is None:  # no such thread, or not (yet) this assistant's, or a write for a thread
        return await on_a_thread()
    record = None
    if submitted.along is not None:
        record, h = thread_records.recorded(submitted.along, tenant, thread_id)
        thread_bindings.remember(h)
    else:  # written on a thread after a lost connection, without what went along
        h = await thread_ops.get_thread_async(aredis, tenant, thread_id)
    if record is None:
        record = await thread_records.record_thread_run_async(aredis, submitted.run_id, h, fields)
    view = state.recorded_view(submitted.run_id, h, fields, record)
    return Started(submitted.run_id, h, "0-0", view)


def _start_viewed(
    r: redis.Redis, config: Config, tenant: str | None, thread_id: str | None, body: RunCreate
) -> Started:
    """:func:`start`, and the run's view read on the same thread when it read none (a resume)."""
    started = start(r, config, tenant, thread_id, body)
    if started.view is not None:
        return started
    return started._replace(view=state.run_view(r, started.run_id, started.thread))
