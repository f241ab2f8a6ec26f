"""``submit_async``: a message accepted from an event loop is written as ``submit`` writes it.

On one Redis whose master has no replica to wait for, its one write goes down the asyncio
client, with no thread; where it cannot (the replicas not known, a connection lost under the
write) the threaded ``submit`` writes it, under the same run id. A real Redis (the session's),
no worker: the drain's message is read off its queue.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from anyio import to_thread

from tests.conftest import OnLoop
from tests.test_task_push import unpacked
from walrus_tasks import celery_app, durable, keys, runs, submit, task_push
from walrus_tasks.errors import Conflict


@pytest.fixture
def one_redis(r: redis.Redis) -> redis.Redis:
    if not task_push.applies(r):
        pytest.skip("a Redis Cluster: submit_async writes on a thread there")
    durable._replicas.clear()
    return r


def no_thread(*_: Any, **__: Any) -> Any:
    pytest.fail("written on a thread")


def test_a_message_sent_from_the_loop_is_queued_with_its_drain_and_no_thread(
    one_redis: redis.Redis, on_loop: OnLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = one_redis
    assert durable.connected_replicas(r) == 0
    monkeypatch.setattr(to_thread, "run_sync", no_thread)
    monkeypatch.setattr(submit, "send_drain", lambda *_: pytest.fail("sent through Celery"))
    first = on_loop(lambda a: submit.submit_async(a, r, "echo", "loop-a", "hello"))
    inbox = keys.conv(keys.cid("echo", "loop-a"), "inbox")
    assert r.lrange(inbox, 0, -1) == [first.run_id]
    assert r.llen(celery_app.RUNS_QUEUE) == 1
    pushed = unpacked(r.lindex(celery_app.RUNS_QUEUE, 0))  # type: ignore[arg-type]
    assert pushed["body"][:2] == [["echo", "loop-a"], {"run_id": first.run_id}]
    # The record is the one the threaded submit writes, but for the ids and the time.
    threaded = submit.submit(r, "echo", "thread-a", "hello")
    ours, theirs = r.hgetall(keys.run(first.run_id)), r.hgetall(keys.run(threaded.run_id))
    varying = {"run_id", "sender", "tenant", "created_at"}  # the tenant: the sender's own
    assert {k: v for k, v in ours.items() if k not in varying} == {
        k: v for k, v in theirs.items() if k not in varying
    }
    assert ours["status"] == "queued" and ours["sender"] == ours["tenant"] == "loop-a"
    # Queued behind the first, it pushes no drain of its own (the first run starts it).
    second = on_loop(lambda a: submit.submit_async(a, r, "echo", "loop-a", "again"))
    assert r.lrange(inbox, 0, -1) == [first.run_id, second.run_id]
    assert r.llen(celery_app.RUNS_QUEUE) == 2  # the threaded submit's drain, no third


def test_a_refused_message_from_the_loop_writes_nothing(
    one_redis: redis.Redis, on_loop: OnLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = one_redis
    durable.connected_replicas(r)
    on_loop(lambda a: submit.submit_async(a, r, "echo", "loop-b", "hello"))
    monkeypatch.setattr(to_thread, "run_sync", no_thread)
    before = {k: r.dump(k) for k in r.keys("*")}
    with pytest.raises(Conflict, match="echo/loop-b is busy"):
        on_loop(lambda a: submit.submit_async(a, r, "echo", "loop-b", "no", "reject"))
    assert {k: r.dump(k) for k in r.keys("*")} == before


def test_with_its_replicas_not_known_a_message_reads_them_on_the_loop_and_stays_there(
    one_redis: redis.Redis, on_loop: OnLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The count is asked for on the asyncio client (``INFO``) and cached for the next.

    Found in the Agent Protocol bench: every write of the moment the cached count expired went
    to a thread to read it again, about a create in seven."""
    r = one_redis
    assert durable._cached_replicas(r) is None
    monkeypatch.setattr(to_thread, "run_sync", no_thread)
    first = on_loop(lambda a: submit.submit_async(a, r, "echo", "loop-c", "hello"))
    assert durable._cached_replicas(r) == 0
    asked = r.info("commandstats").get("cmdstat_info", {}).get("calls", 0)
    second = on_loop(lambda a: submit.submit_async(a, r, "echo", "loop-c", "again"))
    inbox = keys.conv(keys.cid("echo", "loop-c"), "inbox")
    assert r.lrange(inbox, 0, -1) == [first.run_id, second.run_id]
    # The second asked nothing (the first INFO here is this test's own).
    assert r.info("commandstats")["cmdstat_info"]["calls"] == asked + 1


def test_a_count_that_cannot_be_read_on_the_loop_sends_the_message_to_a_thread(
    one_redis: redis.Redis, on_loop: OnLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``INFO`` failing as in a failover: the threaded ``submit`` asks again, and writes."""
    r = one_redis
    threaded: list[str] = []
    real_submit = submit.submit

    def recorded(*args: Any, **kwargs: Any) -> submit.Submitted:
        done = real_submit(*args, **kwargs)
        threaded.append(done.run_id)
        return done

    async def unreachable(*_: Any, **__: Any) -> Any:
        raise redis.ConnectionError("connection lost")

    monkeypatch.setattr(submit, "submit", recorded)
    monkeypatch.setattr(aioredis.Redis, "info", unreachable)
    done = on_loop(lambda a: submit.submit_async(a, r, "echo", "loop-e", "hello"))
    assert threaded == [done.run_id]
    assert r.lrange(keys.conv(keys.cid("echo", "loop-e"), "inbox"), 0, -1) == [done.run_id]
    assert durable._cached_replicas(r) == 0, "the thread's submit read the count"


def test_a_write_whose_answer_is_lost_is_tried_again_on_a_thread_once_and_drained(
    one_redis: redis.Redis, on_loop: OnLoop, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write lands and the connection drops before its answer (a failover).

    The threaded ``submit`` writes again under the same run id: it finds the run there, adds
    nothing, and sends the drain (an attempt whose answer was lost counts as one that sent none).
    """
    r = one_redis
    durable.connected_replicas(r)
    real_enqueue = runs.enqueue_async

    async def lost(*args: Any, **kwargs: Any) -> Any:
        await real_enqueue(*args, **kwargs)
        raise redis.ConnectionError("connection lost before the answer")

    monkeypatch.setattr(runs, "enqueue_async", lost)
    drained: list[tuple[str, ...]] = []
    monkeypatch.setattr(submit, "send_drain", lambda *a: drained.append(a))
    done = on_loop(lambda a: submit.submit_async(a, r, "echo", "loop-d", "hello"))
    assert r.lrange(keys.conv(keys.cid("echo", "loop-d"), "inbox"), 0, -1) == [done.run_id]
    assert drained == [("echo", "loop-d", done.run_id)]


@pytest.mark.parametrize("holds", [True, False])
def test_a_guarded_write_whose_answer_is_lost_is_tried_again_only_if_its_guard_holds(
    one_redis: redis.Redis, on_loop: OnLoop, monkeypatch: pytest.MonkeyPatch, holds: bool
) -> None:
    """Tried again on a thread, the guard is read first: a thread the write may not go to (here
    another assistant's) gets nothing, and the caller is told (``Guarded``)."""
    r = one_redis
    durable.connected_replicas(r)
    r.hset("guard-hash", "agent", "echo" if holds else "other")
    along = runs.Along((), lambda *_: None, runs.Guard("guard-hash", "agent", "echo"))
    real_enqueue = runs.enqueue_async

    async def lost(*args: Any, **kwargs: Any) -> Any:
        await real_enqueue(*args, **kwargs)
        raise redis.ConnectionError("connection lost before the answer")

    monkeypatch.setattr(runs, "enqueue_async", lost)
    monkeypatch.setattr(submit, "send_drain", lambda *_: None)
    send = lambda a: submit.submit_async(a, r, "echo", "loop-g", "hello", along=along)  # noqa: E731
    inbox = keys.conv(keys.cid("echo", "loop-g"), "inbox")
    if holds:
        done = on_loop(send)
        assert done.along is None  # what went along must be sent again by the caller
        assert r.lrange(inbox, 0, -1) == [done.run_id]
    else:
        with pytest.raises(submit.Guarded):
            on_loop(send)
        assert r.lrange(inbox, 0, -1) == []
