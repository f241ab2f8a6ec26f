"""A thousand SSE clients of one gateway, read by one Redis reader a bucket (issue 11)."""

from __future__ import annotations

import asyncio
import os
import resource
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.cluster import Cluster, running
from walrus_tasks import keys

RUNS, CLIENTS_PER_RUN = 10, 100


def redis_connections(pid: int, redis_port: int) -> int:
    """How many TCP connections process ``pid`` holds to ``redis_port`` (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if remote_port == redis_port and cols[3] == "01" and cols[9] in inodes:
                count += 1
    return count


async def follow(client: httpx.AsyncClient, run_id: str, connected: asyncio.Event) -> list[str]:
    """The event types of one run's SSE stream."""
    types: list[str] = []
    async with client.stream("GET", f"/v1/runs/{run_id}/events") as resp:
        assert resp.status_code == 200
        connected.set()
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                types.append(line[7:])
    return types


def test_a_thousand_sse_clients_all_get_their_end_on_a_constant_number_of_redis_connections(
    private_cluster: Cluster,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8192)), hard))
    redis_port = urlsplit(private_cluster.redis_url).port or 6379
    with running(private_cluster, workers=()) as cluster:
        gateway = cluster.procs["gateway"].pid
        run_ids = [cluster.send("paced", "go", f"fan-{i}") for i in range(RUNS)]
        before = redis_connections(gateway, redis_port)

        async def main() -> tuple[list[list[str]], list[int]]:
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            async with httpx.AsyncClient(
                base_url=cluster.gateway_url, limits=limits, timeout=120
            ) as client:
                events = [asyncio.Event() for _ in range(RUNS * CLIENTS_PER_RUN)]
                streams = [
                    asyncio.create_task(follow(client, run_ids[i % RUNS], e))
                    for i, e in enumerate(events)
                ]
                await asyncio.gather(*(e.wait() for e in events))
                # Every stream is open and idle (no worker yet): the gateway's connections now.
                seen = [redis_connections(gateway, redis_port)]
                cluster.start_worker("worker1")
                while not all(s.done() for s in streams):
                    seen.append(redis_connections(gateway, redis_port))
                    await asyncio.wait(streams, timeout=0.2)
                return [s.result() for s in streams], seen

        results, seen = asyncio.run(main())
    assert len(results) == RUNS * CLIENTS_PER_RUN
    for types in results:
        assert types.count("chunk") == 5 and types[-1] == "end", types
    # Each bucket's reader connected its hot read as the gateway started (in ``before``); its
    # control connection opens at its first stream, its cold read's once a stream has gone a
    # second without entries: two more for each bucket the runs are in, and none for a
    # thousand streams.
    buckets = len({keys.run_bucket(run_id) for run_id in run_ids})
    assert max(seen) <= before + 2 * buckets + 5, (before, buckets, seen)
