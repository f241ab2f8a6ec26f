"""The path races through real processes: a gateway, an LLM worker and a tool worker.

The fake model asks for many ``read`` and ``write`` calls of ``d/config.toml`` at once while a
process swaps ``d`` with a symlink to a directory outside (as the agent's own ``bash`` can).
No result shows the outside file and nothing outside changes.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import Cluster
from tests.conftest import redis_db_url, write_home
from tests.fakellm import FakeLLM, FakeReply
from tests.test_path_races import INSIDE, SECRET, Swapper, untouched
from walrus_tasks.redis_server import RedisServer

pytestmark = pytest.mark.security

ROUNDS, CALLS = 4, 50
"""Replies of the model, each with this many parallel calls (reads, then writes, in turn)."""


@pytest.fixture(scope="module")
def race_cluster(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    home = write_home(tmp_path_factory.mktemp("race-home"), fake_llm.base_url)
    work = tmp_path_factory.mktemp("race-ws")
    (home / "agents" / "racer.toml").write_text(
        textwrap.dedent(f"""
        model = "fake/m-racer"
        tools = ["read", "write"]
        workdir = "{work}"
        """)
    )
    c = Cluster(
        redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path_factory.mktemp("logs")
    )
    try:
        c.start_gateway()
        c.start_worker("worker-llm", queues="walrus.runs,walrus.control")
        c.start_worker("tools", queues="walrus.tools", concurrency=2)
        c.wait_ready()
        yield c
    finally:
        c.stop()


def test_tool_calls_raced_by_a_swapped_parent_never_reach_outside(
    race_cluster: Cluster, fake_llm: FakeLLM, sender: str, tmp_path: Path
) -> None:
    text = (race_cluster.home / "agents" / "racer.toml").read_text()
    work = Path(text.split('workdir = "', 1)[1].split('"', 1)[0])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.toml").write_text(SECRET)
    (work / "d").mkdir()
    (work / "d" / "config.toml").write_text(INSIDE)
    (work / "link").symlink_to(outside)
    read = ("read", {"path": "d/config.toml"})
    replies = [
        FakeReply(
            tool_calls=[read] * CALLS
            if n % 2 == 0
            else [
                ("write", {"path": "d/config.toml", "content": f"w{n}-{i}\n"}) for i in range(CALLS)
            ]
        )
        for n in range(ROUNDS)
    ]
    fake_llm.script(*replies, FakeReply(text="done"), model="m-racer")
    with Swapper(work / "d", work / "link") as swapper:
        run_id = race_cluster.send("racer", "read and write it, many times", sender)
        status = race_cluster.wait_run(run_id, timeout=120)["status"]
    assert status == "succeeded"
    assert swapper.swaps > 0
    results = [m for m in race_cluster.history("racer", sender) if m["role"] == "tool"]
    assert len(results) == ROUNDS * CALLS
    leaked = [m for m in results if "sk-outside-secret" in m["content"]]
    assert len(leaked) == 0, f"{len(leaked)} of {len(results)} results show the outside file"
    untouched(outside)
    inside = re.compile(rf"{re.escape(INSIDE)}|w\d+-\d+\n|wrote \d+ bytes to d/config\.toml")
    for m in results:  # each call either worked on the inside file or was refused
        ok = not m["is_error"] and inside.fullmatch(m["content"])
        assert ok or (m["is_error"] and "outside the working directory" in m["content"]), m
