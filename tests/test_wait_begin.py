"""A tool call's wait begun (``runs.wait_begin``, ``lua/wait_begin.lua``) on a real Redis.

A wake that is due already (a reply sent before the question, children that all ended before
the parent parked) is taken at once and the call goes on in place ('woken'). Its wake says when
the wait began, as a parked call's does, so the call's trace span reports how long it waited
(``walrus.wait.seconds``: without it, a delegate call woken in place had none, and
``tests/test_tracing.py`` failed when the child ended first).
"""

from __future__ import annotations

import json
import time
import uuid

import redis

from walrus_tasks import keys, runs
from walrus_tasks.event_types import ToolCall
from walrus_tasks.lease import Fence
from walrus_tasks.runs import acquire
from walrus_tasks.submit import submit

AGENT = "echo"


def in_tools(r: redis.Redis, call: ToolCall) -> Fence:
    """A run whose step 0 asked for ``call``: phase ``tools``."""
    sender = f"wait-{uuid.uuid4().hex[:8]}"
    submit(r, AGENT, sender, "hello")
    acquired = acquire(r, AGENT, sender)
    assert acquired is not None and acquired.run_id is not None
    fence = Fence(AGENT, sender, acquired.run_id, acquired.token)
    assert runs.begin(r, fence, 0, "llm", "delivery-1") == "ok"
    message = {"role": "assistant", "content": "", "run_id": fence.run_id}
    assert runs.commit(r, fence, 0, message, "tools", [call], (1, 1), "mock") == "ok"
    return fence


def test_a_reply_that_came_first_wakes_the_call_at_once_saying_when_its_wait_began(
    r: redis.Redis,
) -> None:
    call: ToolCall = {"id": "c1", "name": "ask_user", "arguments": {"question": "which?"}}
    fence = in_tools(r, call)
    r.rpush(keys.run_part(fence.run_id, "replies"), "the blue one")
    before = int(time.time() * 1000)
    assert runs.wait_begin(r, fence, 0, "c1", "ask", 60, None, {}) == "woken"
    wake = runs.wake_of(r, fence.run_id, "c1")
    assert wake is not None
    assert (wake["kind"], wake["content"]) == ("reply", "the blue one")
    assert before <= wake["since"] <= int(time.time() * 1000)
    assert r.hget(keys.run(fence.run_id), "status") != "waiting"  # not parked


def test_a_parked_call_records_when_its_wait_began(r: redis.Redis) -> None:
    call: ToolCall = {"id": "c1", "name": "ask_user", "arguments": {"question": "which?"}}
    fence = in_tools(r, call)
    before = int(time.time() * 1000)
    assert runs.wait_begin(r, fence, 0, "c1", "ask", 60, None, {}) == "waiting"
    assert r.hget(keys.run(fence.run_id), "status") == "waiting"
    waiting = r.hget(keys.run_part(fence.run_id, "waits"), "c1")
    assert waiting is not None and before <= json.loads(waiting)["since"]
