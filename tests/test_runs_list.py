"""``GET /v1/runs``: every run, newest first, filtered by agent, sender and status, paged by
cursor — over HTTP and through both Python clients."""

from __future__ import annotations

import asyncio

from tests.cluster import Cluster
from walrus_tasks import AsyncClient, Client, keys


def test_runs_are_listed_newest_first_with_filters_and_cursor_pages(
    cluster: Cluster, sender: str
) -> None:
    ids = [cluster.send("echo", f"m{i}", sender) for i in range(5)]
    for run_id in ids:
        cluster.wait_run(run_id)
    failed = cluster.send("broken", "fail please", sender)
    assert cluster.wait_run(failed)["status"] == "failed"

    with cluster.http() as c:
        mine = c.get("/v1/runs", params={"sender": sender, "limit": 200}).json()
        assert [r["run_id"] for r in mine["runs"]] == [failed, *reversed(ids)]
        assert mine["next_cursor"] is None

        echo_ok = c.get(
            "/v1/runs", params={"sender": sender, "agent": "echo", "status": "succeeded"}
        ).json()["runs"]
        assert [r["run_id"] for r in echo_ok] == list(reversed(ids))
        both = c.get(
            "/v1/runs", params=[("sender", sender), ("status", "failed"), ("status", "cancelled")]
        ).json()["runs"]
        assert [(r["run_id"], r["error"] is not None) for r in both] == [(failed, True)]

        # Pages of two: every run once, in order, however runs are added meanwhile.
        seen, cursor = [], None
        while True:
            params = {"sender": sender, "limit": 2, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v1/runs", params=params).json()
            seen += [r["run_id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            cluster.send("echo", "a newer run does not shift the pages", f"{sender}-other")
            if not cursor:
                break
        assert seen == [failed, *reversed(ids)]

        for bad in ({"status": "lost"}, {"limit": 0}, {"cursor": "nope"}):
            resp = c.get("/v1/runs", params=bad)
            assert resp.status_code == 422, (bad, resp.text)
            assert resp.json()["error"]["code"] == "invalid"

    with Client(cluster.gateway_url) as client:
        page = client.runs(agent="broken", sender=sender)
        assert [r.run_id for r in page.runs] == [failed]

    async def via_async() -> list[str]:
        async with AsyncClient(cluster.gateway_url) as client:
            page = await client.runs(limit=2, sender=sender, status=["succeeded"])
            return [r.run_id for r in page.runs]

    assert asyncio.run(via_async()) == list(reversed(ids))[:2]


def test_a_run_whose_record_expired_is_dropped_from_the_index(
    cluster: Cluster, sender: str
) -> None:
    gone, kept = (cluster.send("echo", "hi", sender) for _ in range(2))
    cluster.wait_run(gone), cluster.wait_run(kept)
    r = cluster.redis()
    r.delete(keys.run(gone))
    with cluster.http() as c:
        runs = c.get("/v1/runs", params={"sender": sender}).json()["runs"]
    assert [x["run_id"] for x in runs] == [kept]
    assert (
        r.zscore(keys.run_index("runs", gone), gone) is None
        and r.zscore(keys.run_index("runs", kept), kept) is not None
    )
