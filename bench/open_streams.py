"""What a join of an ended run and a streamed run cost beside many open streams.

``python -m bench.open_streams --open 1000``: the bench's own Redis, gateway and workers
(``bench.procs``, 2 workers of 10 pool processes); ``--open`` Agent Protocol streams held open
on runs queued on 16 threads, one in each hash-tag bucket, behind a first run that waits for
ten minutes (so each is a key the gateway's stream hub reads, and none gets an event); then,
measured one after the other with every one of them still open:

- ``join``: ``--joins`` background runs of the bench agent, ten a thread, left to end, then each
  joined with the official ``langgraph-sdk``;
- ``streamed``: ``--streamed`` native streamed runs (figure 2's ``POST`` → first chunk, each to a
  conversation of its own, on one keep-alive connection), after 20 unmeasured.

Each gives the gateway's, workers', Redis's and this client's CPU a call, over the measured
calls alone. Prints one JSON object (docs/benchmarks.md, "Issue 25, sixteenth round");
``still_open`` is the streams open still after the last call, and the exit status is 1 unless
every stream was open through every call, every join answered the run's values and every
streamed run ended.

A stream's reader sends its ``XREAD`` again over every key it reads whenever a key is added or
an entry comes, so both cost more the more streams one reader reads (``gateway/hub.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
import uuid
from typing import Any

import httpx

from bench import streamed_runs
from bench.procs import AGENT, BENCH_AGENT, LIFTED, Env, cpu_seconds, environment
from walrus_tasks import keys

HELD = 'model = "mock"\n[mock]\nreply = "held for ten minutes"\nchunk_delay_ms = 600000\n'
"""The agent whose first run holds its thread: ten minutes from its first chunk to the next.
The runs queued behind it wait, and their streams with them."""
PER_THREAD = 10
WARMUP = 10
"""Joins before the measured ones (the gateway's first calls)."""
STREAMED_WARMUP = 20


def thread_a_bucket() -> list[str]:
    """A thread id in each hash-tag bucket, so the held streams are spread over all of them."""
    found: dict[int, str] = {}
    while len(found) < keys.BUCKETS:
        tid = str(uuid.uuid4())
        found.setdefault(keys.bucket_of(f"held:thread:{tid}"), tid)
    return [found[b] for b in range(keys.BUCKETS)]


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def per_call(cpu0: dict[str, float], cpu1: dict[str, float], n: int) -> dict[str, float]:
    """CPU ms a call of each kind of process, from two ``cpu_seconds`` snapshots."""
    return {f"{kind}_cpu_ms": (cpu1[kind] - cpu0[kind]) * 1000 / n for kind in cpu1}


async def measure(env: Env, held: int, joins: int, streamed: int) -> dict[str, Any]:
    from langgraph_sdk import get_client

    url = env.gateway_url
    limits = httpx.Limits(max_connections=held + 10)
    async with (
        get_client(url=url, api_key=None) as lg,
        httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as h,
    ):
        held_runs: list[tuple[str, str]] = []
        for n, tid in enumerate(thread_a_bucket() if held else []):
            await lg.threads.create(thread_id=tid)
            for i in range(held // keys.BUCKETS + (n < held % keys.BUCKETS)):
                run = await lg.runs.create(
                    tid, "held", input=say(str(i)), multitask_strategy="enqueue"
                )
                held_runs.append((tid, run["run_id"]))
        opened: list[int] = []

        async def hold(tid: str, run_id: str) -> None:
            path = f"/threads/{tid}/runs/{run_id}/stream"
            async with h.stream("GET", path, headers={"Last-Event-ID": "-1"}) as resp:
                opened.append(resp.status_code)
                async for _ in resp.aiter_bytes():
                    pass

        holders = [asyncio.create_task(hold(tid, run_id)) for tid, run_id in held_runs]
        deadline = time.monotonic() + 60
        while len(opened) < held and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        ended: list[tuple[str, str]] = []
        for _ in range(-(-(joins + WARMUP) // PER_THREAD)):
            thread = (await lg.threads.create())["thread_id"]
            for i in range(PER_THREAD):
                run = await lg.runs.create(
                    thread, AGENT, input=say(str(i)), multitask_strategy="enqueue"
                )
                ended.append((thread, run["run_id"]))
        for thread, run_id in ended:  # each has ended once its own runs.get says so
            while (await lg.runs.get(thread, run_id))["status"] in ("pending", "running"):
                await asyncio.sleep(0.05)
        for thread, run_id in ended[:WARMUP]:
            await lg.runs.join(thread, run_id)
        measured = ended[WARMUP : WARMUP + joins]
        cpu0, t0 = cpu_seconds(env), time.perf_counter()
        answered = [await lg.runs.join(thread, run_id) for thread, run_id in measured]
        elapsed, cpu1 = time.perf_counter() - t0, cpu_seconds(env)
        join = {
            "joins": len(measured),
            "answered": sum(bool(a.get("messages")) and "__error__" not in a for a in answered),
            "wall_ms": elapsed * 1000 / len(measured),
            **per_call(cpu0, cpu1, len(measured)),
        }
        cpu0 = cpu_seconds(env)
        runs = await asyncio.to_thread(
            streamed_runs.dispatch, url, AGENT, streamed, STREAMED_WARMUP, lambda _: None
        )
        cpu1 = cpu_seconds(env)  # the warm-up's runs are in it: a CPU figure a run of all
        stream = {
            "runs": streamed,
            "failures": dict(runs.failures),
            "first_chunk_p50_ms": runs.first_chunk.summary()["p50_ms"],
            **per_call(cpu0, cpu1, streamed + STREAMED_WARMUP),
        }
        still_open = sum(not task.done() for task in holders)
        for task in holders:
            task.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
    return {
        "open_streams": sum(code == 200 for code in opened),
        "still_open": still_open,
        "join": join,
        "streamed": stream,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.open_streams", description=__doc__)
    parser.add_argument("--open", type=int, default=1000, help="streams held open (1000)")
    parser.add_argument("--joins", type=int, default=300, help="joins measured (300)")
    parser.add_argument("--streamed", type=int, default=200, help="streamed runs measured (200)")
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket each, here and in the gateway
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    agents = {AGENT: BENCH_AGENT, "held": HELD}
    # Each bucket's held thread keeps a pool process: 2 x 10 leave 4 for the measured runs.
    workers, concurrency = 2, (keys.BUCKETS + 4) // 2
    with environment(
        workers, concurrency, agents=agents, env_extra=dict(LIFTED), name="open-streams"
    ) as env:
        out = asyncio.run(measure(env, args.open, args.joins, args.streamed))
    print(json.dumps(out, indent=2))
    held = out["open_streams"] == out["still_open"] == args.open  # open through every call
    answered = out["join"]["answered"] == out["join"]["joins"]
    return 0 if held and answered and not out["streamed"]["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
