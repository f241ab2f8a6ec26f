"""``delegate``: fan-out to member agents as runs of their own, waiting without a worker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster, running, wait_for
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeLLM, FakeReply
from walrus_tasks.redis_server import RedisServer


def slow(reply: str) -> str:
    return f'model = "mock"\n[mock]\nreply = "{reply}"\nchunk_delay_ms = 300\n'


AGENTS = {
    "boss": 'model = "fake/m-boss"\nmembers = ["w1", "w2", "w3"]\n',
    "w1": slow("one from w1 ok"),
    "w2": slow("two from w2 ok"),
    "w3": slow("three from w3 ok"),
    "stranger": slow("never"),
    "slowboss": 'model = "fake/m-slowboss"\nmembers = ["slowkid"]\n',
    "slowkid": 'model = "mock"\n[mock]\nreply = "' + " ".join(["w"] * 60)
    + '"\nchunk_delay_ms = 250\n',
}  # fmt: skip


@pytest.fixture(scope="module")
def delegation(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("delegate")
    home = agents_home(root / "home", fake_llm.base_url, AGENTS)
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=root)
    with running(c, workers=("worker1", "worker2"), concurrency=3):
        yield c


def run(c: Cluster, run_id: str) -> dict[str, Any]:
    with c.http() as h:
        return dict(h.get(f"/v1/runs/{run_id}").json())


def delegate_result(c: Cluster, agent: str, sender: str) -> Any:
    [tool] = [m for m in c.history(agent, sender) if m["role"] == "tool"]
    return tool


def test_foreground_fan_out_runs_members_in_parallel(
    delegation: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = delegation
    tasks = [{"agent": f"w{i}", "message": f"task {i}"} for i in (1, 2, 3)]
    fake_llm.script(
        FakeReply(tool_calls=[("delegate", {"tasks": tasks})]), FakeReply(text="all done"),
        model="m-boss",
    )  # fmt: skip
    run_id = c.send("boss", "split the work", sender)
    assert c.wait_run(run_id)["status"] == "succeeded"
    tool = delegate_result(c, "boss", sender)
    assert not tool["is_error"], tool
    results = json.loads(tool["content"])
    assert results == [
        {"agent": "w1", "result": "one from w1 ok", "error": None},
        {"agent": "w2", "result": "two from w2 ok", "error": None},
        {"agent": "w3", "result": "three from w3 ok", "error": None},
    ]
    # Each task ran as a run of its member, in conversation (member, delegate:boss) ...
    children = [c.history(f"w{i}", "delegate:boss")[-2:] for i in (1, 2, 3)]
    assert [h[0]["content"] for h in children] == ["task 1", "task 2", "task 3"]
    infos = [run(c, h[0]["run_id"]) for h in children]
    # ... and in parallel: every child started before any of them finished.
    assert max(i["started_at"] for i in infos) < min(i["finished_at"] for i in infos)
    # The parent waited without a worker: it was `waiting`, not running, while they worked.
    assert c.history("boss", sender)[-1]["content"] == "all done"


def test_delegating_to_a_non_member_is_refused(
    delegation: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = delegation
    fake_llm.script(
        FakeReply(tool_calls=[("delegate", {"tasks": [{"agent": "stranger", "message": "x"}]})]),
        FakeReply(text="refused"),
        model="m-boss",
    )
    assert c.wait_run(c.send("boss", "try a stranger", sender))["status"] == "succeeded"
    tool = delegate_result(c, "boss", sender)
    assert tool["is_error"] and "'stranger' is not a member of boss" in tool["content"]
    assert c.history("stranger", "delegate:boss") == []


def test_background_returns_run_ids_at_once(
    delegation: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = delegation
    tasks = [{"agent": "w1", "message": "later"}]
    fake_llm.script(
        FakeReply(tool_calls=[("delegate", {"tasks": tasks, "background": True})]),
        FakeReply(text="started it"),
        model="m-boss",
    )
    assert c.wait_run(c.send("boss", "in the background", sender))["status"] == "succeeded"
    [started] = json.loads(delegate_result(c, "boss", sender)["content"])
    assert started["agent"] == "w1"
    assert c.wait_run(started["run_id"])["status"] == "succeeded"


def test_cancelling_the_parent_cancels_foreground_children(
    delegation: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = delegation
    fake_llm.script(
        FakeReply(tool_calls=[("delegate", {"tasks": [{"agent": "slowkid", "message": "go"}]})]),
        model="m-slowboss",
    )
    parent = c.send("slowboss", "delegate a long task", sender)
    wait_for(lambda: run(c, parent)["status"] == "waiting", 30, what="the parent to wait")
    child = wait_for(
        lambda: next(
            (cv["active_run"] for cv in c.http().get("/v1/conversations").json()["conversations"]
             if cv["agent"] == "slowkid" and cv["active_run"]), None,
        ), 30, what="the child to run",
    )  # fmt: skip
    with c.http() as h:
        h.post(f"/v1/agents/slowboss/conversations/{sender}/kill")
    assert c.wait_run(parent, timeout=30)["status"] == "cancelled"
    assert c.wait_run(child, timeout=30)["status"] == "cancelled"
