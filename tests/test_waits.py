"""Runs that wait without a worker: ask_user, ``ask`` permissions, steering, the whitelist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cluster import Cluster, own_processes, running, wait_for
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeLLM, FakeReply
from walrus_tasks.redis_server import RedisServer

AGENTS = {
    "asker": 'model = "fake/m-ask"\ntools = ["ask_user", "sleep"]\n',
    "hasty": 'model = "fake/m-hasty"\ntools = ["ask_user"]\nask_timeout = 1\n',
    "guarded": 'model = "fake/m-guard"\ntools = ["clock"]\n[permissions]\nclock = "ask"\n',
    "denied": 'model = "fake/m-deny"\ntools = ["clock"]\n[permissions]\nclock = "deny"\n',
    "steered": 'model = "fake/m-steer"\ntools = ["sleep"]\n',
}


@pytest.fixture(scope="module")
def waiting_gateway(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Gateway + reaper (1 s), no worker: one for the module (each test has its own sender)."""
    root = tmp_path_factory.mktemp("waits")
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=agents_home(root / "home", fake_llm.base_url, AGENTS),
        log_dir=root,
        env_extra={"WALRUS_REAPER_INTERVAL": "1"},
    )
    with running(c, workers=()):
        yield c


@pytest.fixture
def waiting_cluster(waiting_gateway: Cluster, fake_llm: FakeLLM) -> Iterator[Cluster]:
    """The module's gateway; the workers and beat a test starts are stopped after it."""
    fake_llm.reset()  # replies a failed test left queued must not answer the next test's calls
    with own_processes(waiting_gateway) as c:
        yield c


def status(c: Cluster, run_id: str) -> str:
    with c.http() as h:
        return str(h.get(f"/v1/runs/{run_id}").json()["status"])


def tool_messages(c: Cluster, agent: str, sender: str) -> list[dict[str, Any]]:
    return [m for m in c.history(agent, sender) if m["role"] == "tool"]


def post(c: Cluster, path: str, body: dict[str, Any] | None = None) -> Any:
    with c.http() as h:
        return h.post(path, json=body or {})


QUESTION = {"questions": [{"question": "Which colour?", "options": [{"label": "blue"}]}]}


def test_ask_user_waits_without_a_worker_and_resumes_on_another(
    waiting_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = waiting_cluster
    fake_llm.script(
        FakeReply(tool_calls=[("ask_user", QUESTION)]), FakeReply(text="blue it is"), model="m-ask"
    )
    c.start_worker("worker-a")
    c.wait_ready()
    run_id = c.send("asker", "pick a colour", sender)
    wait_for(lambda: status(c, run_id) == "waiting", 30, what="the run to wait")
    # The worker that ran the question dies; the run holds no worker, so nothing is lost.
    c.kill9("worker-a")
    c.start_worker("worker-b")
    wait_for(lambda: "worker-b@test" in c.pinged(), 60, what="worker-b")  # a start, under load
    resp = post(c, f"/v1/agents/asker/conversations/{sender}/reply", {"content": "blue"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "resumed"
    assert c.wait_run(run_id)["status"] == "succeeded"
    events = [e for _, e in c.events(run_id)]
    asked = next(e for e in events if e["type"] == "ask_user")
    assert asked["questions"][0]["question"] == "Which colour?" and asked["call_id"]
    [tool] = tool_messages(c, "asker", sender)
    assert tool["content"] == "blue" and not tool["is_error"]
    assert c.history("asker", sender)[-1]["content"] == "blue it is"


def test_a_reply_before_the_question_is_not_lost(
    waiting_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = waiting_cluster
    fake_llm.script(
        FakeReply(tool_calls=[("sleep", {"seconds": 2})]),
        FakeReply(tool_calls=[("ask_user", QUESTION)]),
        FakeReply(text="ok"),
        model="m-ask",
    )
    c.start_worker("worker-a")
    c.wait_ready()
    run_id = c.send("asker", "hurry", sender)
    wait_for(lambda: status(c, run_id) == "running", 30, what="the run to start")
    resp = post(c, f"/v1/agents/asker/conversations/{sender}/reply", {"content": "early"})
    assert resp.status_code == 200 and resp.json()["status"] == "queued", resp.text
    assert c.wait_run(run_id)["status"] == "succeeded"
    assert tool_messages(c, "asker", sender)[-1]["content"] == "early"


def test_ask_user_times_out_with_an_error_the_model_sees(
    waiting_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = waiting_cluster
    fake_llm.script(
        FakeReply(tool_calls=[("ask_user", QUESTION)]), FakeReply(text="nobody"), model="m-hasty"
    )
    c.start_beat()  # beat drives the reaper, which times waits out
    c.start_worker("worker-a")
    c.wait_ready()
    run_id = c.send("hasty", "ask me", sender)
    assert c.wait_run(run_id, timeout=30)["status"] == "succeeded"
    [tool] = tool_messages(c, "hasty", sender)
    assert tool["is_error"] and "did not answer within 1s" in tool["content"]
    last = fake_llm.requests_for("m-hasty")[-1]["messages"]
    assert any("did not answer" in str(m.get("content")) for m in last if m["role"] == "tool")


def test_kill_ends_a_waiting_run(waiting_cluster: Cluster, fake_llm: FakeLLM, sender: str) -> None:
    c = waiting_cluster
    fake_llm.script(FakeReply(tool_calls=[("ask_user", QUESTION)]), model="m-ask")
    c.start_worker("worker-a")
    c.wait_ready()
    run_id = c.send("asker", "ask", sender)
    wait_for(lambda: status(c, run_id) == "waiting", 30, what="the run to wait")
    assert post(c, f"/v1/agents/asker/conversations/{sender}/kill").json() == {"run_id": run_id}
    assert c.wait_run(run_id, timeout=30)["status"] == "cancelled"


def test_reply_with_no_active_run_is_409(waiting_cluster: Cluster, sender: str) -> None:
    resp = post(waiting_cluster, f"/v1/agents/asker/conversations/{sender}/reply", {"content": "x"})
    assert resp.status_code == 409 and "no active run" in resp.json()["error"]["message"]
    resp = post(waiting_cluster, f"/v1/agents/asker/conversations/{sender}/reply", {"content": ""})
    assert resp.status_code == 422


@pytest.mark.parametrize(("answer", "allowed"), [("allow", True), ("no thanks", False)])
def test_ask_permission_waits_for_approval(
    waiting_cluster: Cluster, fake_llm: FakeLLM, sender: str, answer: str, allowed: bool
) -> None:
    c = waiting_cluster
    fake_llm.script(FakeReply(tool_calls=[("clock", {})]), FakeReply(text="done"), model="m-guard")
    c.start_worker("worker-a")
    c.wait_ready()
    run_id = c.send("guarded", "what time is it", sender)
    wait_for(lambda: status(c, run_id) == "waiting", 30, what="the approval wait")
    resp = post(c, f"/v1/agents/guarded/conversations/{sender}/reply", {"content": answer})
    assert resp.json()["status"] == "resumed", resp.text
    assert c.wait_run(run_id)["status"] == "succeeded"
    asked = next(e for _, e in c.events(run_id) if e["type"] == "ask_user")
    assert asked["kind"] == "approval" and asked["tool"]["name"] == "clock"
    [tool] = tool_messages(c, "guarded", sender)
    if allowed:
        assert not tool["is_error"] and "utc" in json.loads(tool["content"])
    else:
        assert tool["is_error"] and "denied" in tool["content"]


def test_deny_and_scope_refuse_calls(
    waiting_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = waiting_cluster
    fake_llm.script(
        FakeReply(tool_calls=[("clock", {}), ("bash", {"command": "id"})]),
        FakeReply(text="refused"),
        model="m-deny",
    )
    c.start_worker("worker-a")
    c.wait_ready()
    assert c.wait_run(c.send("denied", "try", sender))["status"] == "succeeded"
    clock, bash = tool_messages(c, "denied", sender)
    assert clock["is_error"] and "denied by this agent's permissions" in clock["content"]
    assert bash["is_error"] and bash["content"] == "tool not available: bash"
    offered = fake_llm.requests_for("m-deny")[0].get("tools") or []
    assert "clock" not in [t["function"]["name"] for t in offered]  # a denied tool is not offered


def test_steer_is_injected_before_the_next_llm_call(
    waiting_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = waiting_cluster
    fake_llm.script(
        FakeReply(tool_calls=[("sleep", {"seconds": 2})]), FakeReply(text="ok, French"),
        model="m-steer",
    )  # fmt: skip
    c.start_worker("worker-a")
    c.wait_ready()
    path = f"/v1/agents/steered/conversations/{sender}/steer"
    assert post(c, path, {"content": "too early"}).status_code == 409
    run_id = c.send("steered", "say hello", sender)
    wait_for(lambda: status(c, run_id) == "running", 30, what="the run to start")
    resp = post(c, path, {"content": "answer in French"})
    assert resp.status_code == 202 and resp.json() == {"run_id": run_id}, resp.text
    assert c.wait_run(run_id)["status"] == "succeeded"
    steered = [e for _, e in c.events(run_id) if e["type"] == "user_steered"]
    assert steered == [{"type": "user_steered", "content": "answer in French"}]
    second = fake_llm.requests_for("m-steer")[1]["messages"]
    assert second[-1] == {"role": "user", "content": "answer in French"}
    history = c.history("steered", sender)
    assert [m["role"] for m in history] == ["user", "assistant", "tool", "user", "assistant"]
    assert history[3]["steered"] is True


def test_walrus_chat_asks_the_user_and_replies(
    waiting_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = waiting_cluster
    fake_llm.script(
        FakeReply(tool_calls=[("ask_user", QUESTION)]), FakeReply(text="blue it is"), model="m-ask"
    )
    c.start_worker("worker-a")
    c.wait_ready()
    done = subprocess.run(
        [sys.executable, "-m", "walrus_tasks.cli", "chat", "asker", "--sender", sender,
         "--url", c.gateway_url],
        input="pick a colour\nblue\n/quit\n", capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "? Which colour?  [blue]" in done.stderr
    assert "blue it is" in done.stdout
    assert tool_messages(c, "asker", sender)[0]["content"] == "blue"
