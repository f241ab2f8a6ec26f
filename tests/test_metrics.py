"""Metrics: the gateway's GET /metrics, a worker's --metrics-port, and `walrus status`."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import Cluster, parse_sse, wait_for
from tests.conftest import redis_db_url
from walrus_tasks import metrics
from walrus_tasks.redis_server import RedisServer, free_port

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    resp = httpx.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }


def scrape_until(url: str, ready: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``ready`` holds (figures recorded just after a run ends show up shortly)."""

    def attempt() -> Samples | None:
        samples = scrape(url)
        return samples if ready(samples) else None

    return wait_for(attempt, what=what)  # type: ignore[no-any-return]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def gateway_metrics(cluster: Cluster) -> Samples:
    return scrape(cluster.gateway_url + "/metrics")


def test_runs_are_counted_by_agent_and_outcome_with_their_durations(
    cluster: Cluster, sender: str
) -> None:
    before = gateway_metrics(cluster)
    runs = [cluster.send("echo", f"hi {i}", sender) for i in range(3)]
    runs.append(cluster.send("broken", "fail please", sender))
    for run_id in runs:
        cluster.wait_run(run_id)

    def moved(after: Samples, name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    echo_ok = {"agent": "echo", "status": "succeeded"}
    after = scrape_until(
        cluster.gateway_url + "/metrics",
        lambda s: (
            moved(s, "walrus_runs_total", **echo_ok) >= 3
            and moved(s, "walrus_runs_total", agent="broken", status="failed") >= 1
        ),
        "run outcomes in /metrics",
    )
    assert moved(after, "walrus_runs_total", **echo_ok) == 3
    assert moved(after, "walrus_runs_total", agent="broken", status="failed") == 1
    assert moved(after, "walrus_runs_total", agent="echo", status="failed") == 0
    assert moved(after, "walrus_messages_submitted_total", agent="echo") == 3
    assert moved(after, "walrus_messages_submitted_total", agent="broken") == 1
    assert moved(after, "walrus_run_duration_seconds_count", agent="echo") == 3
    assert moved(after, "walrus_run_duration_seconds_bucket", agent="echo", le="+Inf") == 3
    assert moved(after, "walrus_run_duration_seconds_sum", agent="echo") > 0
    # every configured agent has its series from zero, so its first run shows in rate()
    assert ("walrus_runs_total", frozenset({"agent": "slow", "status": "cancelled"}.items())) in (
        after
    )


def test_requests_are_labelled_by_route_template_never_by_raw_path(
    cluster: Cluster, sender: str
) -> None:
    run_id = cluster.send("echo", "hello", sender)
    cluster.wait_run(run_id)
    with cluster.http() as c:
        assert c.get(f"/v1/runs/{'0' * 32}").status_code == 404
        assert c.get(f"/no/such/path/{run_id}").status_code == 404
        big = {"content": "x" * (1024 * 1024 + 10), "sender": sender}
        assert c.post("/v1/agents/echo/messages", json=big).status_code == 413
    text = httpx.get(cluster.gateway_url + "/metrics").text
    assert run_id not in text and "0" * 32 not in text
    samples = gateway_metrics(cluster)
    get_run = {"method": "GET", "route": "/v1/runs/{run_id}"}
    assert value(samples, "walrus_http_requests_total", **get_run, status="200") >= 1
    assert value(samples, "walrus_http_requests_total", **get_run, status="404") >= 1
    assert value(samples, "walrus_http_request_duration_seconds_count", **get_run) >= 2
    post = {"method": "POST", "route": "/v1/agents/{agent}/messages"}
    assert value(samples, "walrus_http_requests_total", **post, status="202") >= 1
    assert value(samples, "walrus_http_requests_total", **post, status="413") >= 1
    assert value(samples, "walrus_http_requests_total", method="GET", route="unmatched",
                 status="404") >= 1  # fmt: skip


def test_queue_depths_leases_and_active_runs_are_read_from_redis_on_scrape(
    cluster: Cluster,
) -> None:
    samples = gateway_metrics(cluster)
    assert value(samples, "walrus_redis_up") == 1
    for queue in ("walrus.runs", "walrus.tools", "walrus.control"):
        assert ("walrus_queue_depth", frozenset({("queue", queue)})) in samples
    for name in ("walrus_leases_held", "walrus_runs_active", "walrus_tasks_unacked"):
        assert (name, frozenset()) in samples and value(samples, name) >= 0
    assert ("process_resident_memory_bytes", frozenset()) in samples
    with cluster.http() as c:
        assert "/metrics" in c.get("/openapi.json").json()["paths"]


def test_open_sse_streams_are_counted_while_they_are_open(cluster: Cluster, sender: str) -> None:
    events = {"route": "/v1/runs/{run_id}/events"}
    before = value(gateway_metrics(cluster), "walrus_sse_streams_active", **events)
    run_id = cluster.send("slow", "take your time", sender)
    with (
        cluster.http() as c,
        c.stream("GET", f"/v1/runs/{run_id}/events", timeout=60) as resp,
    ):
        lines = resp.iter_lines()
        next(line for line in lines if line.startswith("event: chunk"))
        during = value(gateway_metrics(cluster), "walrus_sse_streams_active", **events)
        assert during == before + 1
        assert c.post(f"/v1/agents/slow/conversations/{sender}/kill").status_code == 200
        assert list(parse_sse(lines))[-1][1]["status"] == "cancelled"
    wait_for(
        lambda: value(gateway_metrics(cluster), "walrus_sse_streams_active", **events) == before,
        what="the stream gauge to drop back",
    )


def test_a_client_that_leaves_mid_stream_ends_its_stream_while_the_run_goes_on(
    cluster: Cluster, sender: str
) -> None:
    events = {"route": "/v1/runs/{run_id}/events"}
    before = value(gateway_metrics(cluster), "walrus_sse_streams_active", **events)
    run_id = cluster.send("slow", "take your time", sender)  # 20 chunks, 250 ms apart
    with (
        cluster.http() as c,
        c.stream("GET", f"/v1/runs/{run_id}/events", timeout=60) as resp,
    ):
        next(line for line in resp.iter_lines() if line.startswith("event: chunk"))
    wait_for(
        lambda: value(gateway_metrics(cluster), "walrus_sse_streams_active", **events) == before,
        what="the stream gauge to drop back",
    )
    with cluster.http() as c:
        assert c.get(f"/v1/runs/{run_id}").json()["status"] == "running"


def test_a_worker_with_metrics_port_serves_step_and_tool_durations_of_its_pool(
    private_cluster: Cluster, sender: str
) -> None:
    port = free_port()
    private_cluster.start_gateway()
    private_cluster._spawn(
        "worker-m",
        ["walrus_tasks.cli", "worker", "--concurrency=2", "--pool=prefork", "--name=worker-m@test",
         f"--metrics-port=127.0.0.1:{port}"],
    )  # fmt: skip
    private_cluster.wait_ready()
    url = f"http://127.0.0.1:{port}/metrics"
    assert value(scrape(url), "walrus_step_duration_seconds_count", agent="tooly") == 0
    run_id = private_cluster.send("tooly", "what time is it?", sender)
    assert private_cluster.wait_run(run_id)["status"] == "succeeded"
    # two LLM steps (tool calls, then the reply), three clock calls, all in pool children
    samples = scrape_until(
        url,
        lambda s: value(s, "walrus_step_duration_seconds_count", agent="tooly") >= 2,
        "step durations on the worker's metrics port",
    )
    assert value(samples, "walrus_step_duration_seconds_count", agent="tooly") == 2
    assert value(samples, "walrus_tool_duration_seconds_count", tool="clock") == 3
    assert value(samples, "walrus_tool_calls_total", tool="clock", result="ok") == 3
    # a fresh Redis database: the cluster-wide figures are exactly this one run
    gateway = scrape_until(
        private_cluster.gateway_url + "/metrics",
        lambda s: value(s, "walrus_runs_total", agent="tooly", status="succeeded") >= 1,
        "the run outcome",
    )
    assert value(gateway, "walrus_runs_total", agent="tooly", status="succeeded") == 1
    assert value(gateway, "walrus_run_duration_seconds_count", agent="tooly") == 1

    log = (private_cluster.log_dir / "worker-m.log").read_text()
    line = next(json.loads(x) for x in log.splitlines() if "serving worker metrics" in x)
    samples_dir = Path(line["msg"].rsplit("samples in ", 1)[1].rstrip(")"))
    assert samples_dir.is_dir() and any(samples_dir.iterdir())
    private_cluster.stop()
    assert not samples_dir.exists(), "the worker removes its samples directory when it stops"


def test_walrus_status_shows_run_outcomes_by_agent(cluster: Cluster, sender: str) -> None:
    cluster.wait_run(cluster.send("echo", "count me", sender))
    env = {**os.environ, "WALRUS_REDIS_URL": cluster.redis_url, "COLUMNS": "200"}

    def walrus(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "walrus_tasks.cli", "status", *args],
            capture_output=True, text=True, env=env, timeout=60,
        )  # fmt: skip

    data = wait_for(
        lambda: (d := json.loads(walrus("--json").stdout))["runs"].get("echo") and d,
        what="runs in walrus status --json",
    )
    echo = data["runs"]["echo"]
    assert echo["succeeded"] >= 1 and echo["timed"] >= echo["succeeded"]
    assert echo["mean_seconds"] is not None and echo["mean_seconds"] >= 0
    table = walrus()
    assert table.returncode == 0, table.stderr
    assert "runs ended, by agent" in table.stdout
    assert re.search(r"\becho\s+│\s+\d+\s+│", table.stdout), table.stdout


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(redis_db_url(redis_server), decode_responses=True)


def test_run_figures_round_trip_through_one_redis_hash(fresh_redis: redis.Redis) -> None:
    metrics.record_run(fresh_redis, "a", "succeeded", 0.3)
    metrics.record_run(fresh_redis, "a", "succeeded", 5000.0)  # past the last bucket
    metrics.record_run(fresh_redis, "a", "failed", None)  # never started: counted, not timed
    metrics.record_run(fresh_redis, "b", "cancelled", 0.1)  # on a bound: counts in it
    runs = metrics.read_runs(fresh_redis)
    assert list(runs) == ["a", "b"]
    a = runs["a"]
    assert a.outcomes == {"succeeded": 2, "failed": 1, "cancelled": 0}
    assert a.timed == 2 and a.seconds_sum == pytest.approx(5000.3)
    cumulative = dict(a.cumulative())
    assert cumulative[0.25] == 0 and cumulative[0.5] == 1 and cumulative[1800.0] == 1
    assert cumulative[math.inf] == 2 and list(cumulative)[-1] == math.inf
    assert dict(runs["b"].cumulative())[0.1] == 1
    assert runs["b"].as_dict() == {
        "succeeded": 0, "failed": 0, "cancelled": 1, "timed": 1, "seconds_sum": 0.1,
        "mean_seconds": 0.1,
    }  # fmt: skip


def test_a_run_that_started_is_timed_from_its_start() -> None:
    assert metrics.run_seconds(None) is None and metrics.run_seconds("") is None
    assert metrics.run_seconds("1000", now=3.5) == pytest.approx(2.5)


def test_an_unknown_field_in_the_hash_never_fails_a_scrape() -> None:
    runs = metrics.parse_runs({"n:a:succeeded": "2", "le:a:nonsense": "1", "future:x": "9"})
    assert runs["a"].outcomes["succeeded"] == 2 and runs["a"].timed == 0


def test_the_middleware_counts_a_failed_request_as_500_and_a_stream_while_its_task_runs() -> None:
    """In-process (the middleware alone): what its task's done callback records."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry

    from gateway.metrics import HttpMetrics, MetricsMiddleware

    registry = CollectorRegistry()
    app = FastAPI()
    during: list[float | None] = []

    def gauge() -> float | None:
        return registry.get_sample_value("walrus_sse_streams_active", {"route": "/events"})

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/events")
    def events() -> StreamingResponse:
        def frames() -> Iterator[str]:
            yield "data: 1\n\n"
            during.append(gauge())
            yield "data: 2\n\n"

        return StreamingResponse(frames(), media_type="text/event-stream")

    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(registry), routes=app.router.routes)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/boom").status_code == 500
        assert client.get("/events").text == "data: 1\n\ndata: 2\n\n"

    def answered(route: str, status: str) -> float | None:
        labels = {"method": "GET", "route": route, "status": status}
        return registry.get_sample_value("walrus_http_requests_total", labels)

    assert answered("/boom", "500") == 1 and answered("/events", "200") == 1
    assert during == [1.0] and gauge() == 0.0
