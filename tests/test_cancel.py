"""docs/design.md, invariant 6 (cancellation) and ``on_busy``: reject and interrupt."""

from __future__ import annotations

import time

from tests.cluster import Cluster, parse_sse, wait_for


def test_kill_mid_stream_ends_the_run_cancelled_promptly_and_keeps_what_was_said(
    cluster: Cluster, sender: str
) -> None:
    run_id = cluster.send("slow", "count", sender)
    chunks: list[str] = []
    with cluster.http() as c, c.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        events = parse_sse(resp.iter_lines())
        for _, event in events:
            if event["type"] == "chunk":
                chunks.append(str(event["content"]))
                if len(chunks) == 3:
                    break
        killed = c.post(f"/v1/agents/slow/conversations/{sender}/kill")
        kill_at = time.monotonic()
        assert killed.status_code == 200 and killed.json() == {"run_id": run_id}
        for _, event in events:
            if event["type"] == "chunk":
                chunks.append(str(event["content"]))
            if event["type"] == "end":
                ended_after = time.monotonic() - kill_at
                assert event["status"] == "cancelled"
                break
    assert ended_after < 1.0, f"end{{cancelled}} came {ended_after:.2f}s after the kill"
    assert len(chunks) < 20
    history = cluster.history("slow", sender)
    assert [m["role"] for m in history] == ["user", "assistant"]
    assert history[1]["content"] == "".join(chunks), "history keeps exactly what was streamed"
    assert cluster.wait_run(run_id)["status"] == "cancelled"


def test_the_next_message_after_a_kill_continues_the_conversation(
    cluster: Cluster, sender: str
) -> None:
    run_id = cluster.send("paced", "first", sender)
    with cluster.http() as c:
        c.post(f"/v1/agents/paced/conversations/{sender}/kill")
    cluster.wait_run(run_id)
    nxt = cluster.send("paced", "second", sender)
    assert cluster.wait_run(nxt)["status"] == "succeeded"
    history = cluster.history("paced", sender)
    assert [m["content"] for m in history if m["role"] == "user"] == ["first", "second"]
    assert history[-1] == {"role": "assistant", "content": "a b c d e", "run_id": nxt}


def test_kill_with_nothing_running_returns_null(cluster: Cluster, sender: str) -> None:
    with cluster.http() as c:
        resp = c.post(f"/v1/agents/echo/conversations/{sender}/kill")
    assert resp.status_code == 200 and resp.json() == {"run_id": None}


def test_on_busy_reject_answers_409_while_a_run_is_active(cluster: Cluster, sender: str) -> None:
    active = cluster.send("slow", "long one", sender)
    with cluster.http() as c:
        resp = c.post(
            "/v1/agents/slow/messages",
            json={"content": "me too", "sender": sender, "on_busy": "reject"},
        )
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "conflict"
        c.post(f"/v1/agents/slow/conversations/{sender}/kill")
    cluster.wait_run(active)
    assert [m["content"] for m in cluster.history("slow", sender) if m["role"] == "user"] == [
        "long one"
    ]
    idle = cluster.send("echo", "now free", sender, on_busy="reject")
    assert cluster.wait_run(idle)["status"] == "succeeded"


def test_on_busy_interrupt_cancels_the_active_run_and_runs_the_new_one(
    cluster: Cluster, sender: str
) -> None:
    first = cluster.send("slow", "long one", sender)
    with cluster.http() as c, c.stream("GET", f"/v1/runs/{first}/events") as resp:
        for line in resp.iter_lines():
            if line == "event: chunk":
                break
    second = cluster.send("slow", "never mind", sender, on_busy="interrupt")
    assert cluster.wait_run(first)["status"] == "cancelled"
    assert cluster.wait_run(second)["status"] == "succeeded"
    users = [m["content"] for m in cluster.history("slow", sender) if m["role"] == "user"]
    assert users == ["long one", "never mind"]


def test_kill_during_a_tool_call_interrupts_the_tool_and_ends_the_run(
    cluster: Cluster, sender: str
) -> None:
    run_id = cluster.send("sleepy", "take a nap", sender)  # the tool sleeps 5 s
    with cluster.http() as c, c.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        events = parse_sse(resp.iter_lines())
        for _, event in events:
            if event["type"] == "tool_start":
                break
        killed_at = time.monotonic()
        assert c.post(f"/v1/agents/sleepy/conversations/{sender}/kill").json() == {"run_id": run_id}
        rest = [e for _, e in events]
    ended_after = time.monotonic() - killed_at
    assert [e["type"] for e in rest] == ["tool_result", "tools_complete", "end"]
    assert rest[0]["output"] == "cancelled" and rest[0]["is_error"]
    assert rest[0]["duration_ms"] < 4000, "the tool did not sleep its 5 s out"
    assert rest[-1]["status"] == "cancelled"
    assert ended_after < 1.0, f"end{{cancelled}} came {ended_after:.2f}s after the kill"
    history = cluster.history("sleepy", sender)
    assert [m["role"] for m in history] == ["user", "assistant", "tool"]
    assert history[-1]["content"] == "cancelled"


def test_a_run_is_cancelled_by_its_id_running_or_queued(cluster: Cluster, sender: str) -> None:
    """``POST /v1/runs/{id}/cancel``: any face's run, by the id every face's own id names."""
    running = cluster.send("slow", "count", sender)
    queued = cluster.send("slow", "and again", sender)  # behind the first, in the inbox
    with cluster.http() as c:
        wait_for(lambda: c.get(f"/v1/runs/{running}").json()["status"] == "running", 20)
        assert c.post(f"/v1/runs/{queued}/cancel").json() == {"run_id": queued}
        assert c.post(f"/v1/runs/{running}/cancel").json() == {"run_id": running}
        assert cluster.wait_run(running)["status"] == "cancelled"
        assert cluster.wait_run(queued)["status"] == "cancelled"
        assert c.post(f"/v1/runs/{running}/cancel").json() == {"run_id": None}  # ended
        unknown = c.post(f"/v1/runs/{'0' * 32}/cancel")
        assert unknown.status_code == 404, unknown.text
