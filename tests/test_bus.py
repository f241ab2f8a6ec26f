"""The event bus through the real gateway and workers: subscriptions, publish, chains, the feed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.cluster import Cluster, parse_sse, wait_for
from walrus_tasks import indexes, keys, subscriptions
from walrus_tasks.cli.common import RET_ERROR, RET_OK
from walrus_tasks.errors import InvalidInput


@pytest.fixture(autouse=True)
def no_subscriptions_left(cluster: Cluster) -> Iterator[None]:
    """Each test starts and ends with no subscription (other tests share the cluster)."""
    r = cluster.redis()
    subscriptions.load(r, [])
    yield
    subscriptions.load(r, [])


def new_source() -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


def subscribe(cluster: Cluster, source: str, agent: str, once: bool = False) -> dict[str, Any]:
    with cluster.http() as c:
        resp = c.post(
            "/v1/subscriptions", json={"source": source, "target_agent": agent, "once": once}
        )
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def publish(cluster: Cluster, source: str, payload: Any) -> list[str]:
    with cluster.http() as c:
        resp = c.post("/v1/events", json={"source": source, "payload": payload})
    assert resp.status_code == 202, resp.text
    return list(resp.json()["fired"])


def test_a_published_event_reaches_the_subscribed_agent(cluster: Cluster) -> None:
    source = new_source()
    sub = subscribe(cluster, source, "echo")
    assert sub["source"] == source and sub["target_agent"] == "echo" and sub["once"] is False
    with cluster.http() as c:
        assert c.get("/v1/subscriptions").json()["subscriptions"] == [sub]
    first = publish(cluster, source, {"n": 1, "tag": "é"})
    second = publish(cluster, source, "plain text")
    assert len(first) == 1 and len(second) == 1
    for run_id in first + second:
        info = cluster.wait_run(run_id)
        assert info["status"] == "succeeded"
        assert (info["agent"], info["sender"]) == ("echo", f"event:{source}")
    history = cluster.history("echo", f"event:{source}")
    users = [(m["content"], m["run_id"]) for m in history if m["role"] == "user"]
    assert users == [('{"n": 1, "tag": "é"}', first[0]), ("plain text", second[0])]
    assert publish(cluster, new_source(), "nobody listens") == []


def test_agent_done_triggers_the_subscribed_agent(cluster: Cluster, sender: str) -> None:
    subscribe(cluster, "agent:paced:done", "echo")
    chained = "event:agent:paced:done"
    before = len(cluster.history("echo", chained))
    run_id = cluster.send("paced", "go", sender)
    assert cluster.wait_run(run_id)["status"] == "succeeded"

    def chained_run() -> list[dict[str, Any]]:
        return [
            m
            for m in cluster.history("echo", chained)[before:]
            if m["role"] == "assistant" and m["content"] == "Hello from the mock model."
        ]

    wait_for(chained_run, 30, 0.1, "echo to answer paced's done event")
    first = cluster.history("echo", chained)[before]
    assert first["role"] == "user" and first["content"] == "a b c d e"  # paced's final text
    assert cluster.wait_run(first["run_id"])["status"] == "succeeded"


def test_20_concurrent_publishes_fire_a_once_subscription_exactly_once(cluster: Cluster) -> None:
    source = new_source()
    sub = subscribe(cluster, source, "echo", once=True)
    barrier = threading.Barrier(20)
    fired: list[list[str]] = []
    lock = threading.Lock()

    def publisher(n: int) -> None:
        with cluster.http() as c:
            barrier.wait()
            resp = c.post("/v1/events", json={"source": source, "payload": f"event {n}"})
        assert resp.status_code == 202, resp.text
        with lock:
            fired.append(resp.json()["fired"])

    threads = [threading.Thread(target=publisher, args=(n,)) for n in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(fired) == 20
    runs = [run_id for f in fired for run_id in f]
    assert len(runs) == 1
    assert cluster.wait_run(runs[0])["status"] == "succeeded"
    assert [m["role"] for m in cluster.history("echo", f"event:{source}")] == ["user", "assistant"]
    with cluster.http() as c:
        assert sub["id"] not in {
            s["id"] for s in c.get("/v1/subscriptions").json()["subscriptions"]
        }
    assert not cluster.redis().exists(keys.subs_source(source))


def test_deleting_a_subscription_stops_it_firing(cluster: Cluster) -> None:
    source = new_source()
    sub = subscribe(cluster, source, "echo")
    assert len(publish(cluster, source, "one")) == 1
    with cluster.http() as c:
        resp = c.delete(f"/v1/subscriptions/{sub['id']}")
        assert resp.status_code == 200 and resp.json() == {"deleted": sub["id"]}
        again = c.delete(f"/v1/subscriptions/{sub['id']}")
        assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    assert publish(cluster, source, "two") == []


def test_bad_input_gets_a_clear_error_and_changes_nothing(cluster: Cluster) -> None:
    subscribe(cluster, "kept", "echo")
    r = cluster.redis()

    def snapshot() -> dict[str, Any]:
        return {k: r.dump(k) for k in r.scan_iter("walrus:subs*")}

    before = snapshot()
    convs_before = indexes.sizes(r, "conversations")
    cases: list[tuple[str, str, Any, dict[str, str], int]] = [
        ("POST", "/v1/subscriptions", {"source": "bad source", "target_agent": "echo"}, {}, 422),
        ("POST", "/v1/subscriptions", {"source": "x" * 123, "target_agent": "echo"}, {}, 422),
        ("POST", "/v1/subscriptions", {"source": "-lead", "target_agent": "echo"}, {}, 422),
        ("POST", "/v1/subscriptions", {"source": "ok", "target_agent": "Bad Name"}, {}, 422),
        ("POST", "/v1/subscriptions", {"source": "ok", "target_agent": "nobody"}, {}, 404),
        ("POST", "/v1/subscriptions", {"source": "ok", "target_agent": "echo", "x": 1}, {}, 422),
        ("POST", "/v1/subscriptions", {"target_agent": "echo"}, {}, 422),
        ("POST", "/v1/events", {"source": "kept/../x", "payload": "p"}, {}, 422),
        ("POST", "/v1/events", {"source": "kept"}, {}, 422),
        ("POST", "/v1/events", "{not json", {}, 422),
        ("DELETE", "/v1/subscriptions/unknown", None, {}, 404),
        ("GET", "/v1/events?agent=nobody", None, {}, 404),
        ("GET", "/v1/events?agent=Bad!", None, {}, 422),
        ("GET", "/v1/events", None, {"Last-Event-ID": "garbage"}, 422),
    ]
    with cluster.http() as c:
        for method, path, body, headers, status in cases:
            content = body if isinstance(body, str) else None
            json_body = None if isinstance(body, str) else body
            resp = c.request(method, path, json=json_body, content=content, headers=headers)
            assert resp.status_code == status, (method, path, body, resp.text)
            error = resp.json()["error"]
            assert error["code"] in ("invalid", "not_found") and error["message"], resp.text
    assert snapshot() == before
    assert indexes.sizes(r, "conversations") == convs_before


def test_dump_and_load_round_trip_subscriptions_losslessly(cluster: Cluster) -> None:
    r = cluster.redis()
    source = new_source()
    subscribe(cluster, source, "echo")
    subscribe(cluster, "agent:paced:done", "echo", once=True)
    dumped = subscriptions.dump(r)
    assert len(dumped) == 2
    subscriptions.load(r, [])
    assert subscriptions.dump(r) == [] and not r.exists(keys.subs_source(source))
    subscriptions.load(r, dumped)
    assert subscriptions.dump(r) == dumped
    with pytest.raises(InvalidInput):
        subscriptions.load(r, [*dumped, {**dumped[0], "id": "x", "source": "bad source"}])
    assert subscriptions.dump(r) == dumped
    assert len(publish(cluster, source, "after restore")) == 1


def read_feed(
    cluster: Cluster,
    ready: threading.Event,
    until: Any,
    out: list[tuple[str, dict[str, Any]]],
    params: dict[str, str],
    headers: dict[str, str] | None = None,
) -> None:
    """Collect feed events into ``out`` until ``until(out)``; ``ready`` once the stream is open."""
    with (
        httpx.Client(base_url=cluster.gateway_url, timeout=60) as c,
        c.stream("GET", "/v1/events", params=params, headers=headers or {}) as resp,
    ):
        assert resp.status_code == 200 and resp.headers["content-type"].startswith(
            "text/event-stream"
        )
        ready.set()
        for item in parse_sse(resp.iter_lines()):
            out.append(item)
            if until(out):
                return


def worker_of(cluster: Cluster, run_id: str) -> str | None:
    """The worker whose log says it ended ``run_id`` (each worker logs to its own file)."""
    for name in ("worker1", "worker2"):
        for line in (cluster.log_dir / f"{name}.log").read_text().splitlines():
            if run_id in line and line.startswith("{"):
                record = json.loads(line)
                if record.get("msg") == "run succeeded" and record.get("run_id") == run_id:
                    return name
    return None


def test_the_live_feed_delivers_runs_of_two_workers_to_one_client(cluster: Cluster) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    sent: list[str] = []
    ready = threading.Event()

    def all_ended(out: list[tuple[str, dict[str, Any]]]) -> bool:
        ended = {e["run_id"] for _, e in out if e["type"] == "end"}
        return len(sent) >= 16 and ended >= set(sent)

    reader = threading.Thread(
        target=read_feed, args=(cluster, ready, all_ended, events, {"agent": "paced"})
    )
    reader.start()
    assert ready.wait(30)
    prefix = f"t-{uuid.uuid4().hex[:8]}"
    for n in range(16):
        sent.append(cluster.send("paced", "hi", f"{prefix}-{n}"))
    reader.join(60)
    assert not reader.is_alive(), "the feed did not deliver every run's end"

    assert {e["agent"] for _, e in events} == {"paced"}  # the ?agent= filter
    assert all(entry_id for entry_id, _ in events)
    for run_id in sent:
        mine = [e for _, e in events if e["run_id"] == run_id]
        assert [e["type"] for e in mine] == [
            "start", "text_start", *["chunk"] * 5, "text_end", "end"
        ]  # fmt: skip
        assert mine[0]["sender"] == mine[-1]["sender"] and mine[0]["sender"].startswith(prefix)
    # A worker logs "run succeeded" after the end event it wrote, so the feed can be ahead of
    # the logs: wait until every run's line is there (once, a full run read one too early).
    workers = wait_for(
        lambda: (w := {worker_of(cluster, run_id) for run_id in sent}) and None not in w and w,
        10,
        0.2,
        "every run's worker to have logged its end",
    )
    assert workers == {"worker1", "worker2"}

    # Resumable: Last-Event-ID picks up right after an event, with no gap and no duplicate. The
    # feed is one stream a bucket, merged as read: each run's events keep their order, runs of
    # different buckets interleave as they come (so the rest is compared run by run).
    k = len(events) // 2
    rest: list[tuple[str, dict[str, Any]]] = []
    read_feed(
        cluster,
        threading.Event(),
        lambda out: len(out) >= len(events) - k - 1,
        rest,
        {"agent": "paced"},
        {"Last-Event-ID": events[k][0]},
    )

    def by_run(out: list[tuple[str, dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        runs: dict[str, list[dict[str, Any]]] = {}
        for _, e in out:
            runs.setdefault(e["run_id"], []).append(e)
        return runs

    assert by_run(rest) == by_run(events[k + 1 :])


def walrus(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "WALRUS_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "walrus_tasks.cli", "events", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_walrus_events_cli(cluster: Cluster, sender: str) -> None:
    url, source = cluster.gateway_url, new_source()
    sub = walrus("sub", source, "echo", "--once", url=url)
    assert sub.returncode == RET_OK, sub.stderr
    sub_id = sub.stdout.strip()
    listed = walrus("ls", "--json", url=url)
    assert [(s["id"], s["source"], s["once"]) for s in json.loads(listed.stdout)] == [
        (sub_id, source, True)
    ]
    assert source in walrus("ls", url=url).stdout
    published = walrus("publish", source, '{"k": [1, 2]}', "--json-payload", url=url)
    assert published.returncode == RET_OK, published.stderr
    run_id = published.stdout.strip()
    assert cluster.wait_run(run_id)["status"] == "succeeded"
    assert cluster.history("echo", f"event:{source}")[0]["content"] == '{"k": [1, 2]}'
    assert walrus("publish", source, "again", url=url).stdout == ""  # once: gone
    assert json.loads(walrus("ls", "--json", url=url).stdout) == []

    kept = walrus("sub", source, "echo", url=url).stdout.strip()
    assert walrus("rm", kept, url=url).returncode == RET_OK
    missing = walrus("rm", kept, url=url)
    assert missing.returncode == RET_ERROR and "404" in missing.stderr
    bad = walrus("sub", "bad source", "echo", url=url)
    assert bad.returncode == RET_ERROR and "422" in bad.stderr

    args = ["events", "tail", "--agent", "echo", "--count", "1", "--json", "--url", url]
    tail = subprocess.Popen(
        [sys.executable, "-m", "walrus_tasks.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The tail starts at the live end once connected: send until it has seen an event.
        wait_for(
            lambda: (
                cluster.wait_run(cluster.send("echo", "hi", sender)) and tail.poll() is not None
            ),
            30,
            0.1,
            "walrus events tail to print an event",
        )
        out, errs = tail.communicate(timeout=10)
    finally:
        if tail.poll() is None:
            tail.kill()
    assert tail.returncode == RET_OK, errs
    event = json.loads(out.strip())
    assert event["agent"] == "echo" and event["sender"] == sender and event["run_id"]


def test_the_event_bus_routes_are_in_the_openapi_document(cluster: Cluster) -> None:
    with cluster.http() as c:
        paths = c.get("/openapi.json").json()["paths"]
    assert set(paths["/v1/subscriptions"]) == {"get", "post"}
    assert set(paths["/v1/subscriptions/{sub_id}"]) == {"delete"}
    assert set(paths["/v1/events"]) == {"get", "post"}
