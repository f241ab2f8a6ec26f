"""A thread's run read in one round trip (``gateway.thread_operations``), on one Redis and on a
cluster (``--state-on-cluster``): a join reads the thread, the run's Agent Protocol record and
its walrus record together (``thread_and_run``), a create writes its record and reads the run
together (``record_thread_run``); each answers what the reads one after the other answer. And
the same reads and writes on the event loop (``*_async``, a create's ``start_async``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from anyio import to_thread

from gateway import thread_operations as thread_ops
from gateway.agent_protocol import run_start, state
from gateway.agent_protocol.models import RunCreate
from tests.conftest import OnLoop
from walrus_tasks import durable, keys, topology
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.errors import Conflict, NotFound
from walrus_tasks.submit import new_run_id


def _thread_with_run(r: redis.Redis, tenant: str | None) -> tuple[dict[str, str], str]:
    """A thread of ``tenant`` with one run recorded, as a create leaves them."""
    tid = thread_ops.create_thread(r, tenant, None, {}, "raise")["thread_id"]
    h = thread_ops.get_thread(r, tenant, tid)
    run_id = new_run_id("echo", h["sender"])
    r.hset(
        keys.run(run_id),
        mapping={"run_id": run_id, "agent": "echo", "sender": h["sender"], "status": "queued"},
    )
    body = RunCreate(assistant_id="echo", metadata={"n": 1}, multitask_strategy="enqueue")
    view = state.record_run(r, run_id, h, "echo", body)
    assert view == state.run_view(r, run_id, h)  # the create's answer is the run as read
    assert view["metadata"] == {"n": 1} and view["status"] == "pending"
    return h, run_id


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_a_thread_and_its_run_read_together_as_one_after_the_other(
    r: redis.Redis, tenant: str | None
) -> None:
    h, run_id = _thread_with_run(r, tenant)
    tid = h["thread_id"]
    together = thread_ops.thread_and_run(r, tenant, tid, run_id)
    apart = thread_ops.get_thread(r, tenant, tid)
    assert together == (apart, *thread_ops.thread_run(r, run_id, apart))
    assert together[0]["sender"] == h["sender"] and together[1]["thread_id"] == tid


def test_what_is_not_the_threads_run_is_not_found_read_together(r: redis.Redis) -> None:
    h, run_id = _thread_with_run(r, None)
    other, other_run = _thread_with_run(r, None)
    tid = h["thread_id"]
    with pytest.raises(NotFound, match="thread"):  # no such thread
        thread_ops.thread_and_run(r, None, "00000000-0000-4000-8000-000000000000", run_id)
    with pytest.raises(NotFound, match="thread"):  # the thread is another tenant's id
        thread_ops.thread_and_run(r, "acme", tid, run_id)
    with pytest.raises(NotFound, match="run"):  # another thread's run
        thread_ops.thread_and_run(r, None, tid, other_run)
    with pytest.raises(NotFound, match="run"):  # no such run
        thread_ops.thread_and_run(r, None, tid, new_run_id("echo", h["sender"]))
    r.delete(keys.run(run_id))  # its walrus record gone (expired)
    with pytest.raises(NotFound, match="unknown run"):
        thread_ops.thread_and_run(r, None, tid, run_id)
    assert thread_ops.thread_and_run(r, None, other["thread_id"], other_run)[2]


# --- the same reads and writes on the event loop (a create and a join without a thread hop) --


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_on_the_event_loop_a_thread_and_its_run_read_as_on_a_thread(
    r: redis.Redis, on_loop: OnLoop, tenant: str | None
) -> None:
    h, run_id = _thread_with_run(r, tenant)
    tid = h["thread_id"]
    assert on_loop(lambda a: thread_ops.get_thread_async(a, tenant, tid)) == (
        thread_ops.get_thread(r, tenant, tid)
    )
    assert on_loop(lambda a: thread_ops.thread_and_run_async(a, tenant, tid, run_id)) == (
        thread_ops.thread_and_run(r, tenant, tid, run_id)
    )
    _, other_run = _thread_with_run(r, tenant)
    for ids, refused in [
        ((tid, other_run), "run"),  # another thread's run
        (("00000000-0000-4000-8000-000000000000", run_id), "thread"),  # no such thread
    ]:
        with pytest.raises(NotFound, match=refused):
            on_loop(lambda a, ids=ids: thread_ops.thread_and_run_async(a, tenant, *ids))
    with pytest.raises(NotFound, match="thread"):
        on_loop(lambda a: thread_ops.get_thread_async(a, "other", tid))


def test_a_run_recorded_on_the_event_loop_is_recorded_as_on_a_thread(
    r: redis.Redis, on_loop: OnLoop
) -> None:
    h, first = _thread_with_run(r, None)
    run_id = new_run_id("echo", h["sender"])
    r.hset(
        keys.run(run_id),
        mapping={"run_id": run_id, "agent": "echo", "sender": h["sender"], "status": "queued"},
    )
    body = RunCreate(assistant_id="echo", metadata={"n": 1}, multitask_strategy="enqueue")
    view = on_loop(lambda a: state.record_run_async(a, run_id, h, "echo", body))
    assert view == state.run_view(r, run_id, h)
    threaded = state.run_view(r, first, h)
    assert {k: v for k, v in view.items() if k not in ("run_id", "created_at", "updated_at")} == {
        k: v for k, v in threaded.items() if k not in ("run_id", "created_at", "updated_at")
    }
    assert r.lrange(keys.ap_thread_runs(h["thread_id"], None), 0, -1) == [first, run_id]


def test_a_threads_next_run_starts_on_the_event_loop_and_its_first_on_a_thread(
    r: redis.Redis, on_loop: OnLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create's ``start_async``: the first run binds the thread, on a thread; the next starts
    on the loop (its write too on one Redis: ``submit_async``)."""
    config = Config(home=tmp_path, agents={"echo": AgentConfig(name="echo")})
    tid = thread_ops.create_thread(r, None, None, {}, "raise")["thread_id"]
    hi = {"messages": [{"role": "user", "content": "hi"}]}
    body = RunCreate(assistant_id="echo", input=hi, multitask_strategy="enqueue")
    durable.connected_replicas(r)  # read: none (on a cluster submit_async writes on a thread)
    threaded: list[str] = []
    real_start = run_start.start

    def recorded(*args: object) -> run_start.Started:
        started = real_start(*args)  # type: ignore[arg-type]
        threaded.append(started.run_id)
        return started

    monkeypatch.setattr(run_start, "start", recorded)
    first = on_loop(lambda a: run_start.start_async(r, a, config, None, tid, body))
    assert threaded == [first.run_id] and first.thread["agent"] == "echo"
    if not topology.is_cluster(r):
        monkeypatch.setattr(to_thread, "run_sync", lambda *_: pytest.fail("on a thread"))
    second = on_loop(lambda a: run_start.start_async(r, a, config, None, tid, body))
    assert threaded == [first.run_id]
    assert second.view is not None and second.view["status"] == "pending"
    assert second.view == state.run_view(r, second.run_id, second.thread)
    assert r.lrange(keys.ap_thread_runs(tid, None), 0, -1) == [first.run_id, second.run_id]
    inbox = keys.conv(keys.cid("echo", second.thread["sender"]), "inbox")
    assert r.lrange(inbox, 0, -1) == [first.run_id, second.run_id]
    other = RunCreate(assistant_id="other", input=body.input)
    config = Config(home=tmp_path, agents={**config.agents, "other": AgentConfig(name="other")})
    with pytest.raises(Conflict, match="belongs to assistant 'echo'"):
        on_loop(lambda a: run_start.start_async(r, a, config, None, tid, other))
    assert threaded == [first.run_id]
