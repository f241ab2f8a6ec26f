"""Cluster-wide provider limits through real workers and the fake LLM over real HTTP."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

from tests.cluster import Cluster, running, wait_for
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeLLM, FakeReply
from walrus_tasks.redis_server import RedisServer

LIMITED_PROVIDER = """
[providers.capped]
kind = "openai"
base_url = "{base}/v1"
api_key = "test-key"
timeout = 10
max_concurrency = 2
"""


def test_max_concurrency_holds_across_workers_and_every_run_succeeds(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    home = agents_home(tmp_path / "home", fake_llm.base_url, {"capped": 'model = "capped/m-1s"\n'})
    with (home / "config.toml").open("a") as f:
        f.write(textwrap.dedent(LIMITED_PROVIDER.format(base=fake_llm.base_url)))
    fake_llm.reset()
    fake_llm.script(*[FakeReply(text="done", delay=1.0)] * 10, model="m-1s")
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    with running(c, workers=("worker1", "worker2"), concurrency=3):
        started = time.monotonic()
        run_ids = [c.send("capped", "go", f"conv-{i}") for i in range(10)]
        seen: list[dict[str, int]] = []

        def stats_show_waiting() -> bool:
            with c.http() as h:
                uses = {u["name"]: u for u in h.get("/v1/stats").json()["limits"]}
            seen.append(uses["capped"])
            return uses["capped"]["waiting"] > 0 and uses["capped"]["in_flight"] == 2

        wait_for(stats_show_waiting, 10, 0.1, "stats to show the limit full, steps waiting")
        with c.http() as h:
            metrics = h.get("/metrics").text
        assert 'walrus_limit_max_concurrency{limit="capped"} 2.0' in metrics
        assert 'walrus_limit_waiting{limit="capped"}' in metrics
        ends = [c.wait_run(run_id, timeout=60) for run_id in run_ids]
        elapsed = time.monotonic() - started
    assert [e["status"] for e in ends] == ["succeeded"] * 10
    assert fake_llm.max_in_flight == 2, "never more than max_concurrency calls at the provider"
    assert all(u["in_flight"] <= 2 for u in seen)
    # Two at a time is shown by max_in_flight; an upper bound on the time would only measure
    # how loaded the machine is (15.3 s once in a full run beside other work).
    assert elapsed >= 5, f"10 one-second calls two at a time took {elapsed:.1f} s"


TENANT_SHARE = """
[tenants.acme]
max_concurrency = 1
"""


def test_a_tenants_share_caps_its_calls_whoever_sends_them(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    home = agents_home(tmp_path / "home", fake_llm.base_url, {"tenanted": 'model = "fake/m-t"\n'})
    with (home / "config.toml").open("a") as f:
        f.write(textwrap.dedent(TENANT_SHARE))
    fake_llm.reset()
    fake_llm.script(*[FakeReply(text="done", delay=0.7)] * 3, model="m-t")
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    with running(c, concurrency=3):
        run_ids = [c.send("tenanted", "go", s) for s in ("acme:alice", "acme:bob")]
        run_ids.append(c.send("tenanted", "go", "zed", tenant="acme"))  # set per message
        ends = [c.wait_run(run_id, timeout=30) for run_id in run_ids]
        with c.http() as h:
            uses = {u["name"]: u for u in h.get("/v1/stats").json()["limits"]}
    assert [e["status"] for e in ends] == ["succeeded"] * 3
    assert fake_llm.max_in_flight == 1, "acme's three calls went one at a time"
    assert uses["tenant:acme"]["max_concurrency"] == 1
    assert uses["tenant:acme"]["requests_last_minute"] == 3


ONE_SLOT = """
[providers.single]
kind = "openai"
base_url = "{base}/v1"
api_key = "test-key"
timeout = 10
max_concurrency = 1
"""


def test_steps_a_freed_slot_wakes_run_once_each(
    redis_server: RedisServer, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    """Each woken step has two messages (the wake's, its countdown's): one call reaches the fake."""
    home = agents_home(tmp_path / "home", fake_llm.base_url, {"single": 'model = "single/m-w"\n'})
    with (home / "config.toml").open("a") as f:
        f.write(textwrap.dedent(ONE_SLOT.format(base=fake_llm.base_url)))
    fake_llm.reset()
    fake_llm.script(*[FakeReply(text="done", delay=0.3)] * 8, model="m-w")
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path)
    with running(c, concurrency=3):
        run_ids = [c.send("single", "go", f"w-{i}") for i in range(8)]
        ends = [c.wait_run(run_id, timeout=60) for run_id in run_ids]
        time.sleep(3)  # the countdown messages (under 2.4 s) of the woken steps come back
        histories = [c.history("single", f"w-{i}") for i in range(8)]
    assert [e["status"] for e in ends] == ["succeeded"] * 8
    assert fake_llm.max_in_flight == 1
    assert len(fake_llm.requests_for("m-w")) == 8, "no step called the provider twice"
    assert all([m["role"] for m in h] == ["user", "assistant"] for h in histories)
