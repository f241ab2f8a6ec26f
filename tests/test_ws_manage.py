"""The management ops of ``WS /v1/ws`` (delete_conversation, create/update/delete_agent,
list_providers, list_skills, list_mcps, stats, usage) over a real WebSocket client, on a gateway
and a worker with a config directory of their own."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.cluster import Cluster, running, wait_for
from tests.test_manage import SECRET, agent_files, private_home, secret_cluster
from tests.test_ws import Socket, error_code
from walrus_tasks import keys
from walrus_tasks.redis_server import RedisServer


@pytest.fixture(scope="module")
def wc(
    redis_server: RedisServer, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = private_home(home, tmp_path_factory.mktemp("ws-manage") / "home")
    with running(secret_cluster(redis_server, root)) as c:
        yield c


@pytest.fixture
def ws(wc: Cluster) -> Iterator[Socket]:
    with connect(wc.gateway_url.replace("http://", "ws://") + "/v1/ws", open_timeout=10) as conn:
        yield Socket(conn)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_delete_conversation(ws: Socket, wc: Cluster) -> None:
    sender = unique("t")
    run_id = ws.result("send", agent="echo", content="hi", sender=sender)["run_id"]
    assert wc.wait_run(run_id)["status"] == "succeeded"
    assert ws.result("delete_conversation", agent="echo", sender=sender) == {"deleted": True}
    assert ws.result("get_history", agent="echo", sender=sender) == {"messages": []}
    conversations = ws.result("list_conversations", agent="echo")["conversations"]
    assert sender not in {c["sender"] for c in conversations}
    assert not wc.redis().exists(keys.conv(keys.cid("echo", sender), "seq"))
    assert error_code(ws.call("delete_conversation", agent="echo", sender=sender)) == "not_found"
    assert error_code(ws.call("delete_conversation", agent="echo", sender="bad one")) == "invalid"
    assert error_code(ws.call("delete_conversation", sender=sender)) == "invalid"


def test_delete_conversation_refuses_an_active_run(ws: Socket) -> None:
    sender = unique("t")
    rid = ws.start("stream", agent="slow", content="go", sender=sender)
    while ws.next(rid)["event"]["type"] != "chunk":
        pass
    assert error_code(ws.call("delete_conversation", agent="slow", sender=sender)) == "conflict"
    ws.result("cancel_run", agent="slow", sender=sender)
    events, _ = ws.until_done(rid)
    assert events[-1]["status"] == "cancelled"
    assert ws.result("get_history", agent="slow", sender=sender)["messages"][0]["content"] == "go"

    def deleted() -> bool:  # the lease goes a moment after the run's end
        reply = ws.call("delete_conversation", agent="slow", sender=sender)
        return bool(reply["type"] == "result")

    wait_for(deleted, 10, 0.1)


def test_create_update_and_delete_an_agent(ws: Socket, wc: Cluster) -> None:
    name = unique("wsagent")
    created = ws.result(
        "create_agent", name=name, description="over ws", mock={"reply": "Made on a socket."}
    )
    assert created == {
        "name": name, "model": "mock", "description": "over ws", "tools": [], "members": []
    }  # fmt: skip
    assert (wc.home / "agents" / f"{name}.toml").is_file()
    assert error_code(ws.call("create_agent", name=name)) == "conflict"

    sender = unique("t")
    rid = ws.start("stream", agent=name, content="hello", sender=sender)
    events, _ = ws.until_done(rid)
    assert events[-1]["status"] == "succeeded", events[-1]  # the worker knows it already
    text = "".join(e["content"] for e in events if e["type"] == "chunk")
    assert text.split() == ["Made", "on", "a", "socket."]

    updated = ws.result("update_agent", agent=name, description="changed", tools=["clock"])
    assert updated["description"] == "changed" and updated["tools"] == ["clock"]
    assert ws.result("get_agent", agent=name)["description"] == "changed"

    assert ws.result("delete_agent", agent=name) == {"deleted": name}
    assert error_code(ws.call("get_agent", agent=name)) == "not_found"
    assert error_code(ws.call("delete_agent", agent=name)) == "not_found"
    assert error_code(ws.call("update_agent", agent=name, description="x")) == "not_found"
    assert not (wc.home / "agents" / f"{name}.toml").exists()


def test_bad_agent_requests_change_nothing(ws: Socket, wc: Cluster) -> None:
    member, lead = unique("member"), unique("lead")
    ws.result("create_agent", name=member)
    ws.result("create_agent", name=lead, members=[member])
    before = agent_files(wc.home)
    generation = wc.redis().get(keys.CONFIG_GENERATION)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("create_agent", {"model": "mock"}, "invalid"),  # no name
        ("create_agent", {"name": "Bad Name"}, "invalid"),
        ("create_agent", {"name": unique("x"), "model": "nowhere/m"}, "config"),
        ("create_agent", {"name": unique("x"), "members": ["ghost"]}, "config"),
        ("create_agent", {"name": unique("x"), "colour": "blue"}, "invalid"),
        ("create_agent", {"name": unique("x"), "max_iterations": 0}, "invalid"),
        ("create_agent", {"name": unique("x"), "system_prompt": "${HOME}"}, "invalid"),
        ("update_agent", {"agent": lead, "name": "other"}, "invalid"),
        ("update_agent", {"agent": lead, "members": ["ghost"]}, "config"),
        ("update_agent", {"description": "no agent"}, "invalid"),
        ("update_agent", {"agent": "nobody"}, "not_found"),
        ("delete_agent", {"agent": member}, "conflict"),  # the lead lists it
        ("delete_agent", {"agent": "nobody"}, "not_found"),
        ("delete_agent", {}, "invalid"),
    ]
    for op, args, code in cases:
        assert error_code(ws.call(op, **args)) == code, (op, args)
    assert agent_files(wc.home) == before
    assert wc.redis().get(keys.CONFIG_GENERATION) == generation
    assert ws.call("ping")["type"] == "pong"  # errors never close the socket


def test_listings_match_the_http_routes(ws: Socket, wc: Cluster) -> None:
    with wc.http() as c:
        providers = c.get("/v1/providers").json()
        skills = c.get("/v1/skills").json()
        mcps = c.get("/v1/mcps").json()
        stats = c.get("/v1/stats").json()
    assert ws.result("list_providers") == providers
    assert {"mock", "fake/m-oai"} <= set(providers["models"])
    assert ws.result("list_skills") == skills
    assert skills["skills"][0]["name"] == "greet"
    reply = ws.result("list_mcps")
    assert reply == mcps and {m["name"] for m in reply["mcps"]} == {"files", "remote"}
    assert SECRET not in str(reply)
    ws_stats = ws.result("stats")
    assert set(ws_stats) == set(stats) and ws_stats["agents"] == stats["agents"]


def test_usage_answers_as_the_http_route_with_from_and_to_named_as_there(
    ws: Socket, wc: Cluster
) -> None:
    run_id = ws.result("send", agent="echo", content="count me", sender=unique("u"))["run_id"]
    assert wc.wait_run(run_id)["status"] == "succeeded"
    since = int(time.time()) - 3600
    report = ws.result("usage", group_by="agent,model", **{"from": since})
    with wc.http() as c:
        http = c.get("/v1/usage", params={"group_by": "agent,model", "from": str(since)}).json()
    assert report == http
    assert report["from"] == since // 3600 * 3600  # "from" reached the operation
    [echo] = [row for row in report["rows"] if row["agent"] == "echo"]
    assert echo["model"] == "mock" and echo["calls"] >= 1 and echo["input_tokens"] > 0
    assert echo["cost_usd"] == 0 and report["unpriced_models"] == []  # mock is free
    backwards = ws.call("usage", **{"from": since, "to": since - 60})
    assert error_code(backwards) == "invalid" and "before" in backwards["error"]["message"]
