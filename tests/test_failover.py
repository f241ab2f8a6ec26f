"""A Redis Sentinel failover under load: no accepted message lost, none run twice, order kept.

A master, a replica and three sentinels on free ports; a gateway, two workers and beat on the
Sentinel URL. The master is ``kill -9``ed while 50 conversations send 4 messages each.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.cluster import Cluster, running, wait_for
from tests.ha import SentinelGroup
from walrus_tasks import durable, keys, scripts
from walrus_tasks import script_args as S
from walrus_tasks.redis_server import start_redis
from walrus_tasks.redis_url import async_client, sync_client

CONVERSATIONS = 50
MESSAGES = 4
TERMINAL = ("succeeded", "failed", "cancelled")


def send_in_order(c: Cluster, sender: str, counts: dict[str, int]) -> list[str]:
    """Send ``m0``… to one conversation, one after the other; the run ids of the 202s.

    A 503 (Redis away past the gateway's retry window) means nothing was accepted: send again.
    """
    accepted = []
    with c.http() as h:
        for i in range(MESSAGES):
            while True:
                resp = h.post(
                    "/v1/agents/paced/messages", json={"content": f"m{i}", "sender": sender}
                )
                if resp.status_code == 202:
                    accepted.append(resp.json()["run_id"])
                    counts["accepted"] += 1
                    break
                assert resp.status_code == 503, resp.text
                counts["retried"] += 1
                time.sleep(0.1)  # a client's back-off
            time.sleep(0.15)  # spread the load over the failover
    return accepted


# Its own waits (60 s to accept, 30 s for the failover, then each run's end) outrun the suite's
# 120 s on two cores shared with the other half of the suite, as its Redis Cluster twin's do.
@pytest.mark.timeout(300)
def test_a_master_killed_mid_load_loses_no_accepted_message(
    sentinel_group: SentinelGroup, home: Path, tmp_path: Path
) -> None:
    c = Cluster(
        redis_url=sentinel_group.url,
        home=home,
        log_dir=tmp_path,
        env_extra={"WALRUS_REAPER_INTERVAL": "1", "WALRUS_LEASE_TTL": "5"},
    )
    senders = [f"ha-{uuid.uuid4().hex[:8]}-{n}" for n in range(CONVERSATIONS)]
    counts = {"accepted": 0, "retried": 0}
    with running(c, workers=("worker1", "worker2"), beat=True):
        with ThreadPoolExecutor(max_workers=10) as pool:
            futures = [pool.submit(send_in_order, c, s, counts) for s in senders]
            wait_for(lambda: counts["accepted"] >= 60, 60, 0.01, "60 accepted messages")
            killed_at = time.monotonic()
            sentinel_group.kill9_master()
            probe = sync_client(sentinel_group.url, decode_responses=True)
            failover = wait_for(lambda: _write(probe) and time.monotonic() - killed_at, 30, 0.01)
            print(f"\nfailover: {failover:.2f} s from kill -9 to the first write on the new master")
            accepted = {s: f.result() for s, f in zip(senders, futures, strict=True)}
        print(f"accepted {counts['accepted']}, re-sent after a 503: {counts['retried']}")
        infos = {
            run_id: c.wait_run(run_id, timeout=90) for ids in accepted.values() for run_id in ids
        }
        for sender, run_ids in accepted.items():
            assert len(run_ids) == MESSAGES
            for run_id in run_ids:
                assert infos[run_id]["status"] in TERMINAL, infos[run_id]
            history = c.history("paced", sender)
            users = [m for m in history if m["role"] == "user"]
            # every accepted message ran exactly once, in the order it was accepted
            assert [m["run_id"] for m in users] == run_ids, history
            assert [m["content"] for m in users] == [f"m{i}" for i in range(MESSAGES)]
            replies = [m["run_id"] for m in history if m["role"] == "assistant"]
            assert replies == run_ids, "one reply per run, none doubled"
        assert all(i["status"] == "succeeded" for i in infos.values())
        c.check_alive()  # gateway, workers and beat followed the failover without a restart


def _write(r: redis.Redis) -> bool:
    try:
        return bool(r.set("walrus-test:failover-probe", "1"))
    except redis.RedisError:
        return False


def _takeover(conversation: str) -> dict[str, Any]:
    return {"cid": conversation, "now_ms": 0, "ttl_ms": 1000, "maxlen": 10}


def test_a_script_missing_on_the_server_is_loaded_again(tmp_path: Path) -> None:
    """A promoted replica (or a restarted server) has no scripts: NOSCRIPT loads them again."""
    server = start_redis(tmp_path / "redis", appendonly=False)
    try:
        r = sync_client(server.url, decode_responses=True)
        conversation = "echo:noscript"
        assert scripts.call(r, S.TAKEOVER, ["lease", "fence"], _takeover(conversation)) == [
            str(r.get("fence")),
            None,
            None,
        ]
        r.script_flush()
        sha = scripts._sha("takeover")
        assert r.script_exists(sha) == [False]
        r.delete("lease")
        assert scripts.call(r, S.TAKEOVER, ["lease", "fence"], _takeover(conversation))
        assert r.script_exists(sha) == [True]
    finally:
        server.stop()


def test_a_script_missing_on_the_server_is_loaded_again_from_the_event_loop(
    tmp_path: Path,
) -> None:
    """The same through ``scripts.call_async`` (the gateway's calls)."""
    server = start_redis(tmp_path / "redis", appendonly=False)
    sha = scripts._sha("takeover")

    async def flushed_then_called() -> None:
        r = async_client(server.url, decode_responses=True)
        try:
            args = _takeover("echo:noscript-async")
            assert (await scripts.call_async(r, S.TAKEOVER, ["lease", "fence"], args))[0]
            await r.script_flush()
            assert await r.script_exists(sha) == [False]
            await r.delete("lease")
            assert await scripts.call_async(r, S.TAKEOVER, ["lease", "fence"], args)
            assert await r.script_exists(sha) == [True]
        finally:
            await r.aclose()

    try:
        asyncio.run(flushed_then_called())
    finally:
        server.stop()


def test_fencing_tokens_never_go_back_on_a_replica_that_missed_increments(tmp_path: Path) -> None:
    """A promoted replica that lost the old master's last tokens still hands out larger ones."""
    server = start_redis(tmp_path / "redis", appendonly=False)
    try:
        r = sync_client(server.url, decode_responses=True)
        # The old master's last token, handed out just now; the replica never saw it.
        old_master_token = int(time.time() * 1000)
        r.set("fence", "7")  # what the replica holds
        took = scripts.call(r, S.TAKEOVER, ["lease", "fence"], _takeover("echo:fence"))
        assert int(took[0]) > old_master_token
        r.delete("lease")
        again = scripts.call(r, S.TAKEOVER, ["lease", "fence"], _takeover("echo:fence"))
        assert int(again[0]) > int(took[0])
    finally:
        server.stop()


def test_submit_waits_for_a_replica_only_when_there_is_one(tmp_path: Path) -> None:
    master = start_redis(tmp_path / "master", appendonly=False)
    replica = start_redis(tmp_path / "replica", appendonly=False)
    try:
        r = sync_client(master.url, decode_responses=True)
        assert durable.connected_replicas(r) == 0
        sync_client(replica.url).replicaof("127.0.0.1", master.port)

        def replicas() -> int:
            durable._replicas.clear()  # not the count cached a moment ago
            return durable.connected_replicas(r)

        wait_for(lambda: replicas() == 1, 20, 0.05, "the replica to connect")
        before = int(r.get(keys.replica_probe("l")) or 0)
        args = {
            "run_id": "run-x", "agent": "echo", "sender": "alice", "content": "hi",
            "on_busy": "enqueue", "now_ms": 0, "cid": "echo:alice", "meta_json": "{}",
            "queued": "0", "one_redis": "1", **S.NO_TASK, "guard_field": "", "guard_value": "",
        }  # fmt: skip
        names = ["l", "f", "i", keys.run("run-x"), "a"]
        assert durable.call_acknowledged(r, S.SUBMIT, names, args)[0] == "ok"
        assert int(r.get(keys.replica_probe("l")) or 0) == before + 1
        replica_client = sync_client(replica.url, decode_responses=True)
        assert replica_client.exists(keys.run("run-x")), "the replica holds it on return"
    finally:
        replica.stop()
        master.stop()


def test_the_gateway_answers_503_when_redis_is_away(home: Path, tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", appendonly=False)
    c = Cluster(
        redis_url=server.url, home=home, log_dir=tmp_path, env_extra={"WALRUS_SUBMIT_RETRY": "1"}
    )
    with running(c, workers=()):
        server.stop()
        with httpx.Client(base_url=c.gateway_url, timeout=30) as h:
            resp = h.post("/v1/agents/echo/messages", json={"content": "hi"})
        assert resp.status_code == 503, resp.text
        assert resp.json()["error"]["code"] == "unavailable"
