"""docs/design.md, invariant 1: total order per conversation; conversations run in parallel."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any

from tests.cluster import Cluster
from walrus_tasks import keys


def run_infos(cluster: Cluster, run_ids: list[str]) -> list[dict[str, Any]]:
    return [cluster.wait_run(r) for r in run_ids]


def assert_ordered(cluster: Cluster, agent: str, sender: str, infos: list[dict[str, Any]]) -> None:
    """History holds each run's user + assistant pair, in acceptance (``seq``) order."""
    by_seq = [i["run_id"] for i in sorted(infos, key=lambda i: i["seq"])]
    history = cluster.history(agent, sender)
    assert [m["run_id"] for m in history if m["role"] == "user"] == by_seq
    assert [m["run_id"] for m in history] == [r for r in by_seq for _ in (0, 1)]
    # one at a time: each run starts after the previous one finished
    ordered = sorted(infos, key=lambda i: i["seq"])
    for prev, nxt in pairwise(ordered):
        assert nxt["started_at"] >= prev["finished_at"]


def test_50_concurrent_messages_to_one_conversation_run_in_acceptance_order(
    cluster: Cluster, sender: str
) -> None:
    with ThreadPoolExecutor(max_workers=10) as pool:
        run_ids = list(pool.map(lambda i: cluster.send("echo", f"m{i}", sender), range(50)))
    infos = run_infos(cluster, run_ids)
    assert [i["status"] for i in infos] == ["succeeded"] * 50
    assert sorted(i["seq"] for i in infos) == list(range(1, 51))
    assert_ordered(cluster, "echo", sender, infos)


def test_conversations_are_each_ordered_and_run_in_parallel(cluster: Cluster) -> None:
    senders = [f"p-{uuid.uuid4().hex[:8]}-{n}" for n in range(20)]
    jobs = [(s, i) for i in range(10) for s in senders]
    with ThreadPoolExecutor(max_workers=16) as pool:
        run_ids = list(pool.map(lambda j: cluster.send("paced", f"m{j[1]}", j[0]), jobs))
    infos = run_infos(cluster, run_ids)
    assert all(i["status"] == "succeeded" for i in infos)
    for s in senders:
        assert_ordered(cluster, "paced", s, [i for i in infos if i["sender"] == s])
    # Two workers x 2 slots: runs of different conversations overlap in time.
    spans = sorted((i["started_at"], i["finished_at"], i["sender"]) for i in infos)
    overlaps = sum(1 for (_, f1, a), (s2, _, b) in pairwise(spans) if a != b and s2 < f1)
    assert overlaps > 0, "no two conversations ever ran at the same time"


def test_no_message_is_stranded_when_sends_race_the_lease_release(cluster: Cluster) -> None:
    """Bursts of sends timed to land while the previous run is releasing its lease."""
    import random
    import time

    rng = random.Random(11)
    senders = [f"race-{uuid.uuid4().hex[:8]}-{n}" for n in range(4)]

    def burst(s: str) -> list[str]:
        ids = []
        for _ in range(25):
            ids.append(cluster.send("echo", "ping", s))
            time.sleep(rng.choice([0, 0, 0.001, 0.003, 0.005, 0.01]))
        return ids

    with ThreadPoolExecutor(max_workers=4) as pool:
        batches = list(pool.map(burst, senders))
    r = cluster.redis()
    for s, ids in zip(senders, batches, strict=True):
        infos = run_infos(cluster, ids)
        assert [i["status"] for i in infos] == ["succeeded"] * len(ids)
        assert_ordered(cluster, "echo", s, infos)
        cid = f"echo:{s}"
        assert r.llen(keys.conv(cid, "inbox")) == 0
        # the last run's end and the release are one Lua script: no lease may be left behind
        assert not r.exists(keys.conv(cid, "lease"))
