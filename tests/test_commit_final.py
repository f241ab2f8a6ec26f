"""A run's last step committed as the run ends, in one step (``runs.finish`` given a
``FinalStep``: ``lua/commit_final.lua``): it leaves what ``commit`` then ``finish`` leave, and
when its commit is refused it writes nothing, the run's end included. On one Redis and on a
cluster (``--state-on-cluster``)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from walrus_tasks import keys, metrics, runs
from walrus_tasks.event_types import RunEvent, chunk, end, event_json, text_end
from walrus_tasks.lease import Fence
from walrus_tasks.runs import acquire, takeover
from walrus_tasks.submit import submit
from walrus_tasks.usage import step_write

AGENT = "echo"
USAGE = (3, 4)
CLOSING: list[RunEvent] = [chunk("there"), text_end()]
ESCAPED: list[RunEvent] = [chunk('a "quote", a \\ and ünïcode\n'), text_end()]


def started(r: redis.Redis, sender: str) -> Fence:
    """A conversation with two messages, the first run's step 0 claimed."""
    submit(r, AGENT, sender, "hello")
    submit(r, AGENT, sender, "and then")
    acquired = acquire(r, AGENT, sender)
    assert acquired is not None and acquired.run_id is not None
    fence = Fence(AGENT, sender, acquired.run_id, acquired.token)
    assert runs.begin(r, fence, 0, "llm", "delivery-1") == "ok"
    return fence


def final_step(fence: Fence) -> runs.FinalStep:
    message = {"role": "assistant", "content": "hi there", "run_id": fence.run_id}
    return runs.FinalStep(0, message, USAGE, "mock", CLOSING)


def end_run(r: redis.Redis, fence: Fence, together: bool) -> runs.Finished:
    """End the run, its last step committed in the same step or first, apart."""
    ended = end("succeeded", {"input_tokens": 3, "output_tokens": 4}, "mock")
    figure = metrics.run_figure(AGENT, "succeeded", 0.25) + metrics.tenant_figure(
        None, "succeeded", *USAGE
    )
    final = final_step(fence)
    if together:
        return runs.finish(r, fence, "succeeded", ended, figure=figure, final=final)
    step = runs.commit(r, fence, 0, final.message, "final", [], USAGE, "mock", CLOSING)
    assert step == "ok"
    return runs.finish(r, fence, "succeeded", ended, figure=figure)


def counters(r: redis.Redis, run_id: str) -> dict[str, dict[str, str]]:
    """The hashes a run's end adds to: its bucket's usage (this hour, ever) and run figures."""
    hour, totals = step_write(run_id, None, AGENT, "mock", True, time.time()).keys
    figures = keys.metrics_runs(keys.run_bucket(run_id))
    named = {"hour": hour, "totals": totals, "figures": figures}
    return {name: r.hgetall(key) for name, key in named.items()}


def added(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> dict[str, Any]:
    return {
        key: {f: float(v) - float(before[key].get(f, 0)) for f, v in fields.items()}
        for key, fields in after.items()
    }


def state(r: redis.Redis, fence: Fence, done: runs.Finished) -> dict[str, Any]:
    """What the run's end left, its ids and times masked (two runs' ends to compare)."""
    masks = {fence.run_id: "RUN", done.next_run or "-": "NEXT", fence.sender: "SENDER"}

    def masked(text: str) -> str:
        for raw, mask in masks.items():
            text = text.replace(raw, mask)
        return text

    record = {k: masked(v) for k, v in r.hgetall(keys.run(fence.run_id)).items()}
    events = r.xrange(keys.run_part(fence.run_id, "events"))
    history = r.lrange(keys.conv(fence.cid, "history"), 0, -1)
    next_record: dict[str, str] = r.hgetall(keys.run(done.next_run)) if done.next_run else {}
    return {
        "done": (done.state, done.parent_wake, done.done_subscriptions, bool(done.next_run)),
        "record": {k: v for k, v in record.items() if not k.endswith("_at")},
        "events": [masked(fields["data"]) for _, fields in events],
        "history": [masked(m) for m in history],
        "lease": r.get(keys.conv(fence.cid, "lease")) == fence.token,
        "next": {k: next_record.get(k) for k in ("status", "step", "phase")},
        "active": r.get(keys.conv(fence.cid, "active")) == done.next_run,
        "claim": r.exists(keys.run_part(fence.run_id, "claim")),
    }


def test_a_last_step_committed_as_its_run_ends_leaves_what_the_two_steps_leave(
    r: redis.Redis, sender: str
) -> None:
    ended: dict[bool, tuple[dict[str, Any], dict[str, Any]]] = {}
    for together in (False, True):
        fence = started(r, f"{sender}-{together}")
        before = counters(r, fence.run_id)
        done = end_run(r, fence, together)
        ended[together] = (state(r, fence, done), added(before, counters(r, fence.run_id)))
    apart, one_step = ended[False], ended[True]
    assert one_step == apart
    got, counted = one_step
    assert got["done"] == ("ended", None, 0, True)
    assert got["record"]["status"] == "succeeded" and got["record"]["phase"] == "done"
    assert (got["record"]["input_tokens"], got["record"]["output_tokens"]) == ("3", "4")
    types = [json.loads(e)["type"] for e in got["events"]]
    assert types[-3:] == ["chunk", "text_end", "end"], types
    assert json.loads(got["history"][-2]) == {
        "role": "assistant", "content": "hi there", "run_id": "RUN",
    }  # fmt: skip
    assert got["next"] == {"status": "running", "step": "0", "phase": "llm"}
    assert got["lease"] and got["active"] and not got["claim"]
    usage_hour, usage_totals, figures = counted.values()
    assert usage_hour == usage_totals == {
        "|echo|mock|in": 3, "|echo|mock|out": 4, "|echo|mock|calls": 1, "|echo|mock|runs": 1,
    }  # fmt: skip
    assert figures["n:echo:succeeded"] == 1 and figures["tn::succeeded"] == 1


def test_a_last_step_whose_lease_was_taken_over_writes_nothing(r: redis.Redis, sender: str) -> None:
    old = started(r, sender)
    r.delete(keys.conv(old.cid, "lease"))  # expired while the worker was paused
    taken = takeover(r, old.cid)
    assert taken is not None and taken.token != old.token
    before = snapshot(r, old)
    assert end_run(r, old, together=True).state == "fenced"
    assert snapshot(r, old) == before


def test_a_last_step_already_committed_writes_nothing_and_ends_nothing(
    r: redis.Redis, sender: str
) -> None:
    fence = started(r, sender)
    final = final_step(fence)
    assert runs.commit(r, fence, 0, final.message, "final", [], USAGE, "mock") == "ok"
    before = snapshot(r, fence)
    assert end_run(r, fence, together=True).state == "stale"
    assert snapshot(r, fence) == before
    assert r.hget(keys.run(fence.run_id), "status") == "running"


def snapshot(r: redis.Redis, fence: Fence) -> dict[str, Any]:
    """Everything a run's last step and end would write."""
    return {
        "record": r.hgetall(keys.run(fence.run_id)),
        "events": r.xrange(keys.run_part(fence.run_id, "events")),
        "history": r.lrange(keys.conv(fence.cid, "history"), 0, -1),
        "inbox": r.lrange(keys.conv(fence.cid, "inbox"), 0, -1),
        "lease": r.get(keys.conv(fence.cid, "lease")),
        "claim": r.get(keys.run_part(fence.run_id, "claim")),
        "counters": counters(r, fence.run_id),
    }


@pytest.mark.parametrize("closing", [[], ESCAPED], ids=["none", "escaped"])
def test_a_last_step_s_closing_events_come_before_the_end_as_given(
    r: redis.Redis, sender: str, closing: list[RunEvent]
) -> None:
    """None at all, or text that needs escaping on its way through Lua, byte for byte."""
    fence = started(r, sender)
    final = runs.FinalStep(0, {"role": "assistant", "content": "x"}, USAGE, "mock", closing)
    ended = end("succeeded", {"input_tokens": 3, "output_tokens": 4}, "mock")
    assert runs.finish(r, fence, "succeeded", ended, final=final).state == "ended"
    data = [f["data"] for _, f in r.xrange(keys.run_part(fence.run_id, "events"))]
    assert data[-len(closing) - 1 :] == [event_json(e) for e in [*closing, ended]]
