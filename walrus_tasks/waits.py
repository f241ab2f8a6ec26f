"""Waiting runs: parking a tool call without a worker, and what ends the wait.

A tool call that needs a human (``ask_user``, an ``ask`` permission), the client (a client tool:
``walrus_tasks.client_tools``) or other runs (a foreground ``delegate``) parks its run in
``waiting`` (``lua/wait_begin.lua``): no task holds it and its lease lives until the wait's
deadline. A client reply or a kill ends the wait here (``lua/wake.lua``), a last delegated child
ends it as it finishes (``lua/finish.lua``), and the reaper ends it at the deadline
(``lua/takeover.lua``). Each way stores a *wake* for the call and dispatches the call again, on
any worker; the tool then sees ``ctx.wake``.
"""

from __future__ import annotations

from typing import Literal

import redis

from walrus_tasks import keys, runs
from walrus_tasks.celery_app import send_tool_call
from walrus_tasks.errors import Conflict, NotFound
from walrus_tasks.lease import Fence
from walrus_tasks.models import Replied


def dispatch_wake(agent: str, sender: str, run_id: str, woken: runs.Woken) -> str:
    """Send the woken call to a tool worker; its call id."""
    send_tool_call(Fence(agent, sender, run_id, woken.token), woken.step, woken.index)
    return woken.call_id


def _wake(
    r: redis.Redis,
    run_id: str,
    call_id: str,
    kinds: str,
    wake: Literal["reply", "cancelled"],
    content: str,
) -> tuple[dict[str, str], runs.Woken | Literal["queued"] | None]:
    record: dict[str, str] = r.hgetall(keys.run(run_id))  # type: ignore[assignment]
    if not record:
        raise NotFound(f"unknown run {run_id!r}")
    conversation = keys.cid(record["agent"], record["sender"])
    return record, runs.wake(r, run_id, conversation, call_id, kinds, wake, content)


REPLY_KINDS = "ask,approval,client"
"""The waits a client's reply ends (``wake.lua``): a question, an approval, a client tool call."""


def reply(r: redis.Redis, agent: str, sender: str, content: str, call_id: str = "") -> Replied:
    """Answer the conversation's pending question, approval or client tool call.

    A client tool's reply is its output (``walrus_tasks.client_tools``). ``call_id`` answers
    that call; without it, the pending one with the earliest deadline (the first parked, as
    each waits ``ask_timeout``). With nothing pending yet, a reply without ``call_id`` is kept
    for the active run's next one, so a reply racing the question is not lost. Conflict when
    no run is active (or ``call_id`` is not waiting for a reply).
    """
    active: str | None = r.get(keys.conv(keys.cid(agent, sender), "active"))  # type: ignore[assignment]
    if active is None:
        raise Conflict(f"conversation {agent}/{sender} has no active run to reply to")
    record, res = _wake(r, active, call_id, REPLY_KINDS, "reply", content)
    if res == "queued":
        return Replied(run_id=active, status="queued")
    if not res:
        what = f"tool call {call_id!r}" if call_id else "no question"
        raise Conflict(f"run {active} is not waiting for a reply ({what} pending)")
    return Replied(
        run_id=active,
        status="resumed",
        call_id=dispatch_wake(record["agent"], record["sender"], active, res),
    )


def cancel(r: redis.Redis, run_id: str) -> None:
    """Cancel the run, so it sees the kill at once: its flag, and its waits ended (``runs``).

    The foreground children of a waiting ``delegate`` call are cancelled with it; each woken
    call is dispatched so its run can end.
    """
    for woken in runs.cancel(r, run_id):
        dispatch_wake(woken.agent, woken.sender, woken.run_id, woken.woken)


def steer(r: redis.Redis, agent: str, sender: str, content: str) -> str:
    """Queue ``content`` for the active run's next LLM call; its run id, or Conflict."""
    run_id = runs.queue_steering(r, agent, sender, content)
    if not run_id:
        raise Conflict(f"conversation {agent}/{sender} has no active run to steer")
    return str(run_id)
