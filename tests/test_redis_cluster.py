"""Run state on Redis Cluster, end to end: real workers, gateway and beat on a cluster of their own.

The cluster (3 masters, 3 replicas, ``tests.redis_cluster``) holds the state; the broker is a
database of the session's Redis (a cluster cannot be one). Every script step touches one slot
(docs/design.md, "Keys and slots"): a cross-slot access is refused by the cluster itself, and
no process may log one (checked as each cluster's processes stop).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from langgraph_sdk import get_sync_client

from tests.cluster import Cluster, parse_sse, running, wait_for
from tests.conftest import agents_home, redis_db_url
from tests.fakellm import FakeLLM, FakeReply
from tests.redis_cluster import RedisClusterGroup
from tests.redis_cluster import client as node_client
from tests.test_ordering import assert_ordered, run_infos
from tests.test_recovery import kill_worker_mid_stream
from tests.test_up import start_up, stop, wait_ready
from walrus_tasks import (
    connection,
    conversations,
    crons,
    keys,
    memory,
    reads,
    runs,
    subscriptions,
)
from walrus_tasks.celery_app import DRAIN, RUNS_QUEUE
from walrus_tasks.export import export_state, import_state
from walrus_tasks.models import CronSpec
from walrus_tasks.redis_server import RedisServer, free_port
from walrus_tasks.submit import new_run_id

AGENTS = {
    "echo": 'model = "mock"\n[mock]\nreply = "Hello from the mock model."\n',
    "slow": 'model = "mock"\n[mock]\nreply = "'
    + " ".join(f"w{i}" for i in range(1, 21))
    + '"\nchunk_delay_ms = 250\n',
    "asker": 'model = "fake/m-cl-ask"\ntools = ["ask_user"]\n',
    "boss": 'model = "fake/m-cl-boss"\nmembers = ["w1", "w2"]\n',
    "w1": 'model = "mock"\n[mock]\nreply = "one from w1"\n',
    "w2": 'model = "mock"\n[mock]\nreply = "two from w2"\n',
    "quick": 'model = "mock"\n[mock]\nreply = "one two"\nchunk_delay_ms = 30\n',
}

CROSS_SLOT = ("CROSSSLOT", "non local key", "same slot", "same key slot")
"""What a cross-slot access says, in any process's log."""


def cross_slot_free(c: Cluster) -> None:
    logs = {p.name: p.read_text(errors="replace") for p in c.log_dir.glob("*.log")}
    crossed = [name for name, text in logs.items() if any(s in text for s in CROSS_SLOT)]
    assert not crossed, f"a cross-slot access in {crossed}"


def walrus_on(
    state: RedisClusterGroup, redis_server: RedisServer, home: Path, logs: Path, **env: str
) -> Cluster:
    """Walrus processes (none started yet) with their state on ``state``."""
    return Cluster(
        redis_url=state.url,
        broker_url=redis_db_url(redis_server),
        home=home,
        log_dir=logs,
        env_extra={"WALRUS_REAPER_INTERVAL": "1", **env},
    )


@pytest.fixture(scope="module")
def cluster_home(tmp_path_factory: pytest.TempPathFactory, fake_llm: FakeLLM) -> Path:
    return agents_home(tmp_path_factory.mktemp("cluster-home"), fake_llm.base_url, AGENTS)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterGroup]:
    group = RedisClusterGroup(tmp_path_factory.mktemp("state-cluster"))
    try:
        yield group.start()
    finally:
        group.stop()


@pytest.fixture(scope="module")
def on_cluster(
    state: RedisClusterGroup,
    redis_server: RedisServer,
    cluster_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    """A gateway, two workers and beat with their state on the module's cluster."""
    c = walrus_on(state, redis_server, cluster_home, tmp_path_factory.mktemp("logs"))
    with running(c, workers=("worker1", "worker2"), beat=True):
        yield c
    cross_slot_free(c)


def test_concurrent_messages_to_one_conversation_run_in_acceptance_order(
    on_cluster: Cluster,
) -> None:
    sender = f"o-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(max_workers=8) as pool:
        run_ids = list(pool.map(lambda i: on_cluster.send("echo", f"m{i}", sender), range(30)))
    infos = run_infos(on_cluster, run_ids)
    assert [i["status"] for i in infos] == ["succeeded"] * 30
    assert sorted(i["seq"] for i in infos) == list(range(1, 31))
    assert_ordered(on_cluster, "echo", sender, infos)


def test_conversations_spread_over_every_master_and_each_stays_ordered(
    on_cluster: Cluster, state: RedisClusterGroup
) -> None:
    senders = [f"s-{uuid.uuid4().hex[:8]}-{n}" for n in range(96)]
    jobs = [(s, 0) for s in senders]
    with ThreadPoolExecutor(max_workers=8) as pool:
        run_ids = list(pool.map(lambda j: on_cluster.send("echo", f"m{j[1]}", j[0]), jobs))
    infos = run_infos(on_cluster, run_ids)
    assert all(i["status"] == "succeeded" for i in infos)
    for s in senders:
        assert_ordered(on_cluster, "echo", s, [i for i in infos if i["sender"] == s])
    held = {
        m.port: sum(1 for _ in node_client(m.port).scan_iter("walrus:*")) for m in state.masters()
    }
    total = sum(held.values())
    assert all(n >= 0.15 * total for n in held.values()), f"walrus keys per master: {held}"


def test_a_runs_events_and_the_live_feed_stream_from_every_bucket(on_cluster: Cluster) -> None:
    senders = [f"f-{uuid.uuid4().hex[:8]}-{n}" for n in range(6)]
    run_ids = [on_cluster.send("echo", "hi", s) for s in senders]
    assert {keys.run_bucket(r) for r in run_ids} != {keys.run_bucket(run_ids[0])}, "one bucket"
    for run_id in run_ids:
        events = on_cluster.events(run_id)
        assert events[0][1]["type"] == "start"
        assert events[-1][1]["type"] == "end" and events[-1][1]["status"] == "succeeded"
    # The live feed from the start of every bucket's stream: each run's events, in order.
    start = ",".join(["0-0"] * keys.BUCKETS)
    seen: dict[str, list[str]] = {}
    with (
        on_cluster.http() as h,
        h.stream("GET", "/v1/events", params={"after": start, "agent": "echo"}) as resp,
    ):
        assert resp.status_code == 200
        for _, event in parse_sse(resp.iter_lines()):
            seen.setdefault(event["run_id"], []).append(event["type"])
            if all(seen.get(r, [""])[-1] == "end" for r in run_ids):
                break
    for run_id in run_ids:
        assert seen[run_id][0] == "start" and seen[run_id][-1] == "end"


def test_ask_user_waits_and_a_reply_resumes_the_run(on_cluster: Cluster, fake_llm: FakeLLM) -> None:
    sender = f"a-{uuid.uuid4().hex[:8]}"
    question = {"questions": [{"question": "Which colour?", "options": [{"label": "blue"}]}]}
    fake_llm.script(
        FakeReply(tool_calls=[("ask_user", question)]), FakeReply(text="blue it is"),
        model="m-cl-ask",
    )  # fmt: skip
    run_id = on_cluster.send("asker", "pick a colour", sender)
    wait_for(lambda: on_cluster.run(run_id)["status"] == "waiting", 30, what="the run to wait")
    with on_cluster.http() as h:
        resp = h.post(f"/v1/agents/asker/conversations/{sender}/reply", json={"content": "blue"})
    assert resp.status_code == 200 and resp.json()["status"] == "resumed", resp.text
    assert on_cluster.wait_run(run_id)["status"] == "succeeded"
    assert on_cluster.history("asker", sender)[-1]["content"] == "blue it is"


def test_a_delegating_run_is_woken_by_children_of_other_buckets(
    on_cluster: Cluster, fake_llm: FakeLLM
) -> None:
    children = {keys.bucket_of(keys.cid(a, "delegate:boss")) for a in ("w1", "w2")}
    sender = next(  # a parent in a bucket of no child's: its news crosses slots
        s
        for s in (f"d-{uuid.uuid4().hex[:8]}" for _ in range(100))
        if keys.bucket_of(keys.cid("boss", s)) not in children
    )
    tasks = [{"agent": "w1", "message": "task 1"}, {"agent": "w2", "message": "task 2"}]
    fake_llm.script(
        FakeReply(tool_calls=[("delegate", {"tasks": tasks})]), FakeReply(text="all done"),
        model="m-cl-boss",
    )  # fmt: skip
    run_id = on_cluster.send("boss", "split the work", sender)
    assert on_cluster.wait_run(run_id)["status"] == "succeeded"
    [tool] = [m for m in on_cluster.history("boss", sender) if m["role"] == "tool"]
    assert json.loads(tool["content"]) == [
        {"agent": "w1", "result": "one from w1", "error": None},
        {"agent": "w2", "result": "two from w2", "error": None},
    ]
    assert keys.run_bucket(run_id) not in children


def test_the_agent_protocol_and_the_responses_faces_run_on_the_cluster(on_cluster: Cluster) -> None:
    lg = get_sync_client(url=on_cluster.gateway_url, api_key=None)
    tid = lg.threads.create()["thread_id"]
    human = {"messages": [{"type": "human", "content": "hi"}]}
    out: Any = lg.runs.wait(tid, "echo", input=human)
    assert out["messages"][-1]["content"] == "Hello from the mock model."
    again: Any = lg.runs.wait(tid, "echo", input=human, multitask_strategy="enqueue")
    assert [m["type"] for m in again["messages"]] == ["human", "ai", "human", "ai"]
    with openai.OpenAI(
        base_url=on_cluster.gateway_url + "/v1", api_key="unused", max_retries=0, timeout=60
    ) as oai:
        first = oai.responses.create(model="echo", input="hi")
        follow = oai.responses.create(model="echo", input="more", previous_response_id=first.id)
        with oai.responses.create(model="echo", input="streamed", stream=True) as stream:
            kinds = [event.type for event in stream]
    assert first.output_text == follow.output_text == "Hello from the mock model."
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"


def test_a_cron_fires_through_beat(on_cluster: Cluster) -> None:
    spec = {"schedule": "@every 1s", "agent": "echo", "message": "tick"}
    with on_cluster.http() as h:
        created = h.post("/v1/crons", json=spec)
        assert created.status_code == 201, created.text
        cron_id = created.json()["id"]
        fired = wait_for(
            lambda: h.get("/v1/crons").json()["crons"][0].get("last_run_id"), 30, 0.2, "a fire"
        )
        h.delete(f"/v1/crons/{cron_id}")
    assert on_cluster.wait_run(fired)["status"] == "succeeded"


def test_kill_9_of_the_worker_mid_run_resumes_on_the_other(on_cluster: Cluster) -> None:
    sender = f"k-{uuid.uuid4().hex[:8]}"
    run_id = on_cluster.send("slow", "count to twenty", sender)
    kill_worker_mid_stream(on_cluster, run_id, sender)
    try:
        info = on_cluster.wait_run(run_id, timeout=90)
        assert info["status"] == "succeeded", info
        history = on_cluster.history("slow", sender)
        assert [m["role"] for m in history] == ["user", "assistant"], "no step persisted twice"
    finally:  # the module's other tests want two workers
        for name in ("worker1", "worker2"):
            if getattr(on_cluster.procs[name], "_walrus_killed", False):
                on_cluster.start_worker(name)
        on_cluster.wait_ready()


# --- clusters of their own: fairness, and a master killed under load -------------------------


def test_one_tenants_backlog_does_not_hold_back_anothers_run(
    redis_cluster: RedisClusterGroup,
    redis_server: RedisServer,
    cluster_home: Path,
    tmp_path: Path,
) -> None:
    """The fair dispatcher's two steps on a cluster (pick with a claim, then start)."""
    c = walrus_on(redis_cluster, redis_server, cluster_home, tmp_path)
    r = c.redis()
    with running(c, concurrency=1, gateway=True):
        flood = []
        for i in range(20):
            sender = f"a:conv-{i}"
            run_id = new_run_id("quick", sender)
            assert runs.enqueue(r, run_id, "quick", sender, "go", "enqueue", {}).state == "ok"
            flood.append(run_id)
        b_run = new_run_id("quick", "b:one")
        assert runs.enqueue(r, b_run, "quick", "b:one", "go", "enqueue", {}).state == "ok"
        with c.control_app() as app:
            for _ in range(len(flood) + 1):
                app.send_task(DRAIN, args=("quick", "b:one"), queue=RUNS_QUEUE)
        ends = [c.wait_run(run_id, timeout=60) for run_id in [*flood, b_run]]
    assert [e["status"] for e in ends] == ["succeeded"] * len(ends)
    b = next(e for e in ends if e["run_id"] == b_run)
    ahead = [e for e in ends if e["run_id"] != b_run and e["started_at"] < b["started_at"]]
    assert len(ahead) <= 1, f"{len(ahead)} of a's 20 queued runs started before b's"
    assert not r.zcard(keys.FAIR_CLAIMS), "every claim was dropped"
    cross_slot_free(c)


@pytest.mark.timeout(300)
def test_a_master_killed_under_load_loses_no_accepted_message(
    redis_cluster: RedisClusterGroup,
    redis_server: RedisServer,
    cluster_home: Path,
    tmp_path: Path,
) -> None:
    c = walrus_on(redis_cluster, redis_server, cluster_home, tmp_path)
    accepted: list[tuple[str, str]] = []
    refused: list[int | str] = []
    stop = threading.Event()

    def load(n: int) -> None:
        with httpx.Client(base_url=c.gateway_url, timeout=30) as h:
            i = 0
            while not stop.is_set():
                sender = f"l{n}-{i % 8}"
                body = {"content": f"m{i}", "sender": sender}
                try:
                    resp = h.post("/v1/agents/echo/messages", json=body)
                except httpx.HTTPError as e:  # the gateway failed: said by the last assert
                    refused.append(f"{type(e).__name__}: {e}")
                    time.sleep(0.1)
                    continue
                if resp.status_code == 202:
                    accepted.append((sender, resp.json()["run_id"]))
                else:
                    refused.append(resp.status_code)
                i += 1

    with running(c, workers=("worker1", "worker2"), beat=True):
        senders = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for t in senders:
            t.start()
        wait_for(lambda: len(accepted) >= 60, 60, 0.1, "load before the kill")
        killed = redis_cluster.kill9_master()
        redis_cluster.wait_failover()
        during = len(accepted)
        wait_for(lambda: len(accepted) >= during + 60, 90, 0.1, "load after the failover")
        stop.set()
        for t in senders:
            t.join(60)
        r = c.redis()

        def statuses() -> list[str]:
            pipe = r.pipeline(transaction=False)
            for _, run_id in accepted:
                pipe.hget(keys.run(run_id), "status")
            return [str(s) for s in pipe.execute()]

        ended = {"succeeded", "failed", "cancelled"}
        wait_for(lambda: set(statuses()) <= ended, 120, 0.5, "every accepted run to end")
        assert set(statuses()) == {"succeeded"}, "an accepted message was lost or failed"
        for sender in {s for s, _ in accepted}:
            mine = [run_id for s, run_id in accepted if s == sender]
            history = [m["run_id"] for m in c.history("echo", sender) if m["role"] == "user"]
            assert sorted(history) == sorted(mine), f"{sender}: each accepted message once"
    assert set(refused) <= {503}, refused
    assert killed.port not in redis_cluster.alive()
    cross_slot_free(c)  # the processes are stopped: their logs are whole


def test_walrus_up_runs_on_a_cluster_with_its_broker_apart_and_the_cli_reads_it(
    redis_cluster: RedisClusterGroup, redis_server: RedisServer, tmp_path: Path
) -> None:
    u = start_up(
        tmp_path, WALRUS_REDIS_URL=redis_cluster.url, WALRUS_BROKER_URL=redis_db_url(redis_server)
    )
    try:
        wait_ready(u)
        sent = u.walrus("send", "assistant", "hello")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "Hello! I am the walrus mock model" in sent.stdout
        status = u.walrus("status", "--json")
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)
        assert "starting an embedded" not in u.log.read_text()
    finally:
        stop(u)


def test_walrus_up_refuses_an_unreachable_cluster_rather_than_embed_a_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    nowhere = f"redis+cluster://127.0.0.1:{free_port()}"
    u = start_up(tmp_path, WALRUS_REDIS_URL=nowhere, WALRUS_BROKER_URL=redis_db_url(redis_server))
    try:
        assert u.process.wait(timeout=60) != 0
    finally:
        stop(u)
    text = u.log.read_text()
    assert "no node of the Redis Cluster" in text and "embedded" not in text, text


def test_an_export_of_one_redis_imports_into_a_cluster_and_reads_back_the_same(
    r: redis.Redis, redis_cluster: RedisClusterGroup, tmp_path: Path
) -> None:
    """How one Redis's state moves onto a cluster: ``walrus export``, then ``walrus import``."""
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    for n in range(12):  # conversations of many buckets
        assert conversations.seed(r, "echo", f"moved-{n}", history)
    crons.create(r, CronSpec(schedule="@every 1h", agent="echo", message="tick"), ["echo"])
    subscriptions.create(r, "deploy", "echo")
    memory.remember(r, "echo", "colour", "blue")
    export_state(r, tmp_path / "one")
    cluster = connection.client(redis_cluster.url)
    import_state(cluster, tmp_path / "one", replace=False)
    export_state(cluster, tmp_path / "again")
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.*"))
    assert files and files == sorted(
        p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("*.*")
    )
    for path in files:
        assert (tmp_path / "one" / path).read_bytes() == (tmp_path / "again" / path).read_bytes()
    assert [m["content"] for m in reads.history(cluster, "echo", "moved-7")] == ["hi", "hello"]
