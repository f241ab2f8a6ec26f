"""A run task goes on with its conversation's next run in place, for one slice at most.

``worker.in_place``: when a run ends with its conversation's next message queued, the drain or
step task that ended it runs the next run's step 0 itself while its slice
(``WALRUS_NEXT_RUN_IN_PLACE_MS``) lasts, and sends it as a task of its own after that. Real
workers on a Redis of the tests' own: the runs still go one at a time and in order, each ends
once, a backlog gives the pool process up after a slice, and a ``kill -9`` mid-run in place is
resumed. The unit tests at the end: whatever a task took and did not run is sent.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import Cluster, running, wait_for
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeLLM
from walrus_tasks import keys
from walrus_tasks.lease import Fence
from walrus_tasks.redis_server import RedisServer
from worker import in_place, runtime

QUICK = """
model = "mock"
[mock]
reply = "one two three"
chunk_delay_ms = 10
"""
"""About 30 ms a run: three chunks, 10 ms apart."""

SECONDS = """
model = "mock"
[mock]
reply = "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10"
chunk_delay_ms = 150
"""
"""About 1.5 s a run: long enough to kill its worker in the middle of it."""


def cluster(
    redis_server: RedisServer, fake: FakeLLM, tmp: Path, slice_ms: str, **env: str
) -> Cluster:
    home = agents_home(tmp / "home", fake.base_url, {"quick": QUICK, "seconds": SECONDS})
    env["WALRUS_NEXT_RUN_IN_PLACE_MS"] = slice_ms
    return Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp, env_extra=env)


def ended_in_order(c: Cluster, run_ids: list[str]) -> list[dict[str, Any]]:
    """Each run's end: every one succeeded, and they started and ended in acceptance order."""
    ends = [c.wait_run(run_id, timeout=60) for run_id in run_ids]
    assert [e["status"] for e in ends] == ["succeeded"] * len(ends)
    for before, after in itertools.pairwise(ends):
        assert float(before["finished_at"]) <= float(after["started_at"]), "one at a time"
    return ends


def tasks_that_ended(log: Path, run_ids: list[str]) -> dict[str, str]:
    """The task whose process logged each run's end (the worker's JSON log lines)."""
    ended = {}
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("run_id") in run_ids and str(entry.get("msg", "")).startswith("run "):
            ended[entry["run_id"]] = entry["task_id"]
    return ended


@pytest.mark.parametrize(("slice_ms", "tasks"), [("60000", 1), ("0", 5)])
def test_a_conversation_s_queued_runs_go_on_in_the_task_that_ended_the_run_before(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path, slice_ms: str, tasks: int
) -> None:
    c = cluster(redis_server, fake_llm, tmp_path, slice_ms)
    with running(c, concurrency=1):
        run_ids = [c.enqueue("quick", "t:queued") for _ in range(5)]  # accepted, no drain yet
        c.send_drains("quick", "t:queued", 1)
        ended_in_order(c, run_ids)
        history = c.history("quick", "t:queued")
    assert [m["role"] for m in history] == ["user", "assistant"] * 5
    assert [m["run_id"] for m in history] == [r for r in run_ids for _ in "ua"]
    ended = tasks_that_ended(tmp_path / "worker1.log", run_ids)
    assert set(ended) == set(run_ids), "every run's end is logged with its task"
    # 60 s of slice: the drain's task ran all five; none: the drain and a step task each.
    assert len(set(ended.values())) == tasks


def test_a_backlog_gives_the_pool_process_up_after_a_slice(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    """One pool slot: a conversation with 20 runs queued, then another's one run."""
    c = cluster(redis_server, fake_llm, tmp_path, "100")
    with running(c, concurrency=1):
        backlog = [c.enqueue("quick", "a:backlog") for _ in range(20)]
        other = c.enqueue("quick", "b:one")
        c.send_drains("quick", "a:backlog", 1)
        c.send_drains("quick", "b:one", 1)
        b_queued = time.time()
        a = ended_in_order(c, backlog)
        b = c.wait_run(other, timeout=60)
    assert b["status"] == "succeeded"
    ahead = [e for e in a if float(e["started_at"]) < float(b["started_at"])]
    assert ahead, "a's drain was sent first"
    # 100 ms of ~30 ms runs: the drain goes on with a few, then sends the next to the back of
    # the queue, behind b's drain. Without the slice all 20 would start first. Counted from
    # b's drain being queued: until then a's runs have the worker to themselves, and under
    # make check's load the tests' process once sent it late enough for 16 of them to start.
    after_b_queued = [e for e in ahead if float(e["started_at"]) >= b_queued]
    assert len(after_b_queued) <= 8, f"{len(after_b_queued)} of a's runs started before b's"


def test_kill_9_mid_run_in_place_resumes_it_and_the_conversation_goes_on(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    c = cluster(
        redis_server, fake_llm, tmp_path, "60000", WALRUS_LEASE_TTL="3",
        WALRUS_REAPER_INTERVAL="1",
    )  # fmt: skip
    with running(c, workers=("worker-a",), concurrency=1, beat=True):
        run_ids = [c.enqueue("seconds", "t:killed") for _ in range(3)]
        c.send_drains("seconds", "t:killed", 1)
        second = run_ids[1]
        wait_for(lambda: c.run(second)["status"] == "running", 30, 0.05, "the second run")
        # In place: no step task carries the second run; the drain's task runs it.
        with c.control_app() as app:
            active = app.control.inspect(timeout=1).active() or {}
        names = [t["name"] for tasks in active.values() for t in tasks]
        assert names == ["walrus.session.drain"], names
        c.kill9("worker-a")
        c.start_worker("worker-b", concurrency=1)
        ended_in_order(c, run_ids)
        history = c.history("seconds", "t:killed")
    assert [m["role"] for m in history] == ["user", "assistant"] * 3, "no step persisted twice"
    assert all(m["content"].endswith("w10") for m in history[1::2])
    assert c.redis().hget(keys.run(second), "recoveries") == "1"


FENCE = Fence("quick", "t:unit", "run-next", "7")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Fence, int]]:
    """The step tasks ``worker.in_place`` sends (recorded, not sent)."""
    out: list[tuple[Fence, int]] = []
    monkeypatch.setattr(in_place, "send_step", lambda fence, step: out.append((fence, step)))
    return out


def test_a_next_run_is_taken_only_within_a_task_s_slice_and_one_at_a_time(
    sent: list[tuple[Fence, int]],
) -> None:
    assert not in_place.take(FENCE), "no task: the caller sends it"
    with in_place.task_slice() as held:
        held.until = float("inf")
        assert in_place.take(FENCE)
        assert not in_place.take(Fence("quick", "t:unit", "run-after", "7")), "one at a time"
        held.taken = None  # as runtime.run_taken does before it runs one
        held.until = 0  # the slice has run out
        assert not in_place.take(FENCE)
    assert not in_place.take(FENCE), "the task has ended"
    assert sent == []


def test_a_run_taken_by_a_task_that_fails_is_sent(
    sent: list[tuple[Fence, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(RuntimeError), in_place.task_slice() as held:
        held.until = float("inf")
        assert in_place.take(FENCE)
        raise RuntimeError("the step that ended the run failed after its end")
    assert sent == [(FENCE, 0)]

    def failing(fence: Fence, step: int, **_: object) -> str:
        raise ConnectionError("Redis went away")

    monkeypatch.setattr(runtime, "run_step", failing)
    sent.clear()
    with pytest.raises(ConnectionError), in_place.task_slice() as held:
        held.until = float("inf")
        in_place.take(FENCE)
        runtime.run_taken(held)
    assert sent == [(FENCE, 0)], "sent once, by run_taken; the slice has nothing left"


def test_a_run_taken_is_named_in_the_task_s_result_once_run_and_sent_if_another_holds_it(
    sent: list[tuple[Fence, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    states = iter(["ok", "busy"])
    monkeypatch.setattr(runtime, "run_step", lambda fence, step, **_: next(states))
    other = Fence("quick", "t:unit", "run-held-elsewhere", "7")
    with in_place.task_slice() as held:
        held.until = float("inf")
        for fence in (FENCE, other):
            assert in_place.take(fence)
            runtime.run_taken(held)
    assert held.ran == [FENCE.run_id] and held.result == f"then in place {FENCE.run_id}"
    assert sent == [(other, 0)], "a step 0 another delivery holds goes back to the queue"
