"""A thread's run read in one round trip (``gateway.thread_operations``), on one Redis and on a
cluster (``--state-on-cluster``): a join reads the thread, the run's Agent Protocol record and
its walrus record together (``thread_and_run``), a create writes its record and reads the run
together (``record_thread_run``); each answers what the reads one after the other answer. And
the same reads and writes on the event loop (``*_async``, a create's ``start_async``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from anyio import to_thread

from gateway import run_interrupts, thread_bindings, thread_joins, thread_records, thread_state
from gateway import thread_operations as thread_ops
from gateway.agent_protocol import messages, run_start, state, streaming
from gateway.agent_protocol import runs as ap_runs
from gateway.agent_protocol import threads as ap_threads
from gateway.agent_protocol.models import RunCreate, Search, ThreadCreate, ThreadPatch
from gateway.thread_state import ThreadState
from tests.conftest import OnLoop
from tests.test_hub import running_hub
from walrus_tasks import durable, keys, reads, scripts, topology
from walrus_tasks import script_args as S
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.errors import Conflict, InvalidInput, NotFound
from walrus_tasks.submit import Guarded, new_run_id, submit_async


def _index(r: redis.Redis, tenant: str | None) -> list[str]:
    """Every thread id of ``tenant`` in its index, oldest first."""
    return r.zrange(keys.ap_threads(tenant), 0, -1)  # type: ignore[return-value]


# --- the oracle: a thread's state read key by key, one round trip after the other ------------


def _status(r: redis.Redis, h: dict[str, str]) -> tuple[str, list[dict[str, Any]]]:
    """``idle | busy | interrupted | error`` of thread ``h``, and its pending interrupts."""
    active = thread_ops.thread_active_run(r, h)
    if active:
        interrupts = run_interrupts.pending_interrupts(r, active)
        return ("interrupted" if interrupts else "busy"), interrupts
    if h.get("agent") and r.llen(keys.conv(keys.cid(h["agent"], h["sender"]), "inbox")):
        return "busy", []
    last = _last_run(r, h)
    if last and r.hget(keys.run(last), "status") == "failed":
        return "error", []
    return "idle", []


def _history(r: redis.Redis, h: dict[str, str]) -> list[dict[str, Any]]:
    """The messages of thread ``h``'s conversation (none before its first run)."""
    return reads.history(r, h["agent"], h["sender"]) if h.get("agent") else []


def _last_run(r: redis.Redis, h: dict[str, str]) -> str | None:
    """The id of thread ``h``'s latest run, or None."""
    return r.lindex(keys.ap_thread_runs(h["thread_id"], h["tenant"] or None), -1)  # type: ignore[return-value]


def _view(r: redis.Redis, h: dict[str, str]) -> dict[str, Any]:
    """The thread as the Agent Protocol shows it, from :func:`_status` and :func:`_history`."""
    status, interrupts = _status(r, h)
    return state._thread_view(h, status, state._values(_history(r, h)), interrupts)


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


@pytest.mark.parametrize("tenant", [None, "acme"])
@pytest.mark.parametrize("meta", [{"team": "red"}, {"graph_id": "echo", "team": "red"}])
def test_a_thread_made_on_the_loop_is_stored_as_one_made_on_a_thread(
    r: redis.Redis,
    on_loop: OnLoop,
    monkeypatch: pytest.MonkeyPatch,
    tenant: str | None,
    meta: dict[str, Any],
) -> None:
    threaded = thread_ops.create_thread(r, tenant, None, meta, "raise")
    monkeypatch.setattr(to_thread, "run_sync", _no_thread)
    h, bare = on_loop(lambda a: thread_ops.create_thread_async(a, tenant, None, meta, "raise"))
    varying = {"thread_id", "sender", "created_at", "updated_at"}
    assert {k: v for k, v in h.items() if k not in varying} == {
        k: v for k, v in threaded.items() if k not in varying
    }
    assert h == thread_ops.get_thread(r, tenant, h["thread_id"])
    assert bare == ("graph_id" not in meta), "bare: no assistant, no runs"
    if bare:
        assert state.new_thread_view(h) == _view(r, h)
    tid = h["thread_id"]
    made = {"thread_id": tid, "metadata": meta, "if_exists": "do_nothing"}
    assert on_loop(lambda a: ap_threads.create_thread(ThreadCreate(**made), a, tenant)) == (
        _view(r, h)
    ), "asked again to make it, with do_nothing: the thread as it is"
    assert set(_index(r, tenant)) == {tid, threaded["thread_id"]}
    stored = r.hgetall(keys.ap_thread(tid, tenant))
    with pytest.raises(Conflict, match="exists"):
        on_loop(lambda a: thread_ops.create_thread_async(a, tenant, tid, {"x": 1}, "raise"))
    assert r.hgetall(keys.ap_thread(tid, tenant)) == stored, "a thread there is left as it is"
    assert stored == {k: v for k, v in h.items() if k not in ("tenant", "sender")}


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_a_thread_patched_on_the_loop_merges_its_metadata_and_shows_its_state(
    r: redis.Redis, on_loop: OnLoop, monkeypatch: pytest.MonkeyPatch, tenant: str | None
) -> None:
    h = _in_state(r, tenant, "asking")
    tid, before = h["thread_id"], json.loads(h["metadata"])
    monkeypatch.setattr(to_thread, "run_sync", _no_thread)
    body = ThreadPatch(metadata={"team": "blue", "graph_id": "echo"})
    view = on_loop(lambda a: ap_threads.patch_thread(tid, body, a, tenant))
    patched = thread_ops.get_thread(r, tenant, tid)
    assert json.loads(patched["metadata"]) == {**before, "team": "blue", "graph_id": "echo"}
    assert int(patched["updated_at"]) >= int(h["updated_at"])
    assert view == _view(r, patched) and view["status"] == "interrupted"
    for other_tenant, other_id in (("other", tid), (tenant, "no-such-thread")):
        with pytest.raises(NotFound, match="thread"):
            on_loop(lambda a, t=other_tenant, i=other_id: ap_threads.patch_thread(i, body, a, t))
    assert thread_ops.get_thread(r, tenant, tid) == patched, "a refused patch changes nothing"


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_a_thread_deleted_on_the_loop_leaves_no_key_and_a_busy_one_is_left_whole(
    r: redis.Redis, on_loop: OnLoop, monkeypatch: pytest.MonkeyPatch, tenant: str | None
) -> None:
    idle, busy, unbound = (_in_state(r, tenant, kind) for kind in ("idle", "active", "unbound"))
    runs = r.lrange(keys.ap_thread_runs(idle["thread_id"], tenant), 0, -1)
    assert runs and r.exists(keys.conv(keys.cid("echo", idle["sender"]), "history"))
    busy_keys = {k: r.type(k) for k in r.scan_iter("*") if busy["thread_id"] in k}
    monkeypatch.setattr(to_thread, "run_sync", _no_thread)
    for h in (idle, unbound):
        on_loop(lambda a, h=h: ap_threads.delete_thread(h["thread_id"], a, tenant))
        assert h["thread_id"] not in _index(r, tenant)
    assert not r.exists(
        keys.ap_thread(idle["thread_id"], tenant),
        keys.ap_thread_runs(idle["thread_id"], tenant),
        *map(keys.ap_run, runs),
        keys.conv(keys.cid("echo", idle["sender"]), "history"),
    )
    with pytest.raises(Conflict, match="active"):
        on_loop(lambda a: ap_threads.delete_thread(busy["thread_id"], a, tenant))
    assert {k: r.type(k) for k in r.scan_iter("*") if busy["thread_id"] in k} == busy_keys
    assert busy["thread_id"] in _index(r, tenant)
    for other_tenant, other_id in (("other", busy["thread_id"]), (tenant, idle["thread_id"])):
        with pytest.raises(NotFound, match="thread"):
            on_loop(lambda a, t=other_tenant, i=other_id: ap_threads.delete_thread(i, a, t))


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


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_a_threads_runs_and_one_run_are_read_on_the_event_loop_as_each_apart(
    r: redis.Redis, on_loop: OnLoop, monkeypatch: pytest.MonkeyPatch, tenant: str | None
) -> None:
    h, first = _thread_with_run(r, tenant)
    tid = h["thread_id"]
    second, expired = (_another_run(r, h) for _ in range(2))
    r.delete(keys.run(expired))  # its record expired: left out, as the threaded list left it
    _, other_threads = _thread_with_run(r, tenant)
    r.rpush(keys.ap_thread_runs(tid, tenant), other_threads)  # not this thread's: left out
    monkeypatch.setattr(to_thread, "run_sync", _no_thread)
    assert on_loop(lambda a: thread_state.thread_runs(a, h)) == [
        (run_id, *thread_ops.thread_run(r, run_id, h)) for run_id in (first, second)
    ]
    listed = on_loop(lambda a: ap_runs.list_runs(tid, a, tenant))
    assert listed == [state.run_view(r, run_id, h) for run_id in (second, first)]
    assert on_loop(lambda a: ap_runs.list_runs(tid, a, tenant, limit=1, offset=1)) == listed[1:]
    assert on_loop(lambda a: ap_runs.list_runs(tid, a, tenant, status="success")) == []
    assert on_loop(lambda a: ap_runs.get_run(tid, second, a, tenant)) == listed[0]
    for run_id in (expired, other_threads):
        with pytest.raises(NotFound):
            on_loop(lambda a, run_id=run_id: ap_runs.get_run(tid, run_id, a, tenant))
    with pytest.raises(NotFound, match="thread"):
        on_loop(lambda a: ap_runs.list_runs(tid, a, "other"))


def _in_state(r: redis.Redis, tenant: str | None, kind: str) -> dict[str, str]:
    """A thread in state ``kind``, written as the runs and the conversation leave it."""
    if kind == "unbound":
        return thread_ops.create_thread(r, tenant, None, {}, "raise")
    h, run_id = _thread_with_run(r, tenant)
    thread_ops.bind_thread(r, h, "echo")
    h = thread_ops.get_thread(r, tenant, h["thread_id"])
    cid = keys.cid("echo", h["sender"])
    said = [{"role": "user", "content": "hi", "run_id": run_id}]
    r.rpush(keys.conv(cid, "history"), *(json.dumps(m) for m in said))
    if kind in ("active", "asking"):
        r.set(keys.conv(cid, "active"), run_id)
    if kind == "asking":  # parked on a question, and one more it answered before
        for call, q in (("c1", "first?"), ("c2", "which one?")):
            ask = {"type": "ask_user", "call_id": call, "question": q}
            r.xadd(keys.run_part(run_id, "events"), {"data": json.dumps(ask)})
        r.hset(keys.run_part(run_id, "waits"), "c2", json.dumps({"kind": "ask"}))
    if kind == "queued":
        r.rpush(keys.conv(cid, "inbox"), _another_run(r, h))
    if kind == "failed":
        r.hset(keys.run(run_id), "status", "failed")
    return thread_ops.get_thread(r, tenant, h["thread_id"])


@pytest.mark.parametrize("tenant", [None, "acme"])
@pytest.mark.parametrize("kind", ["unbound", "idle", "active", "asking", "queued", "failed"])
def test_a_threads_view_and_state_read_on_the_event_loop_as_on_a_thread(
    r: redis.Redis,
    on_loop: OnLoop,
    monkeypatch: pytest.MonkeyPatch,
    tenant: str | None,
    kind: str,
) -> None:
    h = _in_state(r, tenant, kind)
    status, interrupts = _status(r, h)
    assert status == {"unbound": "idle", "idle": "idle", "active": "busy", "asking": "interrupted",
                      "queued": "busy", "failed": "error"}[kind]  # fmt: skip
    assert (kind == "asking") == bool(interrupts)
    threaded = ThreadState(status, interrupts, _history(r, h), _last_run(r, h))
    view = _view(r, h)
    monkeypatch.setattr(to_thread, "run_sync", _no_thread)
    assert on_loop(lambda a: thread_state.read(a, h)) == threaded
    assert on_loop(lambda a: state.thread_view_async(a, h)) == view
    tid = h["thread_id"]
    assert on_loop(lambda a: ap_threads.get_thread(tid, a, tenant)) == view
    got = on_loop(lambda a: ap_threads.get_state(tid, a, tenant))
    assert got["values"] == view["values"] and got["interrupts"] == interrupts
    assert got["checkpoint"]["checkpoint_id"] == threaded.last_run
    assert on_loop(lambda a: ap_threads.get_history(tid, a, tenant, {"limit": 5})) == [got]


KINDS = ["unbound", "idle", "active", "asking", "queued", "failed"]


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_many_threads_read_together_as_each_alone_and_searched_as_one_after_the_other(
    r: redis.Redis, on_loop: OnLoop, tenant: str | None
) -> None:
    threads = [_in_state(r, tenant, kind) for kind in KINDS * 2]
    gone = thread_ops.create_thread(r, tenant, None, {}, "raise")
    r.delete(keys.ap_thread(gone["thread_id"], tenant))  # deleted, still in the index a moment
    together = on_loop(lambda a: thread_state.read_many(a, threads))
    assert together == [on_loop(lambda a, h=h: thread_state.read(a, h)) for h in threads]
    assert [t.status for t in together] == [
        "idle", "idle", "busy", "interrupted", "busy", "error"
    ] * 2  # fmt: skip
    listed = on_loop(lambda a: thread_state.threads(a, tenant))
    assert listed == [
        thread_ops.get_thread(r, tenant, tid)
        for tid in _index(r, tenant)
        if tid != gone["thread_id"]
    ]
    by_id = {h["thread_id"]: h for h in threads}
    views = {  # in the index's order, as a search reads them
        tid: _view(r, by_id[tid]) for tid in _index(r, tenant) if tid in by_id
    }
    for search in [
        Search(),
        Search(status="busy", limit=3),
        Search(metadata={"graph_id": "echo"}, sort_order="asc", offset=2, limit=5),
        Search(ids=[threads[0]["thread_id"], threads[3]["thread_id"]]),
    ]:
        want = [v for v in views.values() if ap_threads._matches(v, search)]
        want.sort(key=lambda v: v["created_at"], reverse=search.sort_order != "asc")
        got = on_loop(lambda a, search=search: ap_threads.search_threads(search, a, tenant))
        assert got == want[search.offset : search.offset + search.limit], search
        counted = on_loop(lambda a, search=search: ap_threads.count_threads(search, a, tenant))
        assert counted == len(want)
    assert on_loop(lambda a: thread_state.read_many(a, [])) == []


def test_a_threads_state_read_after_redis_lost_the_history_script_loads_it(
    r: redis.Redis, on_loop: OnLoop
) -> None:
    _one_redis(r)
    h = _in_state(r, None, "idle")
    r.script_flush()
    assert on_loop(lambda a: thread_state.read(a, h)).history == _history(r, h)


def _another_run(r: redis.Redis, h: dict[str, str]) -> str:
    """One more run recorded on thread ``h``, as a create records it."""
    run_id = new_run_id("echo", h["sender"])
    r.hset(
        keys.run(run_id),
        mapping={"run_id": run_id, "agent": "echo", "sender": h["sender"], "status": "queued"},
    )
    state.record_run(r, run_id, h, "echo", RunCreate(assistant_id="echo"))
    return run_id


def _no_thread(*_: Any, **__: Any) -> Any:
    pytest.fail("on a thread")


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
    record = on_loop(lambda a: thread_records.record_thread_run_async(a, run_id, h, fields))
    view = state.recorded_view(run_id, h, fields, record)
    assert view == state.run_view(r, run_id, h)
    threaded = state.run_view(r, first, h)
    assert {k: v for k, v in view.items() if k not in ("run_id", "created_at", "updated_at")} == {
        k: v for k, v in threaded.items() if k not in ("run_id", "created_at", "updated_at")
    }
    assert r.lrange(keys.ap_thread_runs(h["thread_id"], None), 0, -1) == [first, run_id]


def _starts_on_a_thread(
    monkeypatch: pytest.MonkeyPatch, into: list[str] | None = None
) -> list[str]:
    """The runs ``run_start.start`` starts from now on (on a thread), listed in ``into``."""
    threaded = [] if into is None else into
    real_start = run_start.start

    def recorded(*args: object) -> run_start.Started:
        started = real_start(*args)  # type: ignore[arg-type]
        threaded.append(started.run_id)
        return started

    monkeypatch.setattr(run_start, "start", recorded)
    return threaded


def test_a_threads_runs_start_on_the_event_loop_its_first_binding_it(
    r: redis.Redis, on_loop: OnLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create's ``start_async``: on one Redis every run starts on the loop in one round trip,
    the first binding the thread as ``bind_thread`` does; on a cluster each starts on a thread.
    A create for another assistant is refused by the guard and answered on a thread."""
    config = Config(home=tmp_path, agents={"echo": AgentConfig(name="echo")})
    tid = thread_ops.create_thread(r, None, None, {}, "raise")["thread_id"]
    twin = thread_ops.create_thread(r, None, None, {}, "raise")  # bound as a thread binds it
    thread_ops.bind_thread(r, twin, "echo")
    body = RunCreate(assistant_id="echo", input=HI, multitask_strategy="enqueue")
    durable.connected_replicas(r)  # read: none (on a cluster submit_async writes on a thread)
    thread_bindings.forget_all()
    threaded = _starts_on_a_thread(monkeypatch)
    if not topology.is_cluster(r):
        monkeypatch.setattr(to_thread, "run_sync", lambda *_: pytest.fail("on a thread"))
    first = on_loop(lambda a: run_start.start_async(r, a, config, None, tid, body))
    second = on_loop(lambda a: run_start.start_async(r, a, config, None, tid, body))
    on_thread = [first.run_id, second.run_id] if topology.is_cluster(r) else []
    assert threaded == on_thread
    assert first.thread["agent"] == "echo"
    stored = r.hgetall(keys.ap_thread(tid, None))
    assert {k: stored[k] for k in ("agent", "metadata")} == {
        k: r.hget(keys.ap_thread(twin["thread_id"], None), k) for k in ("agent", "metadata")
    }
    assert json.loads(stored["metadata"]) == {"graph_id": "echo", "assistant_id": "echo"}
    for started in (first, second):
        assert started.view is not None and started.view["status"] == "pending"
        assert started.view == state.run_view(r, started.run_id, started.thread)
    assert r.lrange(keys.ap_thread_runs(tid, None), 0, -1) == [first.run_id, second.run_id]
    inbox = keys.conv(keys.cid("echo", second.thread["sender"]), "inbox")
    assert r.lrange(inbox, 0, -1) == [first.run_id, second.run_id]
    monkeypatch.undo()  # a create the guard refuses is answered on a thread
    threaded = _starts_on_a_thread(monkeypatch, threaded)
    other = RunCreate(assistant_id="other", input=body.input)
    config = Config(home=tmp_path, agents={**config.agents, "other": AgentConfig(name="other")})
    with pytest.raises(Conflict, match="belongs to assistant 'echo'"):
        on_loop(lambda a: run_start.start_async(r, a, config, None, tid, other))
    assert threaded == on_thread  # nothing started
    assert r.hget(keys.ap_thread(tid, None), "agent") == "echo"


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_a_stateless_run_starts_on_the_event_loop_on_a_thread_of_its_own_made_bound(
    r: redis.Redis,
    on_loop: OnLoop,
    echo_config: Config,
    monkeypatch: pytest.MonkeyPatch,
    tenant: str | None,
) -> None:
    """A stateless create's ``start_async``: its thread made on the loop, stored as the
    threaded start leaves one (made, then bound), and its run started there with no thread hop
    on one Redis (on a thread on a cluster); bad input refused with nothing stored."""
    body = RunCreate(assistant_id="echo", input=HI)
    durable.connected_replicas(r)
    threaded = _starts_on_a_thread(monkeypatch)
    if not topology.is_cluster(r):
        monkeypatch.setattr(to_thread, "run_sync", _no_thread)
    started = on_loop(lambda a: run_start.start_async(r, a, echo_config, tenant, None, body))
    assert threaded == ([started.run_id] if topology.is_cluster(r) else [])
    monkeypatch.undo()
    tid = started.thread["thread_id"]
    alike = run_start.start(r, echo_config, tenant, None, body).thread
    made, twin = (thread_ops.get_thread(r, tenant, t) for t in (tid, alike["thread_id"]))
    varying = {"thread_id", "sender", "created_at", "updated_at"}
    assert {k: v for k, v in made.items() if k not in varying} == {
        k: v for k, v in twin.items() if k not in varying
    }
    assert made["agent"] == "echo" and tid in _index(r, tenant)
    assert started.view == state.run_view(r, started.run_id, made)
    assert r.lrange(keys.ap_thread_runs(tid, tenant), 0, -1) == [started.run_id]
    assert r.lrange(keys.conv(keys.cid("echo", made["sender"]), "inbox"), 0, -1) == [started.run_id]
    before = _index(r, tenant)
    for bad in ({"messages": []}, "  ", 7):
        with pytest.raises(InvalidInput):
            on_loop(
                lambda a, bad=bad: run_start.start_async(
                    r, a, echo_config, tenant, None, RunCreate(assistant_id="echo", input=bad)
                )
            )
    assert _index(r, tenant) == before, "bad input stores no thread"


def test_a_thread_made_with_metadata_is_bound_by_its_first_run_on_a_thread(
    r: redis.Redis, on_loop: OnLoop, echo_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ap_bind.lua`` binds only a thread with no metadata (it does not merge JSON): the
    guard refuses the loop's submit, and the thread's ``start`` binds it, merging."""
    _one_redis(r)
    tid = thread_ops.create_thread(r, None, None, {"user": "ann"}, "raise")["thread_id"]
    thread_bindings.forget_all()
    body = RunCreate(assistant_id="echo", input=HI, multitask_strategy="enqueue")
    threaded = _starts_on_a_thread(monkeypatch)
    first = on_loop(lambda a: run_start.start_async(r, a, echo_config, None, tid, body))
    assert threaded == [first.run_id]
    meta = json.loads(r.hget(keys.ap_thread(tid, None), "metadata") or "")
    assert meta == {"user": "ann", "graph_id": "echo", "assistant_id": "echo"}
    inbox = keys.conv(keys.cid("echo", first.thread["sender"]), "inbox")
    assert r.lrange(inbox, 0, -1) == [first.run_id]


@pytest.mark.parametrize(
    ("stored", "metadata", "answer"),
    [
        (None, None, "missing"),
        ({"agent": "other"}, "{}", "other"),
        ({"agent": "echo"}, "{}", "bound"),
        ({}, '{"user": "ann"}', "changed"),
        ({}, "{}", "bound"),
        ({}, None, "bound"),
    ],
)
def test_ap_bind_binds_only_a_thread_there_with_no_assistant_and_the_metadata_it_saw(
    r: redis.Redis, on_loop: OnLoop, stored: dict[str, str] | None, metadata: str | None,
    answer: str,
) -> None:  # fmt: skip
    _one_redis(r)
    thread = keys.ap_thread("00000000-0000-4000-8000-00000000000b", None)
    if stored is not None:
        r.hset(thread, mapping={"thread_id": "t", **stored})
        if metadata is not None:
            r.hset(thread, "metadata", metadata)
    before = r.hgetall(thread)
    bound = '{"graph_id": "echo", "assistant_id": "echo"}'
    args = {"agent": "echo", "seen": "{}", "metadata": bound}
    assert on_loop(lambda a: scripts.call_async(a, S.AP_BIND, [thread], args)) == answer
    if answer == "bound" and not before.get("agent"):
        assert r.hgetall(thread) == {**before, "agent": "echo", "metadata": bound}
    else:
        assert r.hgetall(thread) == before, "left as it is"


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
        thread_records, "record_thread_run_async", lambda *_: pytest.fail("a round trip of its own")
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


@pytest.mark.parametrize("kept", [(), ("submit",), ("submit", "ap_record")])
@pytest.mark.parametrize("first_run", [False, True])
def test_a_create_on_the_loop_after_redis_lost_its_scripts_loads_them_and_records_once(
    r: redis.Redis,
    on_loop: OnLoop,
    echo_config: Config,
    monkeypatch: pytest.MonkeyPatch,
    kept: tuple[str, ...],
    first_run: bool,
) -> None:
    """``NOSCRIPT`` (a restart, a failover; or some scripts loaded by other paths and not the
    others): the scripts are loaded and what did not run is sent again, on the loop. A first
    run's binding lost with a submit that ran (refused by its guard) sends all again."""
    _one_redis(r)
    thread_bindings.forget_all()
    if first_run:
        tid, earlier = thread_ops.create_thread(r, None, None, {}, "raise")["thread_id"], []
    else:
        tid, run_id = _bound_thread(r, on_loop, echo_config)
        earlier = [run_id]
    body = RunCreate(assistant_id="echo", input=HI, multitask_strategy="enqueue")
    r.script_flush()
    for name in kept:
        r.script_load(scripts.source(name))
    monkeypatch.setattr(to_thread, "run_sync", lambda *_: pytest.fail("on a thread"))
    second = on_loop(lambda a: run_start.start_async(r, a, echo_config, None, tid, body))
    assert r.lrange(keys.ap_thread_runs(tid, None), 0, -1) == [*earlier, second.run_id]
    assert second.view == state.run_view(r, second.run_id, second.thread)
    inbox = keys.conv(keys.cid("echo", second.thread["sender"]), "inbox")
    assert r.lrange(inbox, 0, -1) == [*earlier, second.run_id]  # submitted once
    assert r.hget(keys.ap_thread(tid, None), "agent") == "echo"


def test_ap_record_writes_once_and_only_for_a_run_of_the_threads_conversation(
    r: redis.Redis, on_loop: OnLoop
) -> None:
    _one_redis(r)
    h, first = _thread_with_run(r, None)
    tid = h["thread_id"]
    run_id = new_run_id("echo", h["sender"])
    along = thread_records.record_along({**h, "agent": "echo"}, {"assistant_id": "echo"})

    async def send(a: aioredis.Redis) -> tuple[dict[str, str] | None, dict[str, str]]:
        pipe = a.pipeline(transaction=False)
        along.queue(pipe, run_id)
        return thread_records.recorded(list(await pipe.execute()), None, tid)

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
    along = thread_records.record_along(thread_records.thread_as_bound(None, tid, agent), {})
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


# --- a join's first round trip (gateway/thread_joins.py) ------------------------------------


def _ended_run_with_history(
    r: redis.Redis, tenant: str | None
) -> tuple[dict[str, str], str, list[dict[str, Any]]]:
    """A thread bound to ``echo``, its run ended (``start``, ``end``), and its history."""
    h, run_id = _thread_with_run(r, tenant)
    thread_ops.bind_thread(r, h, "echo")
    said = [
        {"role": "user", "content": "hi", "run_id": run_id},
        {"role": "assistant", "content": "hello", "run_id": run_id},
    ]
    r.rpush(reads.history_key("echo", h["sender"]), *map(json.dumps, said))
    for event in ({"type": "start"}, {"type": "end", "status": "succeeded"}):
        r.xadd(keys.run_part(run_id, "events"), {"data": json.dumps(event)})
    r.hset(keys.run(run_id), "status", "succeeded")
    return h, run_id, said


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_a_join_reads_the_history_of_a_thread_whose_assistant_it_knows_in_its_first_round_trip(
    r: redis.Redis, on_loop: OnLoop, tenant: str | None
) -> None:
    """Known from an earlier read, the assistant names the history to read; a hint the thread
    read beside it does not bear out is not used, nor a history the server could not read."""
    h, run_id, said = _ended_run_with_history(r, tenant)
    tid = h["thread_id"]
    thread_bindings.forget_all()

    def read() -> thread_joins.JoinRead:
        got: thread_joins.JoinRead = on_loop(
            lambda a: thread_joins.join_read(a, tenant, tid, run_id)
        )
        return got

    first = read()
    thread, _, record = thread_ops.thread_and_run(r, tenant, tid, run_id)
    assert (first.thread, first.record) == (thread, record)
    assert [json.loads(f["data"])["type"] for _, f in first.head] == ["start", "end"]
    assert first.history is None, "the assistant was not known: no history read"
    assert read().history == said, "known from the first read"
    thread_bindings.remember({"thread_id": tid, "tenant": tenant or "", "agent": "other"})
    assert read().history is None
    assert read().history == said, "the hint is the thread's again"
    if not topology.is_cluster(r):
        r.script_flush()
        assert read().history == said, "NOSCRIPT: read apart, the script loaded"
        assert r.script_exists(scripts._sha("history_json")) == [True], "loaded for the next"
    with pytest.raises(NotFound, match="thread"):
        on_loop(lambda a: thread_joins.join_read(a, "other", tid, run_id))


def test_a_join_given_the_history_read_after_the_end_answers_with_no_read_of_its_own(
    r: redis.Redis, on_loop: OnLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    if topology.is_cluster(r):
        pytest.skip("the hub of this test is of one Redis")
    h, run_id, said = _ended_run_with_history(r, None)
    kw = r.connection_pool.connection_kwargs
    url = f"redis://{kw['host']}:{kw['port']}/{kw['db']}"

    async def join(aredis: aioredis.Redis, history: list[dict[str, Any]] | None) -> Any:
        async with running_hub(url) as hub:
            head = await aredis.xrange(keys.run_part(run_id, "events"), "-", "+", 64)
            return await streaming.final_values(
                hub, aredis, run_id, h, ended=True, head=head, history=history
            )

    read_again = on_loop(lambda a: join(a, None))
    assert read_again == {"messages": messages.to_langchain(said)}

    async def no_read(*_: Any) -> Any:
        pytest.fail("the history was read again")

    monkeypatch.setattr(thread_ops, "thread_history_async", no_read)
    assert on_loop(lambda a: join(a, said)) == read_again
