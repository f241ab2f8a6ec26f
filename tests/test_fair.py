"""The fair dispatcher's pick order, at the Redis level: the Lua scripts alone, no worker.

``submit`` here sends no drain message (nothing serves this database); each ``acquire`` is what
one drain task does, whatever conversation its message names.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import redis

from tests.conftest import drains_off
from walrus_tasks import fair, keys, runs, submit
from walrus_tasks.config import AgentConfig, Config, TenantConfig
from walrus_tasks.lease import Fence, now_ms
from walrus_tasks.runs import acquire
from walrus_tasks.settings import get_settings

AGENT = "echo"


pytestmark = pytest.mark.usefixtures("no_drain_messages")


def send(r: redis.Redis, sender: str, agent: str = AGENT) -> str:
    return submit.submit(r, agent, sender, "m").run_id


def drain(r: redis.Redis, sender: str, shares: fair.Shares = fair.EVEN) -> runs.Acquired | None:
    return acquire(r, AGENT, sender, shares)


def started(r: redis.Redis, n: int, shares: fair.Shares = fair.EVEN) -> list[str]:
    """The senders of the conversations ``n`` drains start (each sent for sender ``x``)."""
    out = []
    for _ in range(n):
        got = drain(r, "x", shares)
        assert got is not None and got.run_id, f"nothing started after {out}"
        out.append(got.sender)
    return out


def tenants(senders: list[str]) -> str:
    return "".join(s.split(":", 1)[0] for s in senders)


def test_a_drain_starts_the_conversation_due_not_the_one_it_was_sent_for(r: redis.Redis) -> None:
    for i in range(5):
        send(r, f"a:{i}")
    assert started(r, 2) == ["a:0", "a:1"], "one tenant: first come, first served"
    send(r, "b:0")
    got = drain(r, "a:2")
    assert got is not None and got.run_id is not None
    assert (got.agent, got.sender) == (AGENT, "b:0"), "b's one run goes before a's backlog"
    assert r.hget(keys.run(got.run_id), "status") == "running"
    assert started(r, 3) == ["a:2", "a:3", "a:4"]
    assert drain(r, "a:4") is None, "nothing ready: a no-op"


def test_two_backlogged_tenants_take_turns(r: redis.Redis) -> None:
    for i in range(4):
        send(r, f"a:{i}")
    for i in range(4):
        send(r, f"b:{i}")
    assert tenants(started(r, 8)) == "abababab"


def test_weights_share_the_picks_two_to_one(r: redis.Redis) -> None:
    for i in range(9):
        send(r, f"a:{i}")
        send(r, f"b:{i}")
    config = Config(home=Path("."), tenants={"a": TenantConfig(weight=2)})
    order = tenants(started(r, 9, fair.shares(config)))
    assert (order.count("a"), order.count("b")) == (6, 3), order


def test_a_tenant_that_was_idle_joins_at_the_clock_and_banks_no_credit(r: redis.Redis) -> None:
    for i in range(10):
        send(r, f"a:{i}")
    assert tenants(started(r, 6)) == "aaaaaa"
    for i in range(3):
        send(r, f"b:{i}")
    assert tenants(started(r, 6)) == "bababa", "b is served at once, then in turn, not 3 in a row"


def test_a_higher_priority_agent_goes_first_within_its_tenant(r: redis.Redis) -> None:
    for i in range(3):
        send(r, f"t:lo-{i}", agent="lo")
    for i in range(2):
        send(r, f"t:hi-{i}", agent="hi")
    config = Config(
        home=Path("."),
        agents={"hi": AgentConfig(name="hi", priority=5), "lo": AgentConfig(name="lo")},
    )
    assert json.loads(fair.shares(config).priorities) == {"hi": 5}
    got = [acquire(r, "lo", "t:lo-0", fair.shares(config)) for _ in range(5)]
    assert [g.sender for g in got if g] == ["t:hi-0", "t:hi-1", "t:lo-0", "t:lo-1", "t:lo-2"]


def test_a_conversation_that_can_no_longer_start_is_dropped_from_the_dispatcher(
    r: redis.Redis,
) -> None:
    send(r, "a:0")
    send(r, "a:1")
    r.set(keys.conv("echo:a:0", "lease"), "someone")  # started meanwhile by another path
    assert started(r, 1) == ["a:1"]
    assert r.zcard(keys.fair_ready("a", AGENT)) == 0
    assert drain(r, "a:1") is None


def test_with_fair_dispatch_off_a_drain_starts_its_own_conversation(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WALRUS_FAIR_DISPATCH", "0")
    get_settings.cache_clear()
    try:
        for i in range(3):
            send(r, f"a:{i}")
        send(r, "b:0")
        got = drain(r, "a:2")
        assert got is not None and got.sender == "a:2"
        assert r.zscore(keys.fair_ready("a", AGENT), "echo:a:2") is None, "taken off"
        got = drain(r, "b:0")
        assert got is not None and got.sender == "b:0"
        assert r.zscore(keys.FAIR_TENANTS, "b") is None, "its tenant has nothing ready left"
    finally:
        monkeypatch.delenv("WALRUS_FAIR_DISPATCH")
        get_settings.cache_clear()


def test_the_reaper_resends_a_drain_only_once_no_drain_picks(r: redis.Redis) -> None:
    send(r, "a:0")
    send(r, "b:0")
    cids = ["echo:a:0", "echo:b:0"]
    assert sorted(fair.reap(r, cids)) == cids, "nothing picked for long: both lost their drain"
    r.hset(keys.FAIR_CLOCK, "picked_at", now_ms())
    assert fair.reap(r, cids) == [], "drains are picking: their messages are still queued"
    r.delete(keys.fair_ready("b", AGENT))  # the dispatcher lost b:0 (say, data from before it)
    assert fair.reap(r, cids) == ["echo:b:0"], "marked ready again, and a drain sent for it"
    assert r.zscore(keys.fair_ready("b", AGENT), "echo:b:0") is not None


def test_random_submits_drains_and_finishes_strand_nothing_and_keep_each_order(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invariants 1, 2 and 4 with the dispatcher in between: many conversations, any order.

    Only the drain messages ``submit`` really sends are taken: a message to a busy conversation
    sends none, and is started by the end of the run before it.
    """
    rng = random.Random(11)
    senders = ["a:0", "a:1", "a:2", "b:0", "c:0"]
    submitted: dict[str, list[str]] = {s: [] for s in senders}
    finished: dict[str, list[str]] = {s: [] for s in senders}
    holders: dict[str, Fence] = {}
    messages = 0  # drain messages sent and not yet taken
    drains = 0

    def sent(agent: str, sender: str, run_id: str | None = None) -> None:
        nonlocal messages, drains
        messages += 1
        drains += 1

    drains_off(monkeypatch, sent)

    def end(fence: Fence) -> None:
        finished[fence.sender].append(fence.run_id)
        done = runs.finish(r, fence, "succeeded", {"type": "end", "status": "succeeded"})
        assert done.state == "ended"
        if done.next_run:
            holders[fence.sender] = Fence(AGENT, fence.sender, done.next_run, fence.token)
        else:
            del holders[fence.sender]

    def take() -> None:
        nonlocal messages
        messages -= 1
        got = drain(r, rng.choice(senders))
        if got is not None and got.run_id:
            assert got.sender not in holders, "a drain started a conversation with a live run"
            holders[got.sender] = Fence(AGENT, got.sender, got.run_id, got.token)

    def check_ready() -> None:
        for s in senders:
            cid = keys.cid(AGENT, s)
            startable = s not in holders and r.llen(keys.conv(cid, "inbox")) > 0
            marked = r.zscore(keys.fair_ready(s.split(":")[0], AGENT), cid) is not None
            assert marked == startable, f"{s}: startable {startable}, in the dispatcher {marked}"

    for _ in range(3000):
        move = rng.choice(["submit", "drain", "finish"])
        if move == "submit":
            s = rng.choice(senders)
            submitted[s].append(send(r, s))
        elif move == "drain" and messages:
            take()
        elif move == "finish" and holders:
            end(holders[rng.choice(sorted(holders))])
        check_ready()
    while messages or holders:
        if messages:
            take()
        else:
            end(holders[sorted(holders)[0]])
        check_ready()
    assert finished == submitted, "every message ran once, in its conversation's order"
    total = sum(map(len, submitted.values()))
    assert drains < total / 2, f"{drains} drain messages for {total} messages: busy ones sent one"
