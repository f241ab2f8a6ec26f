"""A thread's run read in one round trip (``gateway.thread_operations``), on one Redis and on a
cluster (``--state-on-cluster``): a join reads the thread, the run's Agent Protocol record and
its walrus record together (``thread_and_run``), a create writes its record and reads the run
together (``record_thread_run``); each answers what the reads one after the other answer."""

from __future__ import annotations

import pytest
import redis

from gateway import thread_operations as thread_ops
from gateway.agent_protocol import state
from gateway.agent_protocol.models import RunCreate
from walrus_tasks import keys
from walrus_tasks.errors import NotFound
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
