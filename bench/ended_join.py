"""A join of an ended run beside many open streams: what it costs the gateway and Redis.

``python -m bench.ended_join --open 1000 --joins 300``: the bench's own Redis, gateway and
workers (``bench.procs``); ``--open`` Agent Protocol streams held open on runs queued behind
one that waits for ten minutes (so each is a key the gateway's stream hub reads, and none gets
an event); then ``--joins`` background runs of the bench agent, ten a thread, left to end; then
each joined with the official ``langgraph-sdk`` one after the other, the gateway's, workers',
Redis's and this client's CPU a join measured over the joins alone. Prints one JSON object
(docs/benchmarks.md, "Issue 25, sixteenth round"), ``still_open`` the streams open still when
the last join was answered; the exit status is 1 unless every stream was open through every
join and every join answered the run's values.

A join reads the run's stream to its ``end``. Through a subscription, every new key made the
hub send its ``XREAD`` again over every key it reads, so a join cost more the more streams
were open; a run whose record says it has ended is read without one (``Hub.run_items``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from typing import Any

import httpx

from bench.procs import AGENT, BENCH_AGENT, LIFTED, Env, cpu_seconds, environment

HELD = 'model = "mock"\n[mock]\nreply = "held for ten minutes"\nchunk_delay_ms = 600000\n'
"""The agent whose first run holds its thread: ten minutes from its first chunk to the next.
The runs queued behind it wait, and their streams with them."""
PER_THREAD = 10
WARMUP = 10
"""Joins before the measured ones (the gateway's first calls)."""


def say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


async def measure(env: Env, held: int, joins: int) -> dict[str, Any]:
    from langgraph_sdk import get_client

    url = env.gateway_url
    limits = httpx.Limits(max_connections=held + 10)
    async with (
        get_client(url=url, api_key=None) as lg,
        httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as h,
    ):
        tid = (await lg.threads.create())["thread_id"]
        runs = [
            (await lg.runs.create(tid, "held", input=say(str(i)), multitask_strategy="enqueue"))
            for i in range(held)
        ]
        opened: list[int] = []

        async def hold(run_id: str) -> None:
            path = f"/threads/{tid}/runs/{run_id}/stream"
            async with h.stream("GET", path, headers={"Last-Event-ID": "-1"}) as resp:
                opened.append(resp.status_code)
                async for _ in resp.aiter_bytes():
                    pass

        holders = [asyncio.create_task(hold(run["run_id"])) for run in runs]
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
        still_open = sum(not task.done() for task in holders)
        for task in holders:
            task.cancel()
        await asyncio.gather(*holders, return_exceptions=True)
    n = len(measured)
    return {
        "open_streams": sum(code == 200 for code in opened),
        "still_open": still_open,
        "joins": n,
        "answered": sum(bool(a.get("messages")) and "__error__" not in a for a in answered),
        "wall_ms_a_join": elapsed * 1000 / n,
        **{f"{kind}_cpu_ms_a_join": (cpu1[kind] - cpu0[kind]) * 1000 / n for kind in cpu1},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ended_join", description=__doc__)
    parser.add_argument("--open", type=int, default=1000, help="streams held open (1000)")
    parser.add_argument("--joins", type=int, default=300, help="joins measured (300)")
    args = parser.parse_args(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket each, here and in the gateway
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    agents = {AGENT: BENCH_AGENT, "held": HELD}
    with environment(2, 2, agents=agents, env_extra=dict(LIFTED), name="ended-join") as env:
        out = asyncio.run(measure(env, args.open, args.joins))
    print(json.dumps(out, indent=2))
    held = out["open_streams"] == out["still_open"] == args.open  # open through every join
    return 0 if out["answered"] == out["joins"] and held else 1


if __name__ == "__main__":
    raise SystemExit(main())
