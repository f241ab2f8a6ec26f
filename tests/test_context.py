"""What a run's LLM calls see: skills, memory recall (never persisted), and compaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.cluster import Cluster, running
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeLLM, FakeReply
from walrus_tasks import keys, memory
from walrus_tasks.redis_server import RedisServer
from worker.compaction import INSTRUCTIONS

AGENTS = {
    "skilled": 'model = "fake/m-skill"\ntools = ["clock", "sleep"]\nskills = ["greet"]\n',
    "recaller": 'model = "fake/m-recall"\n',
    "compactor": 'model = "fake/m-compact"\n',
    "autocompact": 'model = "fake/m-auto"\ncompact_threshold = 5\n',
}
GREET = """\
---
name: greet
description: Greets someone warmly
allowed-tools: clock
---
Greet the person named in the request, warmly.
"""


@pytest.fixture(scope="module")
def ctx_cluster(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("context")
    home = agents_home(root / "home", fake_llm.base_url, AGENTS)
    (home / "skills" / "greet").mkdir(parents=True)
    (home / "skills" / "greet" / "SKILL.md").write_text(GREET)
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=root)
    with running(c):
        yield c


def offered(request: dict[str, Any]) -> list[str]:
    return sorted(t["function"]["name"] for t in request.get("tools") or [])


def system(request: dict[str, Any]) -> str:
    return str(request["messages"][0]["content"])


def test_slash_skill_expands_for_the_model_only(
    ctx_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = ctx_cluster
    fake_llm.script(FakeReply(text="Hello Bob!"), model="m-skill")
    assert c.wait_run(c.send("skilled", "/greet Bob", sender))["status"] == "succeeded"
    request = fake_llm.requests_for("m-skill")[-1]
    user = request["messages"][-1]["content"]
    assert user.startswith("Bob") and "Greet the person named in the request" in user
    assert "greet: Greets someone warmly" in system(request)
    assert offered(request) == ["clock"]  # the skill's allowed-tools limit the run
    assert c.history("skilled", sender)[0]["content"] == "/greet Bob"


def test_skill_tool_returns_the_instructions(
    ctx_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = ctx_cluster
    fake_llm.script(
        FakeReply(tool_calls=[("skill", {"name": "greet"}), ("skill", {"name": "nope"})]),
        FakeReply(text="ok"),
        model="m-skill",
    )
    assert c.wait_run(c.send("skilled", "how do you greet?", sender))["status"] == "succeeded"
    assert offered(fake_llm.requests_for("m-skill")[-2]) == ["clock", "skill", "sleep"]
    found, missing = [m for m in c.history("skilled", sender) if m["role"] == "tool"]
    assert found["content"].startswith("Greet the person") and not found["is_error"]
    assert missing["is_error"] and "unknown skill 'nope'" in missing["content"]


def test_memory_recall_is_injected_and_never_persisted(
    ctx_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = ctx_cluster
    memory.remember(c.redis(), "recaller", "favourite colour", "The user's favourite is teal", [])
    memory.remember(c.redis(), "recaller", "pet", "The user has a cat called Mo", ["animal"])
    fake_llm.script(FakeReply(text="Teal."), model="m-recall")
    run_id = c.send("recaller", "what is my favourite colour?", sender)
    assert c.wait_run(run_id)["status"] == "succeeded"
    prompt = system(fake_llm.requests_for("m-recall")[-1])
    assert "The user's favourite is teal" in prompt
    assert "cat called Mo" not in prompt  # only hits of the query
    assert "teal" not in str(c.history("recaller", sender))


def events(c: Cluster, run_id: str) -> list[dict[str, Any]]:
    return [e for _, e in c.events(run_id)]


def test_manual_compaction_replaces_history_and_keeps_the_archive(
    ctx_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = ctx_cluster
    fake_llm.script(
        FakeReply(text="first answer"), FakeReply(text="second answer"),
        FakeReply(text="They said hi twice."), model="m-compact",
    )  # fmt: skip
    for text in ("hi", "hi again"):
        assert c.wait_run(c.send("compactor", text, sender))["status"] == "succeeded"
    before = c.history("compactor", sender)
    with c.http() as h:
        resp = h.post(f"/v1/agents/compactor/conversations/{sender}/compact")
    assert resp.status_code == 202, resp.text
    run_id = resp.json()["run_id"]
    assert c.wait_run(run_id)["status"] == "succeeded"
    assert {"type": "compacted", "content": "[context compacted]", "archived": 4} in events(
        c, run_id
    )
    summary_request = fake_llm.requests_for("m-compact")[-1]
    assert system(summary_request) == INSTRUCTIONS
    assert "[tool" not in summary_request["messages"][1]["content"]
    [summary] = c.history("compactor", sender)
    assert summary["role"] == "user" and summary["summary"] is True
    assert summary["content"].endswith("They said hi twice.")
    with c.http() as h:
        [archive] = h.get(f"/v1/agents/compactor/conversations/{sender}/archive").json()["archives"]
    assert archive["messages"] == before and archive["run_id"] == run_id


def test_automatic_compaction_past_the_threshold(
    ctx_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = ctx_cluster
    fake_llm.script(
        FakeReply(text="noted, a long first message"), FakeReply(text="SUMMARY"),
        FakeReply(text="second reply"), model="m-auto",
    )  # fmt: skip
    assert c.wait_run(c.send("autocompact", "a first message", sender))["status"] == "succeeded"
    second = c.send("autocompact", "and a second one", sender)
    assert c.wait_run(second)["status"] == "succeeded"
    assert any(e["type"] == "compacted" for e in events(c, second))
    history = c.history("autocompact", sender)
    assert [m["content"] for m in history[1:]] == ["and a second one", "second reply"]
    assert history[0]["summary"] is True and history[0]["content"].endswith("SUMMARY")
    # The LLM call after the compaction saw the summary and the new message, nothing older.
    last = fake_llm.requests_for("m-auto")[-1]["messages"]
    assert "a first message" not in str(last)


def test_cwd_on_send_is_the_conversations_working_directory(
    ctx_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    c = ctx_cluster
    base = c.home.resolve() / "workspaces" / "recaller"
    sub = base / "project"
    sub.mkdir(parents=True, exist_ok=True)
    fake_llm.script(*[FakeReply(text="ok")] * 3, model="m-recall")
    assert c.wait_run(c.send("recaller", "one", sender, cwd="project"))["status"] == "succeeded"
    assert c.wait_run(c.send("recaller", "two", sender))["status"] == "succeeded"
    assert c.wait_run(c.send("recaller", "three", sender + "x"))["status"] == "succeeded"
    first, second, other = (system(q) for q in fake_llm.requests_for("m-recall")[-3:])
    assert f"Working directory: {sub}\n" in first
    assert f"Working directory: {sub}\n" in second  # kept for the conversation
    assert f"Working directory: {base}\n" in other
    with c.http() as h:
        bad = h.post("/v1/agents/recaller/messages", json={"content": "x", "cwd": "a\x00b"})
    assert bad.status_code == 422


@pytest.mark.parametrize("cwd", ["/", "../x", "project/../../other", "/etc", "link-out/x"])
def test_a_cwd_outside_the_agent_s_directory_is_refused_before_anything_is_stored(
    ctx_cluster: Cluster, sender: str, tmp_path: Path, cwd: str
) -> None:
    c = ctx_cluster
    base = c.home.resolve() / "workspaces" / "recaller"
    base.mkdir(parents=True, exist_ok=True)
    if not (base / "link-out").is_symlink():
        (base / "link-out").symlink_to(tmp_path)  # a symlink that leads out
    with c.http() as h:
        resp = h.post(
            "/v1/agents/recaller/messages", json={"content": "x", "sender": sender, "cwd": cwd}
        )
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid"
    assert "outside the agent's working directory" in error["message"]
    pattern = keys.conv(keys.cid("recaller", sender), "*")  # type: ignore[arg-type]
    assert not list(c.redis().scan_iter(pattern)), "nothing stored"


def test_a_cwd_outside_is_refused_over_the_websocket_too(ctx_cluster: Cluster, sender: str) -> None:
    url = ctx_cluster.gateway_url.replace("http", "ws", 1) + "/v1/ws"
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"id": 1, "op": "send", "agent": "recaller", "content": "x",
                            "sender": sender, "cwd": "../../.."}))  # fmt: skip
        reply = json.loads(ws.recv(timeout=10))
    assert reply["type"] == "error" and reply["error"]["code"] == "invalid", reply
    assert not ctx_cluster.redis().exists(keys.conv(keys.cid("recaller", sender), "inbox"))
