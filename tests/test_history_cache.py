"""A step reads only the history it does not hold yet, and never a stale copy of it.

``lua/begin_step.lua`` claims an LLM step and reads what it needs in one round trip;
``worker/history_cache.py`` keeps each conversation's history per worker process. Scripts
alone, on a database no worker serves.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from walrus_tasks import keys, runs
from walrus_tasks.conversations import seed
from walrus_tasks.lease import Fence, ttl_ms
from walrus_tasks.runs import acquire
from walrus_tasks.submit import new_run_id, submit
from worker import history_cache

AGENT = "echo"


def start(r: redis.Redis, sender: str, content: str) -> Fence:
    submit(r, AGENT, sender, content)
    acquired = acquire(r, AGENT, sender)
    assert acquired is not None and acquired.run_id is not None
    return Fence(AGENT, sender, acquired.run_id, acquired.token)


def begin(
    r: redis.Redis, fence: Fence, claim_id: str = "claim-1", pin: str = ""
) -> tuple[runs.StepStart, list[dict[str, Any]]]:
    begun = runs.begin_step(r, fence, 0, claim_id, pin, history_cache.held(fence.cid))
    assert begun.state == "ok"
    history, _ = history_cache.history(
        fence.cid, begun.history_len, begun.history_from, begun.history_tail or [], begun.epoch
    )
    return begun, history


def stored(r: redis.Redis, fence: Fence) -> list[dict[str, Any]]:
    return [json.loads(m) for m in r.lrange(keys.conv(fence.cid, "history"), 0, -1)]


def finish(r: redis.Redis, fence: Fence, reply: str) -> None:
    message = {"role": "assistant", "content": reply, "run_id": fence.run_id}
    assert runs.commit(r, fence, 0, message, "final", [], (1, 1), "mock") == "ok"
    done = runs.finish(r, fence, "succeeded", {"type": "end", "status": "succeeded"})
    assert done.state == "ended"


def test_a_step_reads_only_the_messages_appended_since_the_history_its_worker_holds(
    r: redis.Redis, sender: str
) -> None:
    prior = [{"role": "user", "content": f"m{i}", "run_id": "seed"} for i in range(50)]
    assert seed(r, AGENT, sender, prior)
    fence = start(r, sender, "one")
    begun, history = begin(r, fence)
    assert (begun.history_from, begun.history_len) == (0, 51)
    assert history == stored(r, fence)
    finish(r, fence, "answer one")

    fence = start(r, sender, "two")
    begun, history = begin(r, fence)
    assert begun.history_from == 51, "the held prefix is not sent again"
    assert [json.loads(m)["content"] for m in begun.history_tail or []] == ["answer one", "two"]
    assert history == stored(r, fence)


def test_a_history_rewritten_under_a_held_copy_is_read_again_whole(
    r: redis.Redis, sender: str
) -> None:
    """Rollback leaves the held copy's length, first and last message as they were (the last
    one repeated): only the epoch tells that its middle changed."""
    rolled = new_run_id(AGENT, sender)
    prior = [
        {"role": "user", "content": "first", "run_id": "seed"},
        {"role": "user", "content": "rolled back", "run_id": rolled},
    ]
    assert seed(r, AGENT, sender, prior)
    r.hset(keys.run(rolled), "status", "succeeded")
    fence = start(r, sender, "one")
    _, held = begin(r, fence)
    assert len(held) == 3
    history_key = keys.conv(fence.cid, "history")
    r.rpush(history_key, r.lindex(history_key, -1))  # the last message, once more
    assert runs.rollback(r, rolled, AGENT, sender) == 1

    begun, history = begin(r, fence)  # the same delivery (claim) begins again
    assert begun.history_from == 0
    assert history == stored(r, fence)
    assert [m["content"] for m in history] == ["first", "one", "one"]


def test_beginning_a_step_pins_the_config_renews_the_lease_and_reads_the_flags(
    r: redis.Redis, sender: str
) -> None:
    fence = start(r, sender, "one")
    lease = keys.conv(fence.cid, "lease")
    r.pexpire(lease, 60_000)  # the dispatch grace of a queued step
    r.set(keys.run_part(fence.run_id, "cancel"), "1")
    r.rpush(keys.run_part(fence.run_id, "steer"), "steer this way")
    begun, _ = begin(r, fence, pin='{"name": "pinned"}')
    assert begun.record["agent_config"] == '{"name": "pinned"}'
    assert begun.record["status"] == "running"
    assert begun.cancelled and begun.steering == 1 and not begun.memories
    assert 0 < r.pttl(lease) <= ttl_ms(), "back from the grace to the lease TTL"

    again = runs.begin_step(r, fence, 0, "claim-1", '{"name": "other"}', history_cache.held(""))
    assert again.record["agent_config"] == '{"name": "pinned"}', "the first pin holds"
    assert runs.begin_step(r, fence, 0, "claim-2", "", history_cache.held("")).state == "busy"


def test_a_process_holds_a_bounded_amount_of_history_the_least_recently_used_going_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history_cache, "MAX_CHARS", 1000)
    big = [json.dumps({"role": "user", "content": "x" * 400, "run_id": "r"})]
    history_cache.history("a:old", 1, 0, big, "")
    history_cache.history("a:new", 1, 0, big, "")
    assert history_cache.held("a:old").length == 1, "800 characters: both fit"
    history_cache.history("a:newest", 1, 0, big, "")
    assert history_cache.held("a:old").length == 0, "the least recently used went"
    assert history_cache.held("a:new").length == history_cache.held("a:newest").length == 1
    history_cache.history("a:huge", 1, 0, [json.dumps({"content": "y" * 5000})], "")
    assert history_cache.held("a:huge").length == 1, "the one just read stays, alone"
    assert history_cache.held("a:newest").length == 0


def test_the_characters_held_stay_the_sum_of_what_is_held_through_every_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(history_cache, "_held", type(history_cache._held)())
    monkeypatch.setattr(history_cache, "_chars", 0)
    monkeypatch.setattr(history_cache, "MAX_CHARS", 2000)
    monkeypatch.setattr(history_cache, "MAX_CONVERSATIONS", 3)

    def msg(n: int) -> str:
        return json.dumps({"role": "user", "content": "x" * n, "run_id": "r"})

    def consistent() -> None:
        held = history_cache._held.values()
        assert history_cache._chars == sum(h.chars for h in held)

    history_cache.history("a:1", 1, 0, [msg(300)], "")
    history_cache.history("a:1", 2, 1, [msg(200)], "")  # the new tail only
    consistent()
    history_cache.history("a:1", 2, 0, [msg(50), msg(60)], "e2")  # read whole again (a rewrite)
    consistent()
    assert history_cache._chars < 300, "the copy read whole replaced the one held"
    for cid in ("a:2", "a:3", "a:4"):  # past MAX_CONVERSATIONS: a:1 goes
        history_cache.history(cid, 1, 0, [msg(100)], "")
    consistent()
    assert history_cache.held("a:1").length == 0
    history_cache.history("a:5", 1, 0, [msg(1900)], "")  # past MAX_CHARS: the others go
    consistent()
    assert list(history_cache._held) == ["a:5"]
    with pytest.raises(ValueError):  # a tail that does not fit what is held: dropped
        history_cache.history("a:5", 3, 1, [msg(10)], "")
    consistent()
    assert history_cache._chars == 0
    history_cache.history("a:6", 1, 0, [msg(10)], "")
    history_cache.forget("a:6")
    consistent()
    assert history_cache._chars == 0
