"""``walrus flower``: real Flower on a real worker's broker shows every task of a walrus run."""

from __future__ import annotations

import ast
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cluster import Cluster, wait_for
from walrus_tasks.celery_app import DRAIN, REAP, STEP, TOOL_CALL
from walrus_tasks.redis_server import free_port, start_redis

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "compose" / "docker-compose.yml"


@pytest.fixture
def flower_cluster(home: Path, tmp_path: Path) -> Iterator[Cluster]:
    """An empty cluster on a Redis of its own: Flower sees every event of its broker."""
    server = start_redis(tmp_path / "redis")
    cluster = Cluster(redis_url=server.url, home=home, log_dir=tmp_path)
    try:
        yield cluster  # stop() ends Flower too: it was started as one of the cluster's processes
    finally:
        cluster.stop()
        server.stop()


def start_flower(cluster: Cluster, auth: str) -> str:
    """Start ``walrus flower`` on a free port with basic auth from WALRUS_FLOWER_BASIC_AUTH."""
    port = free_port()
    env = cluster.env()
    env["WALRUS_FLOWER_BASIC_AUTH"] = auth
    cluster._spawn("flower", ["walrus_tasks.cli", "flower", "--port", str(port)], env)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        cluster.check_alive()
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).text == "OK"
        except httpx.HTTPError:
            return False

    wait_for(answers, 30, 0.1, "flower /healthcheck")
    return url


def test_flower_shows_a_runs_tasks_with_their_run_id_and_agent(
    flower_cluster: Cluster, sender: str
) -> None:
    flower_cluster.env_extra["WALRUS_REAPER_INTERVAL"] = "0.5"
    flower_cluster.start_gateway()
    flower_cluster.start_worker("worker1")
    flower_cluster.start_beat()
    flower_cluster.wait_ready()
    password = uuid.uuid4().hex
    url = start_flower(flower_cluster, f"ops:{password}")
    # The broker URL (a password in it, in production) is not on Flower's command line.
    cmdline = Path(f"/proc/{flower_cluster.procs['flower'].pid}/cmdline").read_bytes()
    assert flower_cluster.redis_url.encode() not in cmdline
    assert password.encode() not in cmdline

    with httpx.Client(base_url=url, timeout=10, auth=("ops", password)) as flower:
        assert httpx.get(f"{url}/api/workers", timeout=10).status_code == 401
        assert httpx.get(f"{url}/api/tasks", auth=("ops", "wrong"), timeout=10).status_code == 401
        # Flower only sees events sent after it subscribed: wait for the worker's heartbeat.
        wait_for(
            lambda: flower.get("/api/workers", params={"status": "true"}).json().get(
                "worker1@test"
            ),
            30, 0.2, "flower to see worker1's heartbeat",
        )  # fmt: skip

        run_id = flower_cluster.send("tooly", "what time is it?", sender)
        assert flower_cluster.wait_run(run_id)["status"] == "succeeded"

        def run_tasks() -> dict[str, list[dict[str, Any]]] | None:
            tasks = flower.get("/api/tasks").json().values()
            ours: dict[str, list[dict[str, Any]]] = {DRAIN: [], STEP: [], TOOL_CALL: []}
            for task in tasks:
                args = ast.literal_eval(task["args"] or "()")
                if task["name"] in ours and sender in args:
                    ours[task["name"]].append({**task, "args": args})
            done = all(t["state"] == "SUCCESS" for ts in ours.values() for t in ts)
            # tooly: a drain (which runs step 0 in place), three clock calls, and step 1,
            # a task of its own, that writes the reply.
            if done and ours[DRAIN] and len(ours[TOOL_CALL]) == 3 and ours[STEP]:
                return ours
            return None

        ours = wait_for(run_tasks, 30, 0.2, f"flower to show run {run_id}'s tasks succeeded")
        for drain in ours[DRAIN]:
            assert drain["args"][:2] == ("tooly", sender)
            assert ast.literal_eval(drain["kwargs"]) == {"run_id": run_id}  # Flower shows it
            assert run_id in drain["result"], "the run the drain started is its result"
        # The reaper swept all along (every 0.5 s), yet Flower lists none of its tasks.
        worker_log = flower_cluster.log_dir / "worker1.log"
        wait_for(lambda: REAP in worker_log.read_text(), 30, 0.2, "a reaper task")
        assert REAP not in {t["name"] for t in flower.get("/api/tasks").json().values()}
        for task in ours[STEP] + ours[TOOL_CALL]:
            assert task["args"][:3] == ("tooly", sender, run_id), task
            assert task["worker"] == "worker1@test"
        assert [t["args"][-1] for t in ours[STEP]] == [1]  # step number
        assert sorted(t["args"][-2:] for t in ours[TOOL_CALL]) == [(0, 0), (0, 1), (0, 2)]

        workers = flower.get("/api/workers", params={"refresh": "true"}).json()
        assert "worker1@test" in workers
        assert {DRAIN, STEP, TOOL_CALL} <= set(workers["worker1@test"]["registered"])

        # The compose healthcheck of the flower service answers against this Flower.
        check = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["flower"]["healthcheck"]
        script = check["test"][-1]
        assert "127.0.0.1:5555/" in script
        port = url.rsplit(":", 1)[1]
        result = subprocess.run(
            [sys.executable, "-c", script.replace(":5555/", f":{port}/")],
            capture_output=True, timeout=30,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
