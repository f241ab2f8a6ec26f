"""Redis going away under a running gateway: every route answers 503 with ``Retry-After``
(never a bare 500) until it is back, and open SSE streams ride out a restart with no gap and
no duplicate, or end with a resumable ``error`` event if Redis stays away too long."""

from __future__ import annotations

import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from celery import Celery
from websockets.sync.client import connect

from tests.cluster import Cluster, parse_sse, running, wait_for
from walrus_tasks.redis_server import RedisServer, start_redis

Event = tuple[str, dict[str, Any]]


class Restartable:
    """A private Redis (AOF, fsync on every write) that a test stops and starts on one port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server: RedisServer = start_redis(data_dir, appendfsync="always")
        self.url = self.server.url

    def stop(self, kill: bool = False) -> None:
        """SIGTERM (Redis shuts down cleanly), or SIGKILL with ``kill``."""
        if kill:
            self.server.process.send_signal(signal.SIGKILL)
            self.server.process.wait(timeout=10)
        self.server.stop()

    def start(self) -> None:
        """The same server again: same port, same AOF."""
        self.server = start_redis(self.data_dir, port=self.server.port, appendfsync="always")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[Restartable]:
    redis_ = Restartable(tmp_path / "redis")
    try:
        yield redis_
    finally:
        redis_.server.stop()


def make_cluster(own_redis: Restartable, home: Path, tmp_path: Path, **env: str) -> Cluster:
    env = {"WALRUS_REAPER_INTERVAL": "1", **env}
    return Cluster(redis_url=own_redis.url, home=home, log_dir=tmp_path, env_extra=env)


def pinged(cluster: Cluster) -> set[str]:
    """The workers that answer a Celery ping (none while a stale broker connection fails)."""
    try:
        with Celery(broker=cluster.redis_url) as app:
            return {name for reply in app.control.ping(timeout=0.5) for name in reply}
    except redis.ConnectionError:  # this process's pooled connection to the Redis before
        return set()


def revive_worker(cluster: Cluster) -> bool:
    """Once Redis is back: start ``worker2`` if ``worker1`` died of the restart; True if so.

    Surviving a Redis restart is the worker's own business (kombu can fail it on reconnect);
    here its run is recovered by the reaper, like the run of any dead worker.
    """
    worker = cluster.procs["worker1"]

    def settled() -> str | None:
        if worker.poll() is not None:
            return "dead"
        return "alive" if "worker1@test" in pinged(cluster) else None

    if wait_for(settled, 60, 0.2, "worker1 to answer a ping or exit") == "alive":
        return False
    worker._walrus_killed = True  # type: ignore[attr-defined]
    cluster.start_worker("worker2")
    wait_for(lambda: "worker2@test" in pinged(cluster), 60, 0.2, "worker2")
    return True


def assert_unavailable(resp: httpx.Response) -> None:
    assert resp.status_code == 503, (resp.request.url, resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    assert int(resp.headers["retry-after"]) > 0
    assert resp.json()["error"]["code"] == "unavailable", resp.text
    assert resp.json()["error"]["message"]


def ws_call(cluster: Cluster, op: str, **args: Any) -> dict[str, Any]:
    url = cluster.gateway_url.replace("http://", "ws://") + "/v1/ws"
    with connect(url, open_timeout=10) as conn:
        conn.send(json.dumps({"id": 1, "op": op, **args}))
        return dict(json.loads(conn.recv(timeout=30)))


def test_every_route_answers_503_with_retry_after_while_redis_is_down(
    own_redis: Restartable, home: Path, tmp_path: Path
) -> None:
    sender = f"t-{uuid.uuid4().hex[:8]}"
    # A send retries a Redis that is away for WALRUS_SUBMIT_RETRY before its 503: 1 s, not the
    # default 15 s, for each of the sends below (riding out a failover: tests/test_failover.py).
    cluster = make_cluster(own_redis, home, tmp_path, WALRUS_SUBMIT_RETRY="1")
    with running(cluster, workers=()) as cluster:
        queued = cluster.send("echo", "before", sender)  # no worker yet: it waits in the queue
        own_redis.stop()
        message = {"content": "hi", "sender": sender}
        chat = {"model": "echo", "user": sender, "messages": [{"role": "user", "content": "hi"}]}
        with cluster.http() as c:
            for method, path, body in [
                ("POST", "/v1/agents/echo/messages", message),
                ("GET", f"/v1/agents/echo/conversations/{sender}/history", None),
                ("POST", f"/v1/agents/echo/conversations/{sender}/kill", None),
                ("GET", f"/v1/runs/{queued}", None),
                ("GET", f"/v1/runs/{queued}/events", None),
                ("GET", "/v1/conversations", None),
                ("GET", "/v1/stats", None),
                ("GET", "/v1/crons", None),
                ("GET", "/v1/events", None),
                ("GET", "/healthz", None),
            ]:
                assert_unavailable(c.request(method, path, json=body))
            resp = c.post("/v1/chat/completions", json=chat)  # in OpenAI's error shape
            assert resp.status_code == 503 and resp.headers["retry-after"], resp.text
            assert resp.json()["error"]["code"] == "unavailable"
            # What needs no Redis is still served.
            assert c.get("/v1/agents").status_code == 200
            assert c.get("/metrics").status_code == 200
        for op, args in [("send", message), ("get_history", {"sender": sender})]:
            reply = ws_call(cluster, op, agent="echo", **args)
            assert reply["type"] == "error" and reply["error"]["code"] == "unavailable", reply

        own_redis.start()
        with cluster.http() as c:
            assert c.get("/healthz").status_code == 200
            assert c.get(f"/v1/runs/{queued}").json()["status"] == "queued"
        second = cluster.send("echo", "after", sender)
        cluster.start_worker("worker1")
        cluster.wait_ready()
        # The asyncio pool of the SSE relay reconnects too.
        for run_id in (queued, second):
            assert cluster.events(run_id)[-1][1]["type"] == "end"
            assert cluster.wait_run(run_id)["status"] == "succeeded"
        assert [m["content"] for m in cluster.history("echo", sender) if m["role"] == "user"] == [
            "before",
            "after",
        ]


def test_an_idle_stream_outlives_redis_pys_default_socket_timeout(
    private_cluster: Cluster, sender: str
) -> None:
    # redis-py 8 reads with a 5 s socket timeout by default: an XREAD blocking longer failed.
    private_cluster.env_extra["WALRUS_SSE_KEEPALIVE"] = "6"
    with running(private_cluster, workers=()) as cluster:
        run_id = cluster.send("echo", "nobody runs this", sender)
        with (
            cluster.http() as c,
            c.stream("GET", f"/v1/runs/{run_id}/events", timeout=20) as resp,
        ):
            assert next(resp.iter_lines()) == ": keep-alive"


def read_events(resp: httpx.Response, on_event: Any = None) -> list[Event]:
    seen: list[Event] = []
    for item in parse_sse(resp.iter_lines()):
        seen.append(item)
        if on_event is not None:
            on_event(seen)
    return seen


def chunks(events: list[Event]) -> list[str]:
    return [e["content"] for _, e in events if e["type"] == "chunk"]


@pytest.mark.parametrize("kill", [False, True], ids=["shutdown", "kill-9"])
def test_an_open_sse_stream_rides_out_a_redis_restart(
    own_redis: Restartable, home: Path, tmp_path: Path, kill: bool
) -> None:
    sender = f"t-{uuid.uuid4().hex[:8]}"
    with running(make_cluster(own_redis, home, tmp_path), beat=True) as cluster:
        run_id = cluster.send("slow", "count", sender)
        restarted = revived = False

        def restart_after_four_chunks(seen: list[Event]) -> None:
            nonlocal restarted, revived
            if not restarted and len(chunks(seen)) == 4:
                restarted = True
                own_redis.stop(kill=kill)
                own_redis.start()
                revived = revive_worker(cluster)

        with cluster.http() as c, c.stream("GET", f"/v1/runs/{run_id}/events") as resp:
            assert resp.status_code == 200
            seen = read_events(resp, restart_after_four_chunks)
        assert restarted
        assert [e["type"] for _, e in seen].count("end") == 1 and seen[-1][1]["type"] == "end"
        assert seen == cluster.events(run_id), "every entry of the stream once, in order"
        # A step cut by the restart (its writes failed, or its worker died) runs again from its
        # start: the reply is what follows the last text_start (docs/concepts.md: "Recovery"), and
        # history holds it once.
        last = max(i for i, (_, e) in enumerate(seen) if e["type"] == "text_start")
        assert "".join(chunks(seen[last:])) == " ".join(f"w{i}" for i in range(1, 21))
        assert cluster.wait_run(run_id)["status"] == "succeeded"
        assert [m["role"] for m in cluster.history("slow", sender)] == ["user", "assistant"]
        assert not revived, "the worker rode out the restart"


def test_a_stream_ends_with_a_resumable_error_when_redis_stays_away(
    own_redis: Restartable, home: Path, tmp_path: Path
) -> None:
    sender = f"t-{uuid.uuid4().hex[:8]}"
    cluster = make_cluster(own_redis, home, tmp_path, WALRUS_SSE_REDIS_GRACE="1")
    with running(cluster, beat=True) as cluster:
        run_id = cluster.send("slow", "count", sender)

        def stop_after_four_chunks(seen: list[Event]) -> None:
            if len(chunks(seen)) == 4:
                own_redis.stop()

        with cluster.http() as c, c.stream("GET", f"/v1/runs/{run_id}/events") as resp:
            seen = read_events(resp, stop_after_four_chunks)
        entry_id, error = seen.pop()
        assert entry_id == "", "no id: Last-Event-ID stays on the last event sent"
        assert error["type"] == "error" and error["code"] == "unavailable", error
        assert error["resume"] is True and "Last-Event-ID" in error["message"]
        assert len(chunks(seen)) >= 4

        own_redis.start()
        revive_worker(cluster)
        rest = cluster.events(run_id, last_event_id=seen[-1][0])
        whole = seen + rest
        assert whole == cluster.events(run_id), "no gap, no duplicate"
        assert [e["type"] for _, e in whole].count("end") == 1 and whole[-1][1]["type"] == "end"
        assert cluster.wait_run(run_id)["status"] in ("succeeded", "failed")


def test_an_openai_stream_ends_with_an_error_chunk_when_redis_stays_away(
    own_redis: Restartable, home: Path, tmp_path: Path
) -> None:
    sender = f"t-{uuid.uuid4().hex[:8]}"
    cluster = make_cluster(own_redis, home, tmp_path, WALRUS_SSE_REDIS_GRACE="1")
    with running(cluster, beat=True) as cluster:
        client = openai.OpenAI(base_url=cluster.gateway_url + "/v1", api_key="x", max_retries=0)
        stream = client.chat.completions.create(
            model="slow", messages=[{"role": "user", "content": "count"}], user=sender, stream=True
        )
        words: list[str] = []
        with pytest.raises(openai.APIError) as raised:
            for chunk in stream:
                word = (chunk.choices[0].delta.content or "").strip() if chunk.choices else ""
                words += [word] if word else []
                if word and len(words) == 4:
                    own_redis.stop()
        error = raised.value.body
        assert isinstance(error, dict) and error["code"] == "unavailable", error
        assert error["type"] == "server_error" and error["run_id"]
        assert words[:4] == ["w1", "w2", "w3", "w4"]
        client.close()

        own_redis.start()
        revive_worker(cluster)
        assert cluster.wait_run(error["run_id"])["status"] in ("succeeded", "failed")


def content_of(data: str) -> str:
    """The delta text of a ``chat.completion.chunk`` (``[DONE]`` and errors: "")."""
    chunk = json.loads(data) if data.startswith("{") else {}
    return "".join(c["delta"].get("content") or "" for c in chunk.get("choices", []))


def test_an_openai_raw_stream_ends_with_the_error_then_done(
    own_redis: Restartable, home: Path, tmp_path: Path
) -> None:
    sender = f"t-{uuid.uuid4().hex[:8]}"
    cluster = make_cluster(own_redis, home, tmp_path, WALRUS_SSE_REDIS_GRACE="1")
    chat = {"model": "slow", "user": sender, "stream": True,
            "messages": [{"role": "user", "content": "count"}]}  # fmt: skip
    with running(cluster, beat=True) as cluster:
        data: list[str] = []
        words = 0
        with cluster.http() as c, c.stream("POST", "/v1/chat/completions", json=chat) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    data.append(line[6:])
                    words += "w" in content_of(data[-1])
                    if words == 4 and "w" in content_of(data[-1]):
                        own_redis.stop()
        assert data[-1] == "[DONE]"
        error = json.loads(data[-2])["error"]
        assert error["code"] == "unavailable" and "redis unavailable" in error["message"], error
        own_redis.start()
        revive_worker(cluster)
        assert cluster.wait_run(error["run_id"])["status"] in ("succeeded", "failed")


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """``(event, id, data)`` of an SSE body (comments skipped)."""
    event, entry_id, data = "", "", ""
    for line in lines:
        if line.startswith(":"):
            continue
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("id: "):
            entry_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            yield event, entry_id, json.loads(data)
            event, entry_id, data = "", "", ""


def test_an_agent_protocol_stream_ends_with_an_error_event_when_redis_stays_away(
    own_redis: Restartable, home: Path, tmp_path: Path
) -> None:
    cluster = make_cluster(own_redis, home, tmp_path, WALRUS_SSE_REDIS_GRACE="1")
    run = {"assistant_id": "slow", "stream_mode": ["messages-tuple"],
           "input": {"messages": [{"type": "human", "content": "count"}]}}  # fmt: skip
    with running(cluster, beat=True) as cluster:
        seen: list[tuple[str, str, dict[str, Any]]] = []
        with cluster.http() as c, c.stream("POST", "/runs/stream", json=run) as resp:
            assert resp.status_code == 200
            where = resp.headers["content-location"]  # /threads/<thread>/runs/<run>
            for item in sse_events(resp.iter_lines()):
                seen.append(item)
                if item[0] == "messages" and sum(e == "messages" for e, _, _ in seen) == 4:
                    own_redis.stop()
        event, entry_id, error = seen.pop()
        assert event == "error" and entry_id == "", "no id: Last-Event-ID stays on the last event"
        assert error["error"] == "unavailable" and "Last-Event-ID" in error["message"], error
        assert sum(e == "messages" for e, _, _ in seen) >= 4

        own_redis.start()
        revive_worker(cluster)
        last_id = seen[-1][1]
        with (
            cluster.http() as c,
            c.stream("GET", f"{where}/stream", headers={"Last-Event-ID": last_id}) as resp,
        ):
            assert resp.status_code == 200
            rest = list(sse_events(resp.iter_lines()))
        ids = [i for _, i, _ in seen if i] + [i for _, i, _ in rest if i]
        assert len(ids) == len(set(ids)), "no event twice"
        run_id = where.rsplit("/", 1)[-1]
        assert cluster.wait_run(run_id)["status"] in ("succeeded", "failed")
