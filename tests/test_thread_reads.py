"""A thread's run read in one round trip (``gateway.thread_operations``), on one Redis and on a
cluster (``--state-on-cluster``): a join reads the thread, the run's Agent Protocol record and
its walrus record together (``thread_and_run``), a create writes its record and reads the run
together (``record_thread_run``); each answers what the reads one after the other answer. And
the same reads and writes on the event loop (``*_async``, a create's ``start_async``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from anyio import to_thread

from gateway import thread_operations as thread_ops
from gateway.agent_protocol import run_start, state
from gateway.agent_protocol.models import RunCreate
from tests.conftest import OnLoop
from walrus_tasks import durable, keys, scripts, topology
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.errors import Conflict, NotFound
from walrus_tasks.submit import Guarded, new_run_id, submit_async


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
    fields = state.asked("echo", body)
    record = on_loop(lambda a: thread_ops.record_thread_run_async(a, run_id, h, fields))
    view = state.recorded_view(run_id, h, fields, record)
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
    on the loop, in one round trip, on one Redis (on a cluster, on a thread as the first)."""
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
    on_thread = [first.run_id, *([second.run_id] if topology.is_cluster(r) else [])]
    assert threaded == on_thread
    assert second.view is not None and second.view["status"] == "pending"
    assert second.view == state.run_view(r, second.run_id, second.thread)
    assert r.lrange(keys.ap_thread_runs(tid, None), 0, -1) == [first.run_id, second.run_id]
    inbox = keys.conv(keys.cid("echo", second.thread["sender"]), "inbox")
    assert r.lrange(inbox, 0, -1) == [first.run_id, second.run_id]
    monkeypatch.undo()  # a create the guard refuses is answered on a thread, as the first
    other = RunCreate(assistant_id="other", input=body.input)
    config = Config(home=tmp_path, agents={**config.agents, "other": AgentConfig(name="other")})
    with pytest.raises(Conflict, match="belongs to assistant 'echo'"):
        on_loop(lambda a: run_start.start_async(r, a, config, None, tid, other))
    assert threaded == on_thread  # nothing started


HI = {"messages": [{"role": "user", "content": "hi"}]}


def _bound_thread(r: redis.Redis, on_loop: OnLoop, config: Config) -> tuple[str, str]:
    """A thread whose assistant is ``echo`` (its first run started): its id and that run."""
    tid = thread_ops.create_thread(r, None, None, {}, "raise")["thread_id"]
    body = RunCreate(assistant_id="echo", input=HI, multitask_strategy="enqueue")
    first = on_loop(lambda a: run_start.start_async(r, a, config, None, tid, body))
    return tid, first.run_id


@pytest.fixture
def echo_config(tmp_path: Path) -> Config:
    return Config(home=tmp_path, agents={"echo": AgentConfig(name="echo")})


def _one_redis(r: redis.Redis) -> None:
    if topology.is_cluster(r):
        pytest.skip("on a cluster a create's submit and record are written on a thread")
    durable.connected_replicas(r)  # read: none, so submit_async writes on the loop


def test_a_create_on_the_loop_records_its_run_in_the_submits_round_trip(
    r: redis.Redis, on_loop: OnLoop, echo_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ap_record.lua`` (sent along with submit.lua) writes what ``record_thread_run`` writes."""
    _one_redis(r)
    tid, first = _bound_thread(r, on_loop, echo_config)
    threaded_record = r.hgetall(keys.ap_run(first))
    monkeypatch.setattr(
        thread_ops, "record_thread_run_async", lambda *_: pytest.fail("a round trip of its own")
    )
    body = RunCreate(assistant_id="echo", input=HI, multitask_strategy="enqueue")
    second = on_loop(lambda a: run_start.start_async(r, a, echo_config, None, tid, body))
    assert r.hgetall(keys.ap_run(second.run_id)) == threaded_record
    assert r.lrange(keys.ap_thread_runs(tid, None), 0, -1) == [first, second.run_id]
    assert second.view == state.run_view(r, second.run_id, second.thread)
    assert r.hget(keys.ap_thread(tid, None), "updated_at") >= r.hget(keys.run(first), "created_at")


def test_a_refused_create_on_the_loop_records_nothing(
    r: redis.Redis, on_loop: OnLoop, echo_config: Config
) -> None:
    """``reject`` on a busy thread: Conflict, and the record sent along wrote nothing."""
    _one_redis(r)
    tid, first = _bound_thread(r, on_loop, echo_config)  # queued: the thread is busy
    ap_runs = {k for k in r.scan_iter(keys.ap_run("*"))}
    body = RunCreate(assistant_id="echo", input=HI, multitask_strategy="reject")
    with pytest.raises(Conflict):
        on_loop(lambda a: run_start.start_async(r, a, echo_config, None, tid, body))
    assert r.lrange(keys.ap_thread_runs(tid, None), 0, -1) == [first]
    assert {k for k in r.scan_iter(keys.ap_run("*"))} == ap_runs


@pytest.mark.parametrize("kept", [(), ("submit",)])
def test_a_create_on_the_loop_after_redis_lost_its_scripts_loads_them_and_records_once(
    r: redis.Redis,
    on_loop: OnLoop,
    echo_config: Config,
    monkeypatch: pytest.MonkeyPatch,
    kept: tuple[str, ...],
) -> None:
    """``NOSCRIPT`` (a restart, a failover; or submit.lua loaded by another path and not
    ``ap_record.lua``): the scripts are loaded and what did not run is sent again, on the loop."""
    _one_redis(r)
    tid, first = _bound_thread(r, on_loop, echo_config)
    body = RunCreate(assistant_id="echo", input=HI, multitask_strategy="enqueue")
    r.script_flush()
    for name in kept:
        r.script_load(scripts.source(name))
    monkeypatch.setattr(to_thread, "run_sync", lambda *_: pytest.fail("on a thread"))
    second = on_loop(lambda a: run_start.start_async(r, a, echo_config, None, tid, body))
    assert r.lrange(keys.ap_thread_runs(tid, None), 0, -1) == [first, second.run_id]
    assert second.view == state.run_view(r, second.run_id, second.thread)
    inbox = keys.conv(keys.cid("echo", second.thread["sender"]), "inbox")
    assert r.lrange(inbox, 0, -1) == [first, second.run_id]  # submitted once


def test_ap_record_writes_once_and_only_for_a_run_of_the_threads_conversation(
    r: redis.Redis, on_loop: OnLoop
) -> None:
    _one_redis(r)
    h, first = _thread_with_run(r, None)
    tid = h["thread_id"]
    run_id = new_run_id("echo", h["sender"])
    along = thread_ops.record_along({**h, "agent": "echo"}, {"assistant_id": "echo"})

    async def send(a: aioredis.Redis) -> tuple[dict[str, str] | None, dict[str, str]]:
        pipe = a.pipeline(transaction=False)
        along.queue(pipe, run_id)
        return thread_ops.recorded(list(await pipe.execute()), None, tid)

    assert on_loop(send) == (None, thread_ops.get_thread(r, None, tid))  # no such run
    assert not r.exists(keys.ap_run(run_id))
    r.hset(keys.run(run_id), mapping={"run_id": run_id, "sender": "someone else"})
    assert on_loop(send)[0] is None  # another conversation's run: nothing written
    r.hset(keys.run(run_id), "sender", h["sender"])
    for _ in range(2):
        assert on_loop(send)[0] == r.hgetall(keys.run(run_id))
    assert r.lrange(keys.ap_thread_runs(tid, None), 0, -1) == [first, run_id]
    assert r.hgetall(keys.ap_run(run_id)) == {"thread_id": tid, "assistant_id": "echo"}


@pytest.mark.parametrize("case", ["another assistant's", "deleted"])
def test_a_create_on_the_loop_writes_nothing_unless_its_thread_is_its_assistants(
    r: redis.Redis, on_loop: OnLoop, echo_config: Config, case: str
) -> None:
    """The submit's guard: checked in the step that writes, so a thread that is not (or no
    longer) the run's assistant's gets no message, however the create raced its change."""
    _one_redis(r)
    tid, first = _bound_thread(r, on_loop, echo_config)
    h = thread_ops.get_thread(r, None, tid)
    if case == "deleted":
        r.delete(keys.ap_thread(tid, None))
        agent = "echo"
    else:
        agent = "other"
    along = thread_ops.record_along(thread_ops.thread_as_bound(None, tid, agent), {})
    with pytest.raises(Guarded):
        on_loop(
            lambda a: submit_async(
                a, r, agent, h["sender"], "hi", "enqueue", cancel_queued=True, along=along
            )
        )
    assert r.lrange(keys.ap_thread_runs(tid, None), 0, -1) == [first]
    for name in ("echo", "other"):
        inbox = keys.conv(keys.cid(name, h["sender"]), "inbox")
        assert r.lrange(inbox, 0, -1) == ([first] if name == "echo" else [])
