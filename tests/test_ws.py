"""``WS /v1/ws`` through the real gateway and workers, over a real WebSocket client."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.cluster import Cluster


class Socket:
    """A JSON-frame client: frames of other requests are kept until someone asks for them."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.frames: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []

    def send(self, frame: Any) -> None:
        self.conn.send(frame if isinstance(frame, str) else json.dumps(frame))

    def start(self, op: str, **args: Any) -> str:
        rid = uuid.uuid4().hex[:8]
        self.send({"id": rid, "op": op, **args})
        return rid

    def _read(self, timeout: float) -> dict[str, Any]:
        frame = json.loads(self.conn.recv(timeout=timeout))
        assert isinstance(frame, dict) and "id" in frame, frame
        self.log.append(frame)
        return frame

    def next(self, rid: Any, timeout: float = 30) -> dict[str, Any]:
        """The next frame of request ``rid``."""
        for i, frame in enumerate(self.frames):
            if frame["id"] == rid:
                return self.frames.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            frame = self._read(max(0.01, deadline - time.monotonic()))
            if frame["id"] == rid:
                return frame
            self.frames.append(frame)

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request and return its (first) reply."""
        return self.next(self.start(op, **args))

    def result(self, op: str, **args: Any) -> Any:
        reply = self.call(op, **args)
        assert reply["type"] == "result", reply
        return reply["result"]

    def until_done(self, rid: str, timeout: float = 60) -> tuple[list[dict[str, Any]], str]:
        """The event frames of a ``stream`` request, and the run id of its ``done`` frame."""
        events = []
        while True:
            frame = self.next(rid, timeout)
            if frame["type"] == "done":
                return events, frame["run_id"]
            assert frame["type"] == "event", frame
            events.append(frame["event"])


@pytest.fixture
def ws(cluster: Cluster) -> Iterator[Socket]:
    url = cluster.gateway_url.replace("http://", "ws://") + "/v1/ws"
    with connect(url, open_timeout=10) as conn:
        yield Socket(conn)


def error_code(reply: dict[str, Any]) -> str:
    assert reply["type"] == "error", reply
    assert reply["error"]["message"], reply
    return str(reply["error"]["code"])


def test_ping(ws: Socket) -> None:
    assert ws.call("ping") == {"id": ws.log[-1]["id"], "type": "pong"}
    ws.send({"id": 7, "op": "ping"})
    assert ws.next(7) == {"id": 7, "type": "pong"}


def test_stream_relays_the_run_until_end(ws: Socket, cluster: Cluster, sender: str) -> None:
    rid = ws.start("stream", agent="echo", content="hi", sender=sender)
    events, run_id = ws.until_done(rid)
    types = [e["type"] for e in events]
    assert types[0] == "start" and types[-1] == "end" and "chunk" in types
    assert events[0]["run_id"] == run_id and events[-1]["status"] == "succeeded"
    text = "".join(e["content"] for e in events if e["type"] == "chunk")
    assert text.split() == ["Hello", "from", "the", "mock", "model."]
    assert cluster.wait_run(run_id)["status"] == "succeeded"


def test_two_streams_on_one_socket_interleave_and_both_end(ws: Socket, sender: str) -> None:
    a = ws.start("stream", agent="slow", content="one", sender=f"{sender}-a")
    b = ws.start("stream", agent="slow", content="two", sender=f"{sender}-b")
    done: dict[str, str] = {}
    while len(done) < 2:
        frame = ws._read(60)
        if frame["type"] == "done":
            done[frame["id"]] = frame["run_id"]
    order = [f["id"] for f in ws.log if f["type"] == "event"]
    assert set(done) == {a, b} and done[a] != done[b]
    last_a = max(i for i, x in enumerate(order) if x == a)
    first_b = order.index(b)
    last_b = max(i for i, x in enumerate(order) if x == b)
    first_a = order.index(a)
    assert first_b < last_a and first_a < last_b  # the two relays overlap
    for rid in (a, b):
        ends = [f["event"] for f in ws.log if f["id"] == rid and f["type"] == "event"]
        assert ends[-1]["type"] == "end" and ends[-1]["status"] == "succeeded"


def test_send_answers_at_once(ws: Socket, cluster: Cluster, sender: str) -> None:
    result = ws.result("send", agent="echo", content="hello", sender=sender)
    assert result["events_url"] == f"/v1/runs/{result['run_id']}/events"
    assert cluster.wait_run(result["run_id"])["status"] == "succeeded"
    assert [m["role"] for m in cluster.history("echo", sender)] == ["user", "assistant"]


def test_send_with_an_idempotency_key_twice_is_one_run(ws: Socket, sender: str) -> None:
    first = ws.result("send", agent="echo", content="hi", sender=sender, idempotency_key="k")
    again = ws.result("send", agent="echo", content="hi", sender=sender, idempotency_key="k")
    assert first == again
    reused = ws.call("send", agent="echo", content="other", sender=sender, idempotency_key="k")
    assert error_code(reused) == "invalid"


def test_kill_cancels_the_streamed_run(ws: Socket, sender: str) -> None:
    assert ws.result("cancel_run", agent="slow", sender=sender) == {"run_id": None}
    rid = ws.start("stream", agent="slow", content="go", sender=sender)
    while ws.next(rid)["event"]["type"] != "chunk":
        pass
    killed = ws.result("cancel_run", agent="slow", sender=sender)
    events, run_id = ws.until_done(rid)
    assert killed == {"run_id": run_id}
    assert events[-1]["type"] == "end" and events[-1]["status"] == "cancelled"


def test_cancel_run_by_id_cancels_the_streamed_run(ws: Socket, sender: str) -> None:
    rid = ws.start("stream", agent="slow", content="go", sender=sender)
    while (event := ws.next(rid)["event"])["type"] != "start":
        pass
    assert ws.result("cancel_run_by_id", run_id=event["run_id"]) == {"run_id": event["run_id"]}
    events, run_id = ws.until_done(rid)
    assert run_id == event["run_id"] and events[-1]["status"] == "cancelled"
    assert ws.result("cancel_run_by_id", run_id=run_id) == {"run_id": None}  # it had ended


def test_conversations_history_and_agents(ws: Socket, cluster: Cluster, sender: str) -> None:
    run_id = ws.result("send", agent="echo", content="remember me", sender=sender)["run_id"]
    cluster.wait_run(run_id)
    history = ws.result("get_history", agent="echo", sender=sender)
    with cluster.http() as c:
        http_history = c.get(f"/v1/agents/echo/conversations/{sender}/history").json()
        http_agents = c.get("/v1/agents").json()
        http_echo = c.get("/v1/agents/echo").json()
    assert history == http_history
    assert history["messages"][0]["content"] == "remember me"
    assert ws.result("get_history", agent="echo", sender="nobody-here") == {"messages": []}
    convs = ws.result("list_conversations", agent="echo")["conversations"]
    assert sender in {c["sender"] for c in convs} and {c["agent"] for c in convs} == {"echo"}
    everyone = ws.result("list_conversations")["conversations"]
    assert len(everyone) >= len(convs)
    assert ws.result("list_agents") == http_agents
    assert ws.result("get_agent", agent="echo") == http_echo
    assert http_echo["description"] == "Replies at once"


def test_crons(ws: Socket) -> None:
    entry = ws.result("create_cron", schedule="@every 1h", agent="echo", message="tick")
    assert entry["agent"] == "echo" and entry["message"] == "tick" and entry["next_fire_at"]
    assert entry["id"] in {e["id"] for e in ws.result("list_crons")["crons"]}
    assert ws.result("get_cron", cron_id=entry["id"])["id"] == entry["id"]
    assert ws.result("delete_cron", cron_id=entry["id"]) == {"deleted": entry["id"]}
    assert entry["id"] not in {e["id"] for e in ws.result("list_crons")["crons"]}
    assert error_code(ws.call("delete_cron", cron_id=entry["id"])) == "not_found"
    assert error_code(ws.call("create_cron", schedule="@every 1h", agent="nope", message="x")) == (
        "not_found"
    )
    assert error_code(ws.call("create_cron", schedule="bogus", agent="echo", message="x")) == (
        "invalid"
    )
    assert error_code(ws.call("create_cron", agent="echo", message="x")) == "invalid"


def test_subscriptions_and_publish(ws: Socket, cluster: Cluster) -> None:
    source = f"test.ws.{uuid.uuid4().hex[:8]}"
    sub = ws.result("subscribe", source=source, target_agent="echo")
    try:
        assert sub["source"] == source and sub["target_agent"] == "echo" and sub["once"] is False
        assert sub in ws.result("list_subscriptions")["subscriptions"]
        fired = ws.result("publish", source=source, payload={"n": 1})["fired"]
        assert len(fired) == 1
        info = cluster.wait_run(fired[0])
        assert (info["agent"], info["sender"]) == ("echo", f"event:{source}")
        assert ws.result("publish", source=source + "x", payload="x") == {"fired": []}
    finally:
        assert ws.result("unsubscribe", sub_id=sub["id"]) == {"deleted": sub["id"]}
    assert error_code(ws.call("unsubscribe", sub_id=sub["id"])) == "not_found"
    assert error_code(ws.call("subscribe", source=source, target_agent="nope")) == ("not_found")
    assert error_code(ws.call("subscribe", source="bad source", target_agent="echo")) == ("invalid")


def test_subscribe_events_until_cancel(ws: Socket, cluster: Cluster, sender: str) -> None:
    feed = ws.start("feed", agent="paced")
    assert ws.next(feed)["type"] == "subscribed"
    run_id = cluster.send("paced", "watch me", sender)
    seen: list[dict[str, Any]] = []
    while not (seen and seen[-1]["type"] == "end"):
        frame = ws.next(feed)
        assert frame["type"] == "event", frame
        if frame["event"]["run_id"] == run_id:
            seen.append(frame["event"])
    assert seen[0]["type"] == "start"
    assert all(e["agent"] == "paced" and e["sender"] == sender for e in seen)
    assert ws.result("cancel", target=feed) == {"cancelled": feed}
    assert {"id": feed, "type": "cancelled"} in ws.log
    cluster.wait_run(cluster.send("paced", "unseen", sender))
    ws.call("ping")  # every frame sent before the pong has arrived
    after = ws.log.index({"id": feed, "type": "cancelled"})
    assert not [f for f in ws.log[after + 1 :] if f["id"] == feed]
    assert error_code(ws.call("cancel", target=feed)) == "not_found"


def test_a_request_id_in_flight_cannot_be_reused(ws: Socket) -> None:
    ws.send({"id": "feed", "op": "feed"})
    assert ws.next("feed")["type"] == "subscribed"
    ws.send({"id": "feed", "op": "ping"})
    assert error_code(ws.next("feed")) == "conflict"
    assert ws.result("cancel", target="feed") == {"cancelled": "feed"}
    assert ws.next("feed") == {"id": "feed", "type": "cancelled"}
    ws.send({"id": "feed", "op": "ping"})
    assert ws.next("feed") == {"id": "feed", "type": "pong"}


def test_reload(ws: Socket) -> None:
    result = ws.result("reload")
    assert isinstance(result["generation"], int) and "echo" in result["agents"]


def test_errors_keep_the_socket_open(ws: Socket, sender: str) -> None:
    ws.send("{not json")
    assert error_code(ws.next(None)) == "invalid"
    ws.send("[1, 2]")
    assert error_code(ws.next(None)) == "invalid"
    ws.send({"id": "no-op", "content": "x"})
    assert error_code(ws.next("no-op")) == "invalid"
    assert error_code(ws.call("no_such_op")) == "not_found"
    assert error_code(ws.call("stream", agent="nope", content="x")) == "not_found"
    assert error_code(ws.call("send", agent="nope", content="x")) == "not_found"
    assert error_code(ws.call("send", agent="Bad Name", content="x")) == "invalid"
    assert error_code(ws.call("send", agent="echo", content="x", sender="bad sender!")) == (
        "invalid"
    )
    assert error_code(ws.call("send", agent="echo", sender=sender)) == "invalid"  # no content
    assert error_code(ws.call("send", content="x")) == "invalid"  # no agent
    assert error_code(ws.call("get_history", agent="echo", sender="../etc")) == "invalid"
    assert error_code(ws.call("get_agent", agent="nope")) == "not_found"
    assert error_code(ws.call("cancel_run", agent="nope")) == "not_found"
    assert error_code(ws.call("cancel", target="nothing")) == "not_found"
    assert error_code(ws.call("cancel")) == "invalid"
    assert error_code(ws.call("feed", agent="nope")) == "not_found"
    assert ws.call("ping")["type"] == "pong"


def test_runs_are_listed_and_read_like_over_http(ws: Socket, cluster: Cluster, sender: str) -> None:
    run_id = ws.result("send", agent="echo", content="hi", sender=sender)["run_id"]
    cluster.wait_run(run_id)
    run = ws.result("get_run", run_id=run_id)
    assert run["run_id"] == run_id and run["status"] == "succeeded"
    page = ws.result("list_runs", agent="echo", sender=sender, status=["succeeded"], limit=5)
    assert [r["run_id"] for r in page["runs"]] == [run_id]
    assert error_code(ws.call("get_run", run_id="no such run")) == "invalid"
    assert error_code(ws.call("list_runs", limit=0)) == "invalid"  # Query(ge=1) holds here too
    assert error_code(ws.call("list_runs", status=["nope"])) == "invalid"


def test_the_older_op_names_still_answer(ws: Socket, sender: str) -> None:
    """Renamed ops keep their old names as aliases: kill, subscribe_event, unsubscribe_event,
    publish_event, list_models, subscribe_events."""
    assert ws.result("kill", agent="slow", sender=sender) == {"run_id": None}
    assert "providers" in ws.result("list_models")
    source = f"alias.{uuid.uuid4().hex[:6]}"
    sub = ws.result("subscribe_event", source=source, target_agent="echo")
    assert ws.result("publish_event", source=source + "x", payload="x") == {"fired": []}
    assert ws.result("unsubscribe_event", sub_id=sub["id"]) == {"deleted": sub["id"]}
    feed = ws.start("subscribe_events", agent="echo")
    assert ws.next(feed)["type"] == "subscribed"
    assert ws.result("cancel", target=feed) == {"cancelled": feed}
