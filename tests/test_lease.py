"""Invariants 2-4 at the Redis level: the Lua scripts alone, on a database no worker serves."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from walrus_tasks import keys, runs
from walrus_tasks.lease import Fence, renew
from walrus_tasks.runs import acquire, takeover
from walrus_tasks.submit import submit

AGENT = "echo"


def start(r: redis.Redis, sender: str) -> Fence:
    acquired = acquire(r, AGENT, sender)
    assert acquired is not None and acquired.run_id is not None
    return Fence(AGENT, sender, acquired.run_id, acquired.token)


def end(r: redis.Redis, fence: Fence) -> str | None:
    done = runs.finish(r, fence, "succeeded", {"type": "end", "status": "succeeded"})
    state, next_run = done.state, done.next_run
    assert state == "ended"
    return next_run


def test_a_message_submitted_while_the_lease_is_held_is_started_by_the_release(
    r: redis.Redis, sender: str
) -> None:
    first = submit(r, AGENT, sender, "one").run_id
    fence = start(r, sender)
    assert fence.run_id == first
    second = submit(r, AGENT, sender, "two").run_id
    assert acquire(r, AGENT, sender) is None, "the holder drains; a second drain must back off"
    assert end(r, fence) == second, "release re-checks the inbox atomically"
    assert r.hget(keys.run(second), "status") == "running"


def test_a_message_submitted_after_the_release_finds_the_lease_free(
    r: redis.Redis, sender: str
) -> None:
    submit(r, AGENT, sender, "one")
    fence = start(r, sender)
    assert end(r, fence) is None
    assert not r.exists(keys.conv(keys.cid(AGENT, sender), "lease")), "lease released"
    second = submit(r, AGENT, sender, "two").run_id
    assert start(r, sender).run_id == second


def test_submit_racing_release_never_strands_a_message(r: redis.Redis, sender: str) -> None:
    """Interleave submit / drain / finish in every order a racing pair can take, many times."""
    import random

    rng = random.Random(7)
    submitted: list[str] = []
    finished: list[str] = []
    holder: Fence | None = None
    for _ in range(2000):
        move = rng.choice(["submit", "drain", "finish"])
        if move == "submit":
            submitted.append(submit(r, AGENT, sender, "m").run_id)
        elif move == "drain" and holder is None:
            got = acquire(r, AGENT, sender)
            if got is not None and got.run_id:
                holder = Fence(AGENT, sender, got.run_id, got.token)
        elif move == "finish" and holder is not None:
            finished.append(holder.run_id)
            nxt = end(r, holder)
            holder = Fence(AGENT, sender, nxt, holder.token) if nxt else None
    while holder is not None or r.llen(keys.conv(keys.cid(AGENT, sender), "inbox")):
        if holder is None:
            got = acquire(r, AGENT, sender)
            assert got is not None and got.run_id, "inbox non-empty but nobody can start it"
            holder = Fence(AGENT, sender, got.run_id, got.token)
        finished.append(holder.run_id)
        nxt = end(r, holder)
        holder = Fence(AGENT, sender, nxt, holder.token) if nxt else None
    assert finished == submitted, "every message ran exactly once, in submission order"


def test_a_worker_whose_lease_was_taken_over_cannot_write(r: redis.Redis, sender: str) -> None:
    submit(r, AGENT, sender, "hello")
    old = start(r, sender)
    history_key = keys.conv(old.cid, "history")
    r.delete(keys.conv(old.cid, "lease"))  # the lease expired while the worker was paused
    taken = takeover(r, old.cid)
    assert taken is not None and taken.resume == old.run_id and taken.token != old.token
    before = r.lrange(history_key, 0, -1)
    events_before = r.xlen(keys.run_part(old.run_id, "events"))
    assert runs.begin(r, old, 0, "llm", "claim-x") == "fenced"
    assert runs.emit(r, old, {"type": "chunk", "content": "zombie"}) is None
    message = {"role": "assistant", "content": "zombie"}
    assert runs.commit(r, old, 0, message, "final", [], (1, 1), "mock") == "fenced"
    assert runs.finish(r, old, "succeeded", {"type": "end"}).state == "fenced"
    assert not renew(r, old)
    assert r.lrange(history_key, 0, -1) == before
    assert r.xlen(keys.run_part(old.run_id, "events")) == events_before
    new = Fence(AGENT, sender, old.run_id, taken.token)
    assert runs.commit(r, new, 0, message, "final", [], (1, 1), "mock") == "ok"


def test_an_expired_lease_nobody_took_over_is_taken_back_by_its_holder(
    r: redis.Redis, sender: str
) -> None:
    submit(r, AGENT, sender, "hello")
    fence = start(r, sender)
    r.delete(keys.conv(fence.cid, "lease"))  # expired, but no takeover happened
    assert runs.emit(r, fence, {"type": "chunk", "content": "still mine"}) is not None
    assert r.get(keys.conv(fence.cid, "lease")) == fence.token


def test_a_duplicated_step_is_claimed_once_and_a_committed_step_is_a_no_op(
    r: redis.Redis, sender: str
) -> None:
    submit(r, AGENT, sender, "hello")
    fence = start(r, sender)
    assert runs.begin(r, fence, 0, "llm", "delivery-1") == "ok"
    assert runs.begin(r, fence, 0, "llm", "delivery-2") == "busy"
    message = {"role": "assistant", "content": "hi"}
    assert runs.commit(r, fence, 0, message, "final", [], (1, 1), "mock") == "ok"
    assert runs.commit(r, fence, 0, message, "final", [], (1, 1), "mock") == "stale"
    assert runs.begin(r, fence, 0, "llm", "delivery-3") == "stale"
    history = [json.loads(m) for m in r.lrange(keys.conv(fence.cid, "history"), 0, -1)]
    assert [m["role"] for m in history] == ["user", "assistant"]


def test_tool_results_enter_history_in_call_order_once_each(r: redis.Redis, sender: str) -> None:
    submit(r, AGENT, sender, "hello")
    fence = start(r, sender)
    calls = [{"id": f"c{i}", "name": "clock", "arguments": {}} for i in range(3)]
    assistant = {"role": "assistant", "content": "", "tool_calls": calls}
    assert runs.commit(r, fence, 0, assistant, "tools", calls, (0, 0), "mock") == "ok"
    outcomes = []
    for call_id in ["c2", "c0", "c0", "c1"]:  # completion order, with one duplicate
        message = {"role": "tool", "tool_call_id": call_id, "content": call_id}
        outcomes.append(runs.record_tool_result(r, fence, 0, call_id, message))
    assert outcomes == ["pending", "pending", "stale", "complete"]
    history = [json.loads(m) for m in r.lrange(keys.conv(fence.cid, "history"), 0, -1)]
    assert [m.get("tool_call_id") for m in history[2:]] == ["c0", "c1", "c2"]
    assert r.hget(keys.run(fence.run_id), "step") == "1"


def test_reject_on_a_busy_conversation_writes_nothing(r: redis.Redis, sender: str) -> None:
    from walrus_tasks.errors import Conflict

    def state() -> dict[str, Any]:  # the replica probe counts writes that WAIT covers: not state
        return {k: r.dump(k) for k in r.scan_iter("walrus:*") if not k.endswith(":replica:probe")}

    submit(r, AGENT, sender, "one")
    before = state()
    with pytest.raises(Conflict):
        submit(r, AGENT, sender, "two", on_busy="reject")
    assert state() == before


def test_a_dispatched_task_waiting_in_a_busy_queue_keeps_the_lease(
    r: redis.Redis, sender: str
) -> None:
    """The dispatch grace: a queued step is not mistaken for a dead worker after one TTL."""
    from walrus_tasks.lease import expired_conversations, now_ms, ttl_ms
    from walrus_tasks.settings import get_settings

    submit(r, AGENT, sender, "hello")
    fence = start(r, sender)
    assert renew(r, fence, ttl=get_settings().dispatch_grace)  # what dispatch_step does
    lease_ms = r.pttl(keys.conv(fence.cid, "lease"))
    assert lease_ms > ttl_ms() * 2
    score = r.zscore(keys.conv_index("leases", fence.cid), fence.cid)
    assert score is not None and score > now_ms() + ttl_ms()
    assert fence.cid not in expired_conversations(r)


def test_a_drain_after_the_lease_expired_never_starts_the_next_message_over_the_active_run(
    r: redis.Redis, sender: str
) -> None:
    """docs/design.md, invariant 3: a dead worker's lease expired, the reaper has not come yet."""
    first = submit(r, AGENT, sender, "one").run_id
    dead = start(r, sender)
    cid = dead.cid
    r.delete(keys.conv(cid, "lease"))  # the lease expires, deterministically
    second = submit(r, AGENT, sender, "two").run_id
    acquired = acquire(r, AGENT, sender)
    assert acquired is not None and acquired.run_id is None and acquired.orphan == first
    assert r.get(keys.conv(cid, "active")) == first
    assert r.hget(keys.run(second), "status") == "queued", "the next message waits its turn"
    assert r.lrange(keys.conv(cid, "inbox"), 0, -1) == [second]
    taken = takeover(r, cid)  # what the drain does next, and the reaper at the latest
    assert taken is not None and taken.resume == first and taken.started is None
    resumed = Fence(AGENT, sender, first, taken.token)
    assert end(r, resumed) == second, "the inbox goes on once the orphan has ended"


def test_reject_sees_a_conversation_whose_active_run_lost_its_lease_as_busy(
    r: redis.Redis, sender: str
) -> None:
    from walrus_tasks.errors import Conflict

    submit(r, AGENT, sender, "one")
    fence = start(r, sender)
    r.delete(keys.conv(fence.cid, "lease"))
    with pytest.raises(Conflict):
        submit(r, AGENT, sender, "two", on_busy="reject")


def test_recovery_releases_only_unfinished_calls_and_only_under_the_lease(
    r: redis.Redis, sender: str
) -> None:
    submit(r, AGENT, sender, "hello")
    old = start(r, sender)
    calls = [{"id": f"c{i}", "name": "clock", "arguments": "{}"} for i in range(3)]
    r.hset(keys.run(old.run_id), "calls", json.dumps(calls))
    for call in calls:
        r.set(keys.run_call(old.run_id, "claim", call["id"]), "a worker")
    r.hset(keys.run_part(old.run_id, "results"), "c1", "done")
    r.delete(keys.conv(old.cid, "lease"))  # the worker was lost; another takes over
    taken = takeover(r, old.cid)
    assert taken is not None
    assert runs.release_calls(r, old) is None, "a fenced worker releases nothing"
    assert all(r.exists(keys.run_call(old.run_id, "claim", c["id"])) for c in calls)
    new = Fence(AGENT, sender, old.run_id, taken.token)
    assert runs.release_calls(r, new) == [0, 2]
    claimed = [c["id"] for c in calls if r.exists(keys.run_call(old.run_id, "claim", c["id"]))]
    assert claimed == ["c1"], "the finished call keeps its claim"
