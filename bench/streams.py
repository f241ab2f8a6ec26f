"""Stream figures: N concurrent SSE clients of one gateway (fan-out), and one long stream.

Fan-out: ``n`` httpx async clients in this process follow ``GET /v1/runs/{id}/events`` of
``runs`` runs of the ``fanout`` agent (a paced reply, so the streams are open together). Measured
on the gateway process from /proc: RSS (``VmRSS``) before the clients connect and at its highest
while all are connected, CPU (utime + stime) from the first connect to the last ``end``, and the
Redis connections (``INFO clients`` of the bench Redis, every process) before and while.

Single stream: one run of the ``stream20k`` agent (20 000 one-word chunks, ``chunk_delay_ms =
0``), POSTed with ``"stream": true`` so its one SSE client follows it from the start; timed from
the first ``chunk`` event to ``end`` (and from the POST).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import httpx
import redis

FANOUT_AGENT, STREAM_AGENT = "fanout", "stream20k"
FANOUT_WORDS, FANOUT_DELAY_MS = 40, 300
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


def _post(gateway_url: str, agent: str, sender: str) -> str:
    resp = httpx.post(
        f"{gateway_url}/v1/agents/{agent}/messages",
        json={"content": "go", "sender": sender},
        timeout=30,
    )
    resp.raise_for_status()
    return str(resp.json()["run_id"])


async def _follow(
    client: httpx.AsyncClient, run_id: str, connected: asyncio.Event
) -> tuple[int, bool]:
    events, ended = 0, False
    async with client.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        connected.set()
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                events += 1
                ended = line == "event: end"
    return events, ended


def fanout(gateway_url: str, redis_url: str, gateway_pid: int, n: int, runs: int) -> dict[str, Any]:
    """``n`` concurrent SSE clients on ``runs`` runs of one gateway (see the module docstring)."""
    run_ids = [_post(gateway_url, FANOUT_AGENT, f"fan-{i}-{time.time_ns()}") for i in range(runs)]
    rss0, conns0, cpu0 = rss_kb(gateway_pid), redis_clients(redis_url), cpu_s(gateway_pid)
    t0 = time.perf_counter()

    async def main() -> tuple[list[tuple[int, bool]], int, int, float]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        async with httpx.AsyncClient(base_url=gateway_url, limits=limits, timeout=300) as c:
            flags = [asyncio.Event() for _ in range(n)]
            tasks = [
                asyncio.create_task(_follow(c, run_ids[i % runs], f)) for i, f in enumerate(flags)
            ]
            await asyncio.gather(*(f.wait() for f in flags))
            connected_s = time.perf_counter() - t0
            peak_rss, peak_conns = rss_kb(gateway_pid), redis_clients(redis_url)
            while not all(t.done() for t in tasks):
                await asyncio.wait(tasks, timeout=0.25)
                if not all(t.done() for t in tasks):
                    peak_rss = max(peak_rss, rss_kb(gateway_pid))
                    peak_conns = max(peak_conns, redis_clients(redis_url))
            return [t.result() for t in tasks], peak_rss, peak_conns, connected_s

    results, peak_rss, peak_conns, connected_s = asyncio.run(main())
    wall = time.perf_counter() - t0
    delivered = sum(events for events, _ in results)
    cpu_ms = (cpu_s(gateway_pid) - cpu0) * 1000
    return {
        "clients": n,
        "runs": runs,
        "completed_streams": sum(ended for _, ended in results),
        "delivered_events": delivered,
        "all_connected_s": connected_s,
        "wall_s": wall,
        "rss_before_kb": rss0,
        "rss_peak_kb": peak_rss,
        "rss_growth_per_stream_kb": (peak_rss - rss0) / n,
        "redis_clients_before": conns0,
        "redis_clients_peak": peak_conns,
        "gateway_cpu_ms": cpu_ms,
        "gateway_cpu_ms_per_1000_events": cpu_ms * 1000 / delivered if delivered else None,
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
