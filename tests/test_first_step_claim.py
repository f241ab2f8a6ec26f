"""A drain claims the step 0 of the run it starts in its own conversation in the same script;
so does the end of a run, for the conversation's next run, when its task asks.

``lua/acquire.lua`` starts the run and, given a claim id, claims its step 0 as
``lua/begin_step.lua`` does (``lua/lib/step.lua``), so the drain's task runs that step one round
trip sooner (``runs.acquire``'s ``first``). Scripts alone, on a database no worker serves. On
Redis Cluster (``--state-on-cluster``) the step's keys may be in another slot than the ones the
drain starts from: there the drain begins the step apart, as before.
"""

from __future__ import annotations

import time

import pytest
import redis

from walrus_tasks import keys, runs, submit, topology
from walrus_tasks.event_types import end
from walrus_tasks.lease import Fence, ttl_ms
from walrus_tasks.runs import HeldHistory, StepClaim, acquire

AGENT = "echo"
PIN = '{"name": "echo", "pinned": true}'


pytestmark = pytest.mark.usefixtures("no_drain_messages")


SPAN = "00f067aa0ba902b7"


def first(claim_id: str = "drain-claim") -> StepClaim:
    return StepClaim(claim_id, PIN, HeldHistory(), SPAN)


def begun_apart(r: redis.Redis, fence: Fence) -> runs.StepStart:
    """Step 0 of ``fence``'s run claimed by ``begin_step`` on its own, as ``first`` claims it."""
    return runs.begin_step(r, fence, 0, "drain-claim", PIN, HeldHistory(), step_span=SPAN)


def comparable(begun: runs.StepStart) -> dict[str, object]:
    """What a claim read, without what differs from run to run (ids, times, the span)."""
    volatile = {"run_id", "sender", "tenant", "created_at", "started_at", "step_span", "seq"}
    run_id = begun.record["run_id"]
    return {
        **vars(begun),
        "record": {k: v for k, v in begun.record.items() if k not in volatile},
        "history_tail": [m.replace(run_id, "<run>") for m in begun.history_tail or []],
    }


def test_the_drain_s_claim_of_step_0_is_the_one_begin_step_makes(
    r: redis.Redis, sender: str
) -> None:
    merged_sender, apart_sender = f"{sender}-merged", f"{sender}-apart"
    submit.submit(r, AGENT, merged_sender, "hello")
    merged = acquire(r, AGENT, merged_sender, first=first())
    submit.submit(r, AGENT, apart_sender, "hello")
    apart = acquire(r, AGENT, apart_sender)
    assert merged is not None and merged.run_id and merged.sender == merged_sender
    assert apart is not None and apart.run_id and apart.begun is None
    fence = Fence(AGENT, merged_sender, merged.run_id, merged.token)
    if topology.is_cluster(r):  # begun apart: the keys of the step may be in another slot
        assert merged.begun is None
        return
    assert merged.begun is not None and merged.begun.state == "ok"
    by_itself = begun_apart(r, Fence(AGENT, apart_sender, apart.run_id, apart.token))
    assert comparable(merged.begun) == comparable(by_itself)
    assert merged.begun.record["agent_config"] == PIN
    # The claim is held: another delivery of step 0 finds it busy, the drain's own goes on.
    assert runs.begin_step(r, fence, 0, "another", "", HeldHistory()).state == "busy"
    assert runs.begin_step(r, fence, 0, "drain-claim", "", HeldHistory()).state == "ok"


def test_a_drain_that_starts_another_conversation_claims_nothing_there(
    r: redis.Redis, sender: str
) -> None:
    """The fair pick starts the conversation that is due; the drain then begins its step apart."""
    due, own = f"{sender}-due", f"{sender}-own"
    submit.submit(r, AGENT, due, "first come")
    time.sleep(0.002)  # the dispatcher orders by the time a conversation became ready (ms)
    submit.submit(r, AGENT, own, "second")
    got = acquire(r, AGENT, own, first=first())
    assert got is not None and got.run_id
    assert got.sender == due and got.begun is None, "one tenant: first come, first served"
    fence = Fence(AGENT, due, got.run_id, got.token)
    begun = runs.begin_step(r, fence, 0, "its-step", "", HeldHistory())
    assert begun.state == "ok" and "agent_config" not in begun.record


def ended_with_next(
    r: redis.Redis, sender: str, last_step: bool, claim: StepClaim | None = None
) -> tuple[runs.Finished, Fence]:
    """A conversation's first run ended with a second message queued: how, and its fence.

    ``last_step``: its last step committed in the same step (``commit_final.lua``), else the
    run ended on its own (``finish.lua``, as a cancelled or failed run ends).
    """
    submit.submit(r, AGENT, sender, "hello")
    submit.submit(r, AGENT, sender, "and then")
    got = acquire(r, AGENT, sender)
    assert got is not None and got.run_id is not None
    fence = Fence(AGENT, sender, got.run_id, got.token)
    assert runs.begin(r, fence, 0, "llm", "delivery-1") == "ok"
    the_end = end("succeeded", {"input_tokens": 3, "output_tokens": 4}, "mock")
    message = {"role": "assistant", "content": "hi", "run_id": fence.run_id}
    last = runs.FinalStep(0, message, (3, 4), "mock", []) if last_step else None
    return runs.finish(r, fence, "succeeded", the_end, final=last, first=claim), fence


def after(begun: runs.StepStart, before: Fence) -> dict[str, object]:
    """``comparable``, with the id of the run before masked in the history too."""
    seen = comparable(begun)
    tail = [str(m) for m in seen["history_tail"]]  # type: ignore[attr-defined]
    return {**seen, "history_tail": [m.replace(before.run_id, "<before>") for m in tail]}


@pytest.mark.parametrize("last_step", [True, False])
def test_a_run_s_end_claims_the_next_run_s_step_0_as_begin_step_does(
    r: redis.Redis, sender: str, last_step: bool
) -> None:
    """``runs.finish``'s ``first`` (``worker/in_place.py``): the task that ends a run takes
    the next run's step 0 in the same step, on one Redis; on a cluster it begins it apart."""
    here, apart = f"{sender}-here", f"{sender}-apart"
    claimed, ended_here = ended_with_next(r, here, last_step, first())
    plain, ended_apart = ended_with_next(r, apart, last_step)
    assert claimed.state == plain.state == "ended" and plain.begun is None
    assert claimed.next_run and plain.next_run
    if topology.is_cluster(r):
        assert claimed.begun is None
        return
    assert claimed.begun is not None and claimed.begun.state == "ok"
    by_itself = begun_apart(r, Fence(AGENT, apart, plain.next_run, ended_apart.token))
    assert after(claimed.begun, ended_here) == after(by_itself, ended_apart)
    # The claim is held: a step task's delivery finds it busy, this task's own goes on; the
    # lease is back at its TTL, not the dispatch grace a queued step gets.
    fence = Fence(AGENT, here, claimed.next_run, ended_here.token)
    assert runs.begin_step(r, fence, 0, "another", "", HeldHistory()).state == "busy"
    assert runs.begin_step(r, fence, 0, "drain-claim", "", HeldHistory()).state == "ok"
    assert 0 < r.pttl(keys.conv(fence.cid, "lease")) <= ttl_ms()
