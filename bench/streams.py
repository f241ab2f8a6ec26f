"""Stream figures: N concurrent SSE clients of one gateway (fan-out), and one long stream.

Fan-out: ``n`` plain SSE clients (:mod:`bench.sse_clients`, spread over a few processes, opened
at a bounded rate) follow ``GET /v1/runs/{id}/events`` of ``runs`` runs of the ``fanout`` agent
(a paced reply), each queued in its conversation behind :func:`gate_runs` runs of the same agent
(a conversation is one agent's; several, so that together they outlast the connecting), which
the bench cancels once every client has its response headers, the last queued first: so the
clients are all connected before their run starts and read it live (the report says how many
were open at once, and how many runs started before the release: ``started_at`` of the run
record against the release time). A stream is complete when it got every entry of its run's stream
(``XLEN``) and ended with ``end``. Measured on the gateway process from /proc: RSS (``VmRSS``)
before the clients connect and at its highest while they are connected, CPU (utime + stime)
from the first connect to the last ``end``, and the Redis connections (``INFO clients`` of the
bench Redis, every process) before and while.

Single stream: one run of the ``stream20k`` agent (20 000 one-word chunks, ``chunk_delay_ms =
0``), POSTed with ``"stream": true`` so its one SSE client follows it from the start; timed from
the first ``chunk`` event to ``end`` (and from the POST).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import time
from collections import Counter
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from bench import sse_clients
from walrus_tasks import keys

FANOUT_AGENT, STREAM_AGENT = "fanout", "stream20k"
FANOUT_WORDS, FANOUT_DELAY_MS = 40, 300
FANOUT_RUN_S = (FANOUT_WORDS - 1) * FANOUT_DELAY_MS / 1000
"""How long one run of the ``fanout`` agent takes (its chunks' pauses)."""
GATE_MARGIN_S = 20.0
"""How much longer than twice the clients' connecting time the gate runs ahead of each followed
run last, together (:func:`gate_runs`)."""
STREAM_WORDS = 20_000

AGENTS = {
    FANOUT_AGENT: f"""
model = "mock"
[mock]
reply = "{" ".join(f"f{i}" for i in range(FANOUT_WORDS))}"
chunk_delay_ms = {FANOUT_DELAY_MS}
""",
    STREAM_AGENT: f"""
model = "mock"
[mock]
reply = "{" ".join("w" for _ in range(STREAM_WORDS))}"
chunk_delay_ms = 0
""",
}


def rss_kb(pid: int) -> int:
    """Resident set size of ``pid`` in KB (``VmRSS``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis_clients(redis_url: str) -> int:
    """``connected_clients`` of the bench Redis (minus this probe's own connection)."""
    r = redis.Redis.from_url(redis_url)
    try:
        return int(r.info("clients")["connected_clients"]) - 1
    finally:
        r.close()


def _post(c: httpx.Client, sender: str) -> str:
    resp = c.post(f"/v1/agents/{FANOUT_AGENT}/messages", json={"content": "go", "sender": sender})
    return str(resp.raise_for_status().json()["run_id"])


def _cancel(c: httpx.Client, run_id: str) -> None:
    c.post(f"/v1/runs/{run_id}/cancel").raise_for_status()


def gate_runs(n: int, rate: float) -> int:
    """Gate runs ahead of each followed run: enough to hold it while ``n`` clients connect
    at ``rate`` per second (twice that time, plus ``GATE_MARGIN_S``)."""
    return max(1, math.ceil((2 * n / rate + GATE_MARGIN_S) / FANOUT_RUN_S))


def open_files_limit(pid: int) -> tuple[int, int]:
    """Soft and hard ``RLIMIT_NOFILE`` of ``pid`` (``/proc/<pid>/limits``; -1: unlimited)."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = (-1 if v == "unlimited" else int(v) for v in line.split()[3:5])
                return soft, hard
    return -1, -1


def peak_open(outcomes: list[sse_clients.Outcome]) -> int:
    """The most streams open at once (each from its response headers to its end)."""
    marks = sorted([(o[1], 1) for o in outcomes if o[1]] + [(o[2], -1) for o in outcomes if o[1]])
    open_now = peak = 0
    for _, step in marks:
        open_now += step
        peak = max(peak, open_now)
    return peak


def fanout(
    gateway_url: str, redis_url: str, gateway_pid: int, n: int, runs: int,
    procs: int = 0, rate: float = 2000.0,
) -> dict[str, Any]:  # fmt: skip
    """``n`` concurrent SSE clients on ``runs`` runs of one gateway (see the module docstring).

    The clients live in ``procs`` processes (0: one per 2 500 clients), which open ``rate``
    streams per second between them.
    """
    procs = procs or max(1, math.ceil(n / 2500))
    gates = gate_runs(n, rate)
    url = urlsplit(gateway_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    ctx = multiprocessing.get_context("spawn")
    children: list[tuple[BaseProcess, Connection, list[int]]] = []
    http = httpx.Client(base_url=gateway_url, timeout=30)
    try:
        for k in range(procs):
            mine, child = ctx.Pipe()
            p = ctx.Process(target=sse_clients.serve, args=(child,), daemon=True)
            p.start()
            child.close()
            children.append((p, mine, list(range(k, n, procs))))
        for _, conn, _ in children:
            conn.recv()  # ready: imported and waiting
        senders = [f"fan-{i}-{time.time_ns()}" for i in range(runs)]
        queued = [[_post(http, sender) for _ in range(gates + 1)] for sender in senders]
        run_ids = [ids[-1] for ids in queued]  # behind the gates, which hold the conversation
        rss0, conns0, cpu0 = rss_kb(gateway_pid), redis_clients(redis_url), cpu_s(gateway_pid)
        start_at = time.monotonic() + 0.1
        for _, conn, mine in children:
            requests = [
                sse_clients.Request("GET", f"/v1/runs/{run_ids[i % runs]}/events") for i in mine
            ]
            conn.send((host, port, requests, rate / procs, start_at))
        peak_rss, peak_conns = rss0, conns0
        connected: set[int] = set()
        released_s, released_ms = None, 0
        replies: dict[int, tuple[list[sse_clients.Outcome], float]] = {}
        while len(replies) < procs:
            peak_rss = max(peak_rss, rss_kb(gateway_pid))
            peak_conns = max(peak_conns, redis_clients(redis_url))
            for k, (p, conn, _) in enumerate(children):
                if k not in replies and conn.poll(0.25 / procs):
                    message = conn.recv()
                    if message == "connected":
                        connected.add(k)
                    else:
                        replies[k] = message
                elif k not in replies and not p.is_alive() and not conn.poll():
                    raise RuntimeError(f"fan-out client process {p.pid} died ({p.exitcode})")
            if released_s is None and len(connected) == procs:
                released_s = time.monotonic() - start_at
                released_ms = time.time_ns() // 1_000_000
                for ids in queued:  # every client is connected: let the runs start
                    for gate in reversed(ids[:-1]):  # the queued ones first: none starts
                        _cancel(http, gate)
        wall = time.monotonic() - start_at
    finally:
        http.close()
        for p, conn, _ in children:
            conn.close()
            p.join(5)
            if p.is_alive():
                p.kill()
    cpu_ms = (cpu_s(gateway_pid) - cpu0) * 1000
    outcomes = [o for k in range(procs) for o in replies[k][0]]
    client_cpu = [replies[k][1] for k in range(procs)]
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:  # the events each run has (what every one of its clients should get), how it ran
        expected = {run_id: int(r.xlen(keys.run_part(run_id, "events"))) for run_id in run_ids}
        record = {run_id: r.hmget(keys.run(run_id), "status", "started_at") for run_id in run_ids}
    finally:
        r.close()
    index = {i: run_ids[i % runs] for i in range(n)}
    order = [i for _, _, mine in children for i in mine]
    complete = sum(
        o[4] == "end" and o[3] == expected[index[i]] for i, o in zip(order, outcomes, strict=True)
    )
    delivered = sum(o[3] for o in outcomes)
    headers = [o[1] - start_at for o in outcomes if o[1]]
    ends = [o[2] - start_at for o in outcomes if o[4] == "end"]
    statuses = Counter(str(o[0]) for o in outcomes if o[0] != 200)
    statuses.update(o[5] for o in outcomes if o[5])
    statuses.update(f"last event {o[4]!r}" for o in outcomes if o[0] == 200 and o[4] != "end")
    early = sum(bool(s) and int(s) < released_ms for _, s in record.values())
    return {
        "clients": n,
        "runs": runs,
        "gate_runs_per_run": gates,
        "client_processes": procs,
        "connect_rate_per_s": rate,
        "completed_streams": sum(o[4] == "end" for o in outcomes),
        "complete_streams": complete,
        "failures": dict(statuses),
        "events_per_run": sorted(set(expected.values())),
        "runs_succeeded": sum(status == "succeeded" for status, _ in record.values()),
        "runs_started_before_release": early if released_ms else None,
        "delivered_events": delivered,
        "peak_open_streams": peak_open(outcomes),
        "all_connected_s": max(headers) if len(headers) == n else None,
        "last_end_s": max(ends) if ends else None,
        "wall_s": wall,
        "runs_released_s": released_s,
        "rss_before_kb": rss0,
        "rss_peak_kb": peak_rss,
        "rss_growth_per_stream_kb": (peak_rss - rss0) / n,
        "redis_clients_before": conns0,
        "redis_clients_peak": peak_conns,
        "gateway_cpu_ms": cpu_ms,
        "gateway_cpu_ms_per_1000_events": cpu_ms * 1000 / delivered if delivered else None,
        "client_cpu_s": client_cpu,
        "client_busiest_share": max(client_cpu) / wall if wall else None,
        "gateway_open_files_limit": open_files_limit(gateway_pid),
    }


def single_stream(gateway_url: str) -> dict[str, Any]:
    """One run of 20 000 one-word chunks, one SSE client: chunk events/s and tokens/s."""
    chunks = tokens = 0
    first = last = 0.0
    body = {"content": "go", "sender": f"one-{time.time_ns()}", "stream": True}
    t0 = time.perf_counter()
    with (
        httpx.Client(base_url=gateway_url, timeout=300) as c,
        c.stream("POST", f"/v1/agents/{STREAM_AGENT}/messages", json=body) as resp,
    ):
        for line in resp.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "chunk":
                first = first or time.perf_counter()
                chunks += 1
                tokens += len(event["content"].split())
            elif event["type"] == "end":
                last = time.perf_counter()
                break
    elapsed = max(last - first, 1e-9)
    return {
        "chunk_events": chunks,
        "tokens": tokens,
        "post_to_end_s": last - t0,
        "first_chunk_to_end_s": elapsed,
        "chunk_events_per_s": chunks / elapsed,
        "tokens_per_s": tokens / elapsed,
    }
