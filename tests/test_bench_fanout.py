"""``python -m bench --only fanout`` on each face, small: every stream complete, the face named.

Each run starts the bench's own Redis, gateway and workers (``bench.procs``); 20 clients on 2
runs, each run held by its gate runs until every client is connected (docs/benchmarks.md,
figure 5).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.streams import FACES
from walrus_tasks import heap

ROOT = Path(__file__).resolve().parents[1]
CLIENTS, RUNS = 20, 2


@pytest.mark.parametrize("face", list(FACES))
def test_the_fanout_of_each_face_completes_every_stream_and_names_the_face(face: str) -> None:
    args = ["--only", "fanout", "--fanout", str(CLIENTS), "--fanout-runs", str(RUNS)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--fanout-face", face, "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    fan = json.loads(done.stdout)["fanout"]
    assert fan["face"] == face and fan["final_event"] == FACES[face].final
    assert fan["failures"] == {}, fan
    assert fan["complete_streams"] == fan["completed_streams"] == CLIENTS, fan
    assert fan["runs_succeeded"] == RUNS and fan["runs_started_before_release"] == 0, fan
    assert fan["peak_open_streams"] == CLIENTS, fan  # all open before their run started
    [events] = fan["events_per_run"]
    assert events > 40, fan  # the fanout agent's 40 chunks, and more
    assert all(seen == [events] for seen in fan["events_seen_per_run"].values()), fan


def test_an_agent_protocol_run_followed_by_more_streams_than_the_redis_pool_holds() -> None:
    # Found by the bench at 300 clients: every stream read the thread's history at the run's
    # start at once, past the asyncio client's 100 connections ("Too many connections"), and
    # most streams ended with an error. Now one read serves them all, and the pool is bounded.
    clients = 150
    args = ["--only", "fanout", "--fanout", str(clients), "--fanout-runs", "1"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--fanout-face", "agent-protocol", "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    fan = json.loads(done.stdout)["fanout"]
    assert fan["failures"] == {}, fan
    assert fan["complete_streams"] == clients, fan
    assert fan["peak_open_streams"] == clients, fan


def test_post_streams_opens_each_face_s_streams_and_measures_them() -> None:
    """``python -m bench.post_streams``, small: every stream answered 200 on each face."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.post_streams", "--streams", "20", "--concurrency", "10"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=150,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    assert [r["face"] for r in results] == ["openai", "anthropic", "native", "responses", "mcp"]
    for r in results:
        assert r["answered_200"] == r["streams"] == 20 and r["other_statuses"] == [], r
        assert r["rss_open_kb"] > 0 and isinstance(r["rss_growth_per_stream_kb"], float), r


def test_the_fanout_s_heap_snapshot_is_taken_while_every_client_is_connected(
    tmp_path: Path,
) -> None:
    """``--fanout-heap``: the gateway traces from just before the clients connect, writes one
    snapshot once they all are (``walrus_tasks.heap``), and every stream still completes."""
    args = ["--only", "fanout", "--fanout", str(CLIENTS), "--fanout-runs", str(RUNS)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--fanout-heap", str(tmp_path), "--json"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    fan = json.loads(done.stdout)["fanout"]
    assert fan["complete_streams"] == CLIENTS, fan
    traced = fan["heap"]
    [snapshot] = tmp_path.glob("gateway-*-1.heap")
    assert traced["snapshot"] == str(snapshot) and traced["per"] == CLIENTS, traced
    assert traced["total_kb_per"] > 1 and traced["by_line"] and traced["by_file"], traced
    places = {row["where"].split(":")[0] for row in traced["by_line"]}
    assert any(p.startswith("gateway/") for p in places), places  # our own, named as such


def test_without_walrus_heap_dir_the_heap_snapshots_install_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(heap.ENV, raising=False)
    before = signal.getsignal(heap.SIGNAL)
    assert heap.install("gateway") is False
    assert signal.getsignal(heap.SIGNAL) is before
