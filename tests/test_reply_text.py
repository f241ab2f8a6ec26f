"""A restarted step's reply, once: the ``restart`` a lost worker's step gets as it is claimed
again (``lua/begin_step.lua``, scripts alone on a database no worker serves), and how readers
honour it (``walrus_tasks.reply_text``). End to end: ``tests/test_worker_lost_restart.py``."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from walrus_tasks import event_types, keys, runs
from walrus_tasks.event_types import RUN_EVENT, chunk, text_end, text_start
from walrus_tasks.lease import Fence
from walrus_tasks.reply_text import ForwardOnce, ReplyDiverged, ReplyText
from walrus_tasks.runs import acquire
from walrus_tasks.submit import submit
from worker import history_cache

AGENT = "echo"


# --- the restart a re-claimed step writes ---------------------------------------------------------


def start(r: redis.Redis, sender: str) -> Fence:
    submit(r, AGENT, sender, "hi")
    acquired = acquire(r, AGENT, sender)
    assert acquired is not None and acquired.run_id is not None
    return Fence(AGENT, sender, acquired.run_id, acquired.token)


def claim(r: redis.Redis, fence: Fence, step: int, claim_id: str) -> None:
    begun = runs.begin_step(r, fence, step, claim_id, "", history_cache.held(""))
    assert begun.state == "ok", begun.state


def lose_worker(r: redis.Redis, fence: Fence) -> Fence:
    """The worker died: its lease expires and the reaper takes the run over (a new token)."""
    r.delete(keys.conv(fence.cid, "lease"))
    taken = runs.takeover(r, fence.cid)
    assert taken is not None and taken.resume == fence.run_id
    return Fence(fence.agent, fence.sender, fence.run_id, taken.token)


def stream(r: redis.Redis, fence: Fence) -> list[dict[str, Any]]:
    entries = r.xrange(keys.run_part(fence.run_id, "events"))
    return [dict(RUN_EVENT.validate_json(fields["data"])) for _, fields in entries]


def test_a_step_claimed_again_after_its_worker_streamed_output_restarts_first(
    r: redis.Redis, sender: str
) -> None:
    fence = start(r, sender)
    claim(r, fence, 0, "lost")
    assert runs.emit(r, fence, text_start(), chunk("one"), chunk(" two")) is not None
    fence = lose_worker(r, fence)
    claim(r, fence, 0, "again")
    restart = event_types.restart(0, "worker lost")
    assert [e["type"] for e in stream(r, fence)] == [
        "start", "text_start", "chunk", "chunk", "restart",
    ]  # fmt: skip
    assert stream(r, fence)[-1] == restart
    # The restart voided that output: a step claimed again before streaming anew gets none.
    fence = lose_worker(r, fence)
    claim(r, fence, 0, "third")
    assert [e["type"] for e in stream(r, fence)].count("restart") == 1
    # Output of the new attempt, lost again: a second restart.
    assert runs.emit(r, fence, event_types.thinking("hmm")) is not None
    fence = lose_worker(r, fence)
    claim(r, fence, 0, "fourth")
    assert [e["type"] for e in stream(r, fence)][-2:] == ["thinking", "restart"]


def test_a_step_that_streamed_nothing_needs_no_restart(r: redis.Redis, sender: str) -> None:
    fence = start(r, sender)
    claim(r, fence, 0, "lost")
    assert runs.inject_steering(r, fence) == 0  # nothing queued; a run may steer, then die
    fence = lose_worker(r, fence)
    claim(r, fence, 0, "again")
    assert [e["type"] for e in stream(r, fence)] == ["start"]


def test_the_next_steps_first_claim_never_restarts_the_step_before(
    r: redis.Redis, sender: str
) -> None:
    """Step 1 begins right after step 0's tool results, even without ``tools_complete``."""
    fence = start(r, sender)
    claim(r, fence, 0, "step-0")
    call = {"id": "c1", "name": "clock", "arguments": {}}
    assert runs.emit(r, fence, text_start(), chunk("let me look"), text_end()) is not None
    message = {"role": "assistant", "content": "let me look", "tool_calls": [call]}
    assert runs.commit(r, fence, 0, message, "tools", [call], (1, 1), "mock") == "ok"
    assert runs.emit(r, fence, event_types.tool_start([call])) is not None  # type: ignore[list-item]
    assert runs.emit(r, fence, event_types.tool_result("c1", "clock", "noon", False, 1))
    result = {"role": "tool", "tool_call_id": "c1", "name": "clock", "content": "noon"}
    assert runs.record_tool_result(r, fence, 0, "c1", result) == "complete"
    # The worker died before it wrote tools_complete.
    fence = lose_worker(r, fence)
    claim(r, fence, 1, "step-1")
    assert "restart" not in [e["type"] for e in stream(r, fence)]


# --- readers: a client that can take text back, and one that cannot ------------------------------


def events(*items: Any) -> list[dict[str, Any]]:
    """Shorthand: a str is a chunk, a str in a tuple its event type (plus fields)."""
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            out.append({"type": "chunk", "content": item})
        else:
            kind, *rest = item
            out.append({"type": kind, **(rest[0] if rest else {})})
    return out


LOST = ("restart", {"step": 0, "reason": "worker lost"})
END = ("end", {"status": "succeeded"})


def reply_of(run: list[dict[str, Any]]) -> str:
    reply = ReplyText()
    for event in run:
        reply.feed(event)
    return reply.text


def forwarded(run: list[dict[str, Any]]) -> str:
    once = ForwardOnce()
    return "".join(once.feed(event) for event in run)


def test_reply_text_drops_what_a_restart_voids_and_keeps_the_steps_before() -> None:
    run = events(("start",), "one", " two", LOST, "one", " two", " three", END)
    assert reply_of(run) == "one two three"
    tools = events(
        ("start",), "look", ("tool_start",), ("tool_result",), ("tools_complete",),
        " then", LOST, ("thinking",), " then", " done", END,
    )  # fmt: skip
    assert reply_of(tools) == "look then done"


def test_forward_once_skips_an_exact_repeat_whatever_its_chunking() -> None:
    run = events(("start",), "one t", LOST, "o", "ne", " two three", " four", END)
    assert forwarded(run) == "one two three four"
    assert forwarded(events(("start",), LOST, "a", " b", END)) == "a b"


@pytest.mark.parametrize(
    "retried",
    [["one", " six"], ["one twin"], ["one"]],
    ids=["differs", "differs-inside-a-chunk", "says-less"],
)
def test_forward_once_raises_where_the_new_attempt_differs(retried: list[str]) -> None:
    run = events(("start",), "one", " two", LOST, *retried, END)
    once = ForwardOnce()
    out = []
    with pytest.raises(ReplyDiverged, match=r"restarted \(worker lost\)"):
        for event in run:
            out.append(once.feed(event))
    assert "".join(out) == "one two", "nothing but the first attempt's text went out"


def test_forward_once_treats_each_step_on_its_own() -> None:
    run = events(
        ("start",), "look", ("tool_start",), ("tool_result",), ("tools_complete",),
        " again", LOST, " again", ", done", END,
    )  # fmt: skip
    assert forwarded(run) == "look again, done"
