"""A message through the real gateway, broker and worker processes, and back as SSE."""

from __future__ import annotations

import json
import re
import socket

from tests.cluster import Cluster, parse_sse


def types(events: list[tuple[str, dict[str, object]]]) -> list[object]:
    return [e["type"] for _, e in events]


def test_send_streams_events_and_history_holds_both_messages(cluster: Cluster, sender: str) -> None:
    run_id = cluster.send("echo", "hello there", sender)
    events = cluster.events(run_id)
    assert types(events) == ["start", "text_start", *["chunk"] * 5, "text_end", "end"]
    start, end = events[0][1], events[-1][1]
    assert start == {"type": "start", "run_id": run_id, "agent": "echo", "sender": sender}
    assert end["status"] == "succeeded" and end["model"] == "mock"
    assert end["usage"]["output_tokens"] == 5  # type: ignore[index]
    text = "".join(str(e["content"]) for _, e in events if e["type"] == "chunk")
    assert text == "Hello from the mock model."
    history = cluster.history("echo", sender)
    assert [(m["role"], m["content"], m["run_id"]) for m in history] == [
        ("user", "hello there", run_id),
        ("assistant", "Hello from the mock model.", run_id),
    ]
    with cluster.http() as c:
        info = c.get(f"/v1/runs/{run_id}").json()
    assert info["status"] == "succeeded" and info["agent"] == "echo" and info["sender"] == sender
    assert info["created_at"] <= info["started_at"] <= info["finished_at"]


def test_stream_true_answers_with_the_run_events(cluster: Cluster, sender: str) -> None:
    with (
        cluster.http() as c,
        c.stream(
            "POST",
            "/v1/agents/echo/messages",
            json={"content": "hi", "sender": sender, "stream": True},
        ) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = list(parse_sse(resp.iter_lines()))
    assert types(events)[0] == "start" and events[-1][1]["status"] == "succeeded"
    assert all(entry_id for entry_id, _ in events), "every frame carries its stream entry id"


def test_a_text_s_start_and_its_first_chunk_reach_the_client_in_one_http_chunk(
    cluster: Cluster, sender: str
) -> None:
    """``emit.lua`` appends both in one call; the stream writes what one read brought at once."""
    body = json.dumps({"content": "hi", "sender": sender, "stream": True}).encode()
    port = int(cluster.gateway_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/agents/echo/messages HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Connection: close\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            b"%s" % (port, len(body), body)
        )
        raw = b""
        while data := sock.recv(65536):
            raw += data
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    chunks: list[bytes] = []  # the body's HTTP chunks, as the gateway wrote them
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        chunks.append(rest[: int(size, 16)])
        rest = rest[int(size, 16) + 2 :]
    kinds = [re.findall(rb"^event: (\w+)$", c, re.MULTILINE) for c in chunks]
    assert kinds[-1] == [], "the body's end"
    assert [k for ks in kinds for k in ks][-1] == b"end"
    burst = next(ks for ks in kinds if b"text_start" in ks)  # the run's start may be in it too
    at = burst.index(b"text_start")
    assert burst[at : at + 2] == [b"text_start", b"chunk"], kinds


def test_parallel_tool_calls_land_in_history_in_call_order(cluster: Cluster, sender: str) -> None:
    run_id = cluster.send("tooly", "what time is it?", sender)
    events = cluster.events(run_id)
    kinds = types(events)
    assert kinds[:2] == ["start", "tool_start"]
    assert kinds[2:5] == ["tool_result"] * 3 and kinds[5] == "tools_complete"
    assert events[-1][1]["status"] == "succeeded"
    results = [e for _, e in events if e["type"] == "tool_result"]
    assert {r["call_id"] for r in results} == {"call_0", "call_1", "call_2"}
    assert all(isinstance(r["output"], str) and not r["is_error"] for r in results)
    history = cluster.history("tooly", sender)
    assert [m["role"] for m in history] == [
        "user",
        "assistant",
        "tool",
        "tool",
        "tool",
        "assistant",
    ]
    assert [m["tool_call_id"] for m in history[2:5]] == ["call_0", "call_1", "call_2"]
    assert history[-1]["content"] == "It is late."


def test_a_tool_outside_the_agent_whitelist_is_not_available(cluster: Cluster, sender: str) -> None:
    run_id = cluster.send("outsider", "use the clock", sender)
    events = cluster.events(run_id)
    result = next(e for _, e in events if e["type"] == "tool_result")
    assert result["is_error"] and result["output"] == "tool not available: clock"
    assert events[-1][1]["status"] == "succeeded"


def test_a_provider_failure_ends_the_run_failed_and_the_worker_carries_on(
    cluster: Cluster, sender: str
) -> None:
    run_id = cluster.send("broken", "hi", sender)
    end = cluster.events(run_id)[-1][1]
    assert end["type"] == "end" and end["status"] == "failed"
    assert end["error"] == "mock: the mock model was told to fail"
    assert cluster.wait_run(run_id)["error"] == "mock: the mock model was told to fail"
    ok = cluster.send("echo", "still there?", sender)
    assert cluster.wait_run(ok)["status"] == "succeeded"


def test_the_step_budget_stops_a_runaway_run(cluster: Cluster, sender: str) -> None:
    run_id = cluster.send("budget", "loop", sender)
    end = cluster.events(run_id)[-1][1]
    assert end["status"] == "failed"
    assert end["error"] == "step budget exhausted: max_iterations=1"


def test_agents_and_conversations_are_listed(cluster: Cluster, sender: str) -> None:
    cluster.wait_run(cluster.send("echo", "hi", sender))
    with cluster.http() as c:
        agents = c.get("/v1/agents").json()["agents"]
        echo = c.get("/v1/agents/echo").json()
        convs = c.get("/v1/conversations", params={"agent": "echo"}).json()["conversations"]
    assert "echo" in {a["name"] for a in agents}
    assert echo["model"] == "mock" and echo["description"] == "Replies at once"
    mine = [cv for cv in convs if cv["sender"] == sender]
    assert mine and mine[0]["agent"] == "echo" and mine[0]["active_run"] is None


def test_every_endpoint_is_in_the_openapi_document(cluster: Cluster) -> None:
    with cluster.http() as c:
        paths = c.get("/openapi.json").json()["paths"]
    for path in [
        "/v1/agents/{agent}/messages",
        "/v1/runs/{run_id}",
        "/v1/runs/{run_id}/events",
        "/v1/agents/{agent}/conversations/{sender}/kill",
        "/v1/agents/{agent}/conversations/{sender}/history",
        "/v1/conversations",
        "/v1/agents",
        "/v1/agents/{agent}",
        "/healthz",
    ]:
        assert path in paths, path


def test_worker_logs_are_json_lines_carrying_the_run(cluster: Cluster, sender: str) -> None:
    from tests.cluster import wait_for

    run_id = cluster.send("echo", "hi", sender)
    cluster.wait_run(run_id)

    def logged() -> dict[str, object] | None:
        for name in ("worker1", "worker2"):
            for line in (cluster.log_dir / f"{name}.log").read_text().splitlines():
                if run_id in line and line.startswith("{"):
                    record = json.loads(line)
                    if record.get("msg") == "run succeeded":
                        return record  # type: ignore[no-any-return]
        return None

    record = wait_for(logged, 10, 0.1, "the run's log line")
    assert record["agent"] == "echo" and record["sender"] == sender
    assert record["run_id"] == run_id and record["task_id"]
