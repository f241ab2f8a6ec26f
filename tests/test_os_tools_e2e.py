"""The OS tools through real processes: a gateway, an LLM worker and two tool workers.

A fake OpenAI-protocol server scripts the model; the agents work in their own directories.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster, wait_for
from tests.conftest import redis_db_url, write_home
from tests.fakellm import FakeLLM, FakeReply
from tests.test_os_tools import gone, marker, running
from walrus_tasks.redis_server import RedisServer

TOOL_WORKERS = ("tools-a", "tools-b")
AGENTS = ("os-edit", "os-parallel", "os-cancel")
"""One agent per test: its own fake model (``fake/m-<agent>``) and working directory."""


@pytest.fixture(scope="module")
def os_cluster(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Steps on one worker; tool calls only on two others (each with two pool processes)."""
    home = write_home(tmp_path_factory.mktemp("os-home"), fake_llm.base_url)
    for name in AGENTS:
        workdir = tmp_path_factory.mktemp(f"ws-{name}")
        (home / "agents" / f"{name}.toml").write_text(
            textwrap.dedent(f"""
            model = "fake/m-{name}"
            tools = ["bash", "read", "write", "edit"]
            workdir = "{workdir}"
            """)
        )
    c = Cluster(
        redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path_factory.mktemp("logs")
    )
    try:
        c.start_gateway()
        c.start_worker("worker-llm", queues="walrus.runs,walrus.control")
        for name in TOOL_WORKERS:
            c.start_worker(name, queues="walrus.tools", concurrency=2)
        c.wait_ready()
        yield c
    finally:
        c.stop()


def workdir(cluster: Cluster, agent: str) -> Path:
    text = (cluster.home / "agents" / f"{agent}.toml").read_text()
    return Path(text.split('workdir = "', 1)[1].split('"', 1)[0])


def test_an_agent_runs_a_command_reads_and_edits_a_file(
    os_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    create = "printf 'name = walrus\\nsize = 1\\n' > notes.txt && ls"
    edit = {"path": "notes.txt", "old_string": "size = 1", "new_string": "size = 2"}
    fake_llm.script(
        FakeReply(tool_calls=[("bash", {"command": create})]),
        FakeReply(tool_calls=[("read", {"path": "notes.txt"})]),
        FakeReply(tool_calls=[("edit", edit)]),
        FakeReply(text="Done: size is 2."),
        model="m-os-edit",
    )
    run_id = os_cluster.send("os-edit", "bump the size", sender)
    assert os_cluster.wait_run(run_id)["status"] == "succeeded"

    assert (workdir(os_cluster, "os-edit") / "notes.txt").read_text() == "name = walrus\nsize = 2\n"
    history = os_cluster.history("os-edit", sender)
    assert [m["role"] for m in history] == ["user"] + ["assistant", "tool"] * 3 + ["assistant"]
    tools = [m for m in history if m["role"] == "tool"]
    assert [t["name"] for t in tools] == ["bash", "read", "edit"]
    assert not any(t["is_error"] for t in tools), tools
    listing = {"stdout": "notes.txt\n", "stderr": "", "exit_code": 0}
    assert json.loads(tools[0]["content"]) == listing
    assert tools[1]["content"] == "name = walrus\nsize = 1\n"
    assert tools[2]["content"] == "edited notes.txt: replaced 1 occurrence"
    assert history[-1]["content"] == "Done: size is 2."
    first = fake_llm.requests_for("m-os-edit")[0]
    offered = {t["function"]["name"] for t in first["tools"]}
    assert offered == {"bash", "read", "write", "edit"}


def test_parallel_calls_land_in_call_order_though_they_finish_in_another(
    os_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    # The earlier the call, the longer it sleeps: all four run at once (two per tool worker),
    # so they finish last-first. Each waits for the `go` file, so the test can first see where
    # they run (the sandbox has pid namespaces of its own: host pids come from /proc).
    go = workdir(os_cluster, "os-parallel") / f"go-{sender}"
    delays = [1.6, 1.2, 0.8, 0.4]
    marks = [marker() for _ in delays]
    calls = [
        ("bash", {"command": f": {m}; until [ -e {go.name} ]; do sleep 0.02; done; sleep {d}"})
        for m, d in zip(marks, delays, strict=True)
    ]
    fake_llm.script(
        FakeReply(tool_calls=calls), FakeReply(text="all four done"), model="m-os-parallel"
    )
    run_id = os_cluster.send("os-parallel", "four at once", sender)
    workers = {os_cluster.procs[name].pid: name for name in TOOL_WORKERS}
    pids = wait_for(lambda: all(running(m) for m in marks) and [running(m) for m in marks], 30)
    ran_on = {worker_of(found[0], workers) for found in pids}
    go.touch()
    assert os_cluster.wait_run(run_id)["status"] == "succeeded"

    history = os_cluster.history("os-parallel", sender)
    call_ids = [c["id"] for c in history[1]["tool_calls"]]
    results = [m for m in history if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in results] == call_ids, "history keeps the call order"
    finished = [e["call_id"] for _, e in os_cluster.events(run_id) if e["type"] == "tool_result"]
    assert finished == call_ids[::-1], "they finished last-first: they ran in parallel"
    assert history[-1]["content"] == "all four done"
    assert ran_on == set(TOOL_WORKERS), f"pids {pids}, workers {workers}"


def test_kill_during_a_long_command_cancels_the_run_and_ends_the_process(
    os_cluster: Cluster, fake_llm: FakeLLM, sender: str
) -> None:
    mark = marker()
    fake_llm.script(FakeReply(tool_calls=[("bash", {"command": f"exec sleep {mark}"})]),
                    model="m-os-cancel")  # fmt: skip
    run_id = os_cluster.send("os-cancel", "sleep a while", sender)
    pids = wait_for(lambda: running(mark), 20, what="the sleep to start")
    workers = {os_cluster.procs[n].pid: n for n in TOOL_WORKERS}
    assert worker_of(pids[0], workers) in TOOL_WORKERS

    with os_cluster.http() as c:
        killed = c.post(f"/v1/agents/os-cancel/conversations/{sender}/kill")
    killed_at = time.monotonic()
    assert killed.status_code == 200 and killed.json() == {"run_id": run_id}
    assert os_cluster.wait_run(run_id, timeout=10)["status"] == "cancelled"
    ended_after = time.monotonic() - killed_at
    assert ended_after < 3, f"the run ended {ended_after:.2f}s after the kill"
    assert gone(mark)
    # The conversation stays valid: the interrupted call has its (error) result.
    tool = [m for m in os_cluster.history("os-cancel", sender) if m["role"] == "tool"]
    assert [(t["name"], t["is_error"]) for t in tool] == [("bash", True)]


def worker_of(pid: int, workers: dict[int, str]) -> str:
    """The tool worker ``pid`` descends from (its pool process ran the call), or ``""``."""
    while pid > 1 and pid not in workers:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return workers.get(pid, "")
