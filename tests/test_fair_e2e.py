"""Fair sharing through real workers: tenants, weights, agent priorities, a lost drain message.

One worker with one pool slot, so runs start one at a time and the order of their
``started_at`` is the order the fair dispatcher picked them.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from tests.cluster import Cluster, running
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeLLM
from walrus_tasks.redis_server import RedisServer

SLOW = """
model = "mock"
[mock]
reply = "one two three four five"
chunk_delay_ms = 30
"""
"""About 150 ms a run: five chunks, 30 ms apart."""

QUICK = """
model = "mock"
priority = {priority}
[mock]
reply = "one two"
chunk_delay_ms = 5
"""


def cluster(redis_server: RedisServer, fake: FakeLLM, tmp: Path, agents: dict[str, str],
            config: str = "", **env: str) -> Cluster:  # fmt: skip
    home = agents_home(tmp / "home", fake.base_url, agents)
    with (home / "config.toml").open("a") as f:
        f.write(textwrap.dedent(config))
    return Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp, env_extra=env)


def start_order(c: Cluster, run_ids: list[str]) -> list[dict[str, Any]]:
    ends = [c.wait_run(run_id, timeout=60) for run_id in run_ids]
    assert [e["status"] for e in ends] == ["succeeded"] * len(ends)
    return sorted(ends, key=lambda e: float(e["started_at"]))


def test_one_tenants_run_starts_after_at_most_one_run_of_another_tenants_backlog(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    c = cluster(redis_server, fake_llm, tmp_path, {"slow": SLOW})
    with running(c, concurrency=1):
        # The backlog is made atomically (accepted, no drain yet), then b's message after it:
        # racing HTTP sends against the runs let a loaded machine run the flood before b came.
        flood = [c.enqueue("slow", f"a:conv-{i}") for i in range(20)]
        b_run = c.enqueue("slow", "b:one")
        c.send_drains("slow", "b:one", len(flood) + 1)
        ends = start_order(c, [*flood, b_run])
    b = next(e for e in ends if e["run_id"] == b_run)
    ahead = [e for e in ends if e["run_id"] != b_run and e["started_at"] < b["started_at"]]
    assert len(ahead) <= 1, f"{len(ahead)} of a's 20 queued runs started before b's"


def test_a_tenant_of_weight_two_gets_two_turns_to_the_others_one(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    weights = "[tenants.a]\nweight = 2\n"
    c = cluster(redis_server, fake_llm, tmp_path, {"quick": QUICK.format(priority=0)}, weights)
    with running(c, concurrency=1, gateway=True):
        run_ids = [c.enqueue("quick", f"{t}:{i}") for i in range(6) for t in "ab"]
        c.send_drains("quick", "b:0", len(run_ids))
        ends = start_order(c, run_ids)
    first = "".join(e["sender"][0] for e in ends[:9])
    assert (first.count("a"), first.count("b")) == (6, 3), first


def test_a_higher_priority_agents_runs_start_first_within_a_tenant(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    agents = {"lo": QUICK.format(priority=0), "hi": QUICK.format(priority=5)}
    c = cluster(redis_server, fake_llm, tmp_path, agents)
    with running(c, concurrency=1):
        run_ids = [c.enqueue("lo", f"t:lo-{i}") for i in range(3)]
        run_ids += [c.enqueue("hi", f"t:hi-{i}") for i in range(2)]
        c.send_drains("lo", "t:lo-0", len(run_ids))
        ends = start_order(c, run_ids)
    assert [e["agent"] for e in ends] == ["hi", "hi", "lo", "lo", "lo"]


def test_a_ready_conversation_whose_drain_message_was_lost_is_drained_by_the_reaper(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    c = cluster(
        redis_server, fake_llm, tmp_path, {"quick": QUICK.format(priority=0)},
        WALRUS_REAPER_INTERVAL="1",
    )  # fmt: skip
    with running(c, concurrency=1, beat=True):
        run_id = c.enqueue("quick", "lost:0")  # accepted, its drain never sent
        end = c.wait_run(run_id, timeout=30)
    assert end["status"] == "succeeded"
