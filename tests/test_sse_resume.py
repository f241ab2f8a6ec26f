"""docs/design.md, invariant 5: SSE resumes with ``Last-Event-ID`` with no gap and no duplicate."""

from __future__ import annotations

from tests.cluster import Cluster, parse_sse


def test_reconnecting_with_last_event_id_after_every_event_gives_exactly_the_rest(
    cluster: Cluster, sender: str
) -> None:
    run_id = cluster.send("tooly", "time?", sender)
    full = cluster.events(run_id)
    assert full[-1][1]["type"] == "end"
    for k in range(len(full) - 1):
        assert cluster.events(run_id, last_event_id=full[k][0]) == full[k + 1 :]


def test_a_stream_cut_mid_run_resumes_where_it_stopped(cluster: Cluster, sender: str) -> None:
    run_id = cluster.send("slow", "count", sender)
    seen: list[tuple[str, dict[str, object]]] = []
    with cluster.http() as c, c.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        for item in parse_sse(resp.iter_lines()):
            seen.append(item)
            if len(seen) == 4:
                break  # the client drops the connection mid-run
    rest = cluster.events(run_id, last_event_id=seen[-1][0])
    whole = seen + rest
    assert whole == cluster.events(run_id), "no gap, no duplicate"
    assert [e["type"] for _, e in whole].count("chunk") == 20
    ids = [i for i, _ in whole]
    assert len(set(ids)) == len(ids)


def test_a_malformed_last_event_id_is_refused(cluster: Cluster, sender: str) -> None:
    run_id = cluster.send("echo", "hi", sender)
    with cluster.http() as c:
        resp = c.get(f"/v1/runs/{run_id}/events", headers={"Last-Event-ID": "nope"})
    assert resp.status_code == 422
    assert "Last-Event-ID" in resp.json()["error"]["message"]
