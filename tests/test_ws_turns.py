"""The turn ops of ``WS /v1/ws`` (reply_to_ask, steer, compact, get_archive) over a real
WebSocket client, on a gateway and a worker with a config directory of their own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.cluster import Cluster
from tests.fakellm import FakeLLM, FakeReply
from tests.test_ws import Socket, error_code

AGENTS = {
    "wsask": 'model = "fake/m-wsask"\ntools = ["ask_user"]\n',
    "wssteer": 'model = "fake/m-wssteer"\ntools = ["sleep"]\n',
    "wscompact": 'model = "fake/m-wscompact"\n',
}


@pytest.fixture(scope="module")
def turns_cluster(cluster: Cluster) -> Cluster:
    """The session cluster, which carries ``AGENTS``."""
    return cluster


@pytest.fixture
def ws(turns_cluster: Cluster) -> Iterator[Socket]:
    url = turns_cluster.gateway_url.replace("http://", "ws://") + "/v1/ws"
    with connect(url, open_timeout=10) as conn:
        yield Socket(conn)


def next_event(ws: Socket, rid: str, kind: str) -> dict[str, Any]:
    """Read the ``stream`` request ``rid`` up to its first event of type ``kind``."""
    while True:
        frame = ws.next(rid)
        assert frame["type"] == "event", frame
        if frame["event"]["type"] == kind:
            return dict(frame["event"])


def test_reply_to_ask_resumes_the_streamed_run(ws: Socket, fake_llm: FakeLLM, sender: str) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("ask_user", {"questions": [{"question": "Colour?"}]})]),
        FakeReply(text="ok"),
        model="m-wsask",
    )
    rid = ws.start("stream", agent="wsask", content="pick one", sender=sender)
    asked = next_event(ws, rid, "ask_user")
    assert asked["questions"][0]["question"] == "Colour?" and asked["call_id"]
    # The stream is still in flight on this socket while the reply goes out on it.
    replied = ws.result("reply_to_ask", agent="wsask", sender=sender, content="blue")
    events, run_id = ws.until_done(rid)
    assert replied == {"run_id": run_id, "status": "resumed", "call_id": asked["call_id"]}
    assert events[-1]["type"] == "end" and events[-1]["status"] == "succeeded"
    messages = ws.result("get_history", agent="wsask", sender=sender)["messages"]
    [tool] = [m for m in messages if m["role"] == "tool"]
    assert tool["content"] == "blue" and not tool["is_error"]
    assert (messages[-1]["role"], messages[-1]["content"]) == ("assistant", "ok")


def test_reply_to_ask_errors(ws: Socket, sender: str) -> None:
    reply = ws.call("reply_to_ask", agent="wsask", sender=sender, content="blue")
    assert error_code(reply) == "conflict" and "no active run" in reply["error"]["message"]
    assert error_code(ws.call("reply_to_ask", agent="wsask", sender=sender, content="")) == (
        "invalid"
    )
    assert error_code(ws.call("reply_to_ask", agent="nope", sender=sender, content="x")) == (
        "not_found"
    )


def test_steer_reaches_the_streamed_run(ws: Socket, fake_llm: FakeLLM, sender: str) -> None:
    fake_llm.script(
        FakeReply(tool_calls=[("sleep", {"seconds": 2})]), FakeReply(text="ok, French"),
        model="m-wssteer",
    )  # fmt: skip
    rid = ws.start("stream", agent="wssteer", content="say hello", sender=sender)
    start = next_event(ws, rid, "start")
    next_event(ws, rid, "tool_start")
    steered = ws.result("steer", agent="wssteer", sender=sender, content="answer in French")
    assert steered == {"run_id": start["run_id"]}
    events, run_id = ws.until_done(rid)
    assert run_id == start["run_id"]
    assert {"type": "user_steered", "content": "answer in French"} in events
    assert events[-1]["type"] == "end" and events[-1]["status"] == "succeeded"
    second = fake_llm.requests_for("m-wssteer")[-1]["messages"]
    assert second[-1] == {"role": "user", "content": "answer in French"}


def test_steer_errors(ws: Socket, sender: str) -> None:
    reply = ws.call("steer", agent="wssteer", sender=sender, content="x")
    assert error_code(reply) == "conflict" and "no active run" in reply["error"]["message"]
    assert error_code(ws.call("steer", agent="wssteer", sender=sender)) == "invalid"
    assert error_code(ws.call("steer", agent="nope", sender=sender, content="x")) == "not_found"


def test_compact_archives_the_history(
    ws: Socket, turns_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    fake_llm.script(
        FakeReply(text="first answer"), FakeReply(text="second answer"),
        FakeReply(text="The user said one, then two."), model="m-wscompact",
    )  # fmt: skip
    for content in ("one", "two"):
        rid = ws.start("stream", agent="wscompact", content=content, sender=sender)
        events, _ = ws.until_done(rid)
        assert events[-1]["status"] == "succeeded", events[-1]
    old = ws.result("get_history", agent="wscompact", sender=sender)["messages"]
    assert [m["content"] for m in old] == ["one", "first answer", "two", "second answer"]
    assert ws.result("get_archive", agent="wscompact", sender=sender) == {"archives": []}

    accepted = ws.result("compact", agent="wscompact", sender=sender)
    run_id = accepted["run_id"]
    assert accepted["events_url"] == f"/v1/runs/{run_id}/events"
    assert turns_cluster.wait_run(run_id)["status"] == "succeeded"

    [summary] = ws.result("get_history", agent="wscompact", sender=sender)["messages"]
    assert summary["role"] == "user" and summary["summary"] is True
    assert summary["content"] == (
        "[Summary of the conversation so far]\nThe user said one, then two."
    )
    [archive] = ws.result("get_archive", agent="wscompact", sender=sender)["archives"]
    assert archive["messages"] == old and archive["run_id"] == run_id
    compacted = [e for _, e in turns_cluster.events(run_id) if e["type"] == "compacted"]
    assert [(e["content"], e["archived"]) for e in compacted] == [("[context compacted]", 4)]
    transcript = fake_llm.requests_for("m-wscompact")[-1]["messages"][-1]["content"]
    assert "[user] one" in transcript and "[assistant] second answer" in transcript


def test_compact_and_get_archive_errors(ws: Socket, sender: str) -> None:
    assert error_code(ws.call("compact", agent="nope", sender=sender)) == "not_found"
    assert error_code(ws.call("compact", agent="wscompact", sender="bad one")) == "invalid"
    assert error_code(ws.call("get_archive", agent="nope", sender=sender)) == "not_found"
    assert error_code(ws.call("get_archive", agent="wscompact", sender="../x")) == "invalid"
    assert ws.result("get_archive", agent="wscompact", sender=sender) == {"archives": []}
