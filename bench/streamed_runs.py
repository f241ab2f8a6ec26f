"""Figures 2 and 7: streamed runs, each timed from just before its ``POST`` (dispatch latency,
and the same run in a fresh conversation against one with a long history)."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from bench import cost
from bench.measure import Latencies, Tick
from walrus_tasks import keys
from walrus_tasks.client import parse_sse

# --- 2. dispatch latency --------------------------------------------------------------------------


def entry_s(entry_id: str) -> float:
    """When Redis wrote stream entry ``entry_id`` (its clock, whole ms), in epoch seconds."""
    return int(entry_id.split("-", 1)[0]) / 1000


@dataclass
class Dispatch:
    """Per run, from just before the POST (client clock): response headers (the gateway has
    run ``submit()``), the ``start`` event (a worker took the lease), the first ``chunk``
    event, and the ``end`` event."""

    headers: Latencies = field(default_factory=Latencies)
    start: Latencies = field(default_factory=Latencies)
    first_chunk: Latencies = field(default_factory=Latencies)
    end: Latencies = field(default_factory=Latencies)
    start_written: Latencies = field(default_factory=Latencies)
    """The same runs by the run's own clock (its stream's entry ids: Redis's, whole ms, so each
    figure is off by up to 1 ms either way): ``POST`` → the ``start`` entry written (the
    gateway's part and the broker hop to the worker), ``start`` → the first ``chunk`` entry
    written (the worker's step up to its first token), that entry → parsed by the client (the
    hub, the gateway's write, the client's read). On one machine only: the client's clock is
    Redis's."""
    chunk_written: Latencies = field(default_factory=Latencies)
    chunk_delivered: Latencies = field(default_factory=Latencies)
    worker: Latencies = field(default_factory=Latencies)
    """The run record's ``started_at`` → ``finished_at`` (the worker's clock, whole ms): the
    lease taken, the step's claim and reads, the call, its commit and the finish (7. only)."""
    failures: Counter[str] = field(default_factory=Counter)


def stream_one(client: httpx.Client, agent: str, sender: str) -> tuple[str, dict[str, float], str]:
    """One streamed POST: the ``end`` status, when (``perf_counter``, ``t0`` = just before
    the POST) the headers and the first event of each type arrived, and the run id."""
    body = {"content": "ping", "sender": sender, "stream": True}
    seen: dict[str, float] = {}
    status, run_id = "no end event", ""
    seen["t0"], seen["t0_wall"] = time.perf_counter(), time.time()
    with client.stream("POST", f"/v1/agents/{agent}/messages", json=body) as resp:
        seen["headers"] = time.perf_counter()
        if resp.status_code != 200:
            resp.read()
            raise RuntimeError(f"POST returned {resp.status_code}: {resp.text}")
        for item in parse_sse(resp.iter_lines()):
            if item.type not in seen:
                seen[item.type] = time.perf_counter()
                if item.id:  # when Redis wrote it, and when the client had it, by the wall
                    seen[item.type + "_written"] = entry_s(item.id)
                    seen[item.type + "_wall"] = time.time()
            if item.type == "start":
                run_id = str(item.data["run_id"])
            if item.type == "end":
                status = str(item.data["status"])
        # Read to the body's end (the gateway closes the stream right after ``end``): a
        # response left unread closes its connection, and the next POST would open another.
    return status, seen, run_id


def record(out: Dispatch, status: str, seen: dict[str, float], measured: bool) -> None:
    """Add one streamed run to ``out`` (a failure is counted, a warm-up run left out)."""
    if status != "succeeded":
        out.failures[status] += 1
    elif not {"start", "chunk"} <= seen.keys():
        out.failures["no start or chunk event"] += 1
    elif measured:
        t0 = seen["t0"]
        for name, lat in (
            ("headers", out.headers),
            ("start", out.start),
            ("chunk", out.first_chunk),
            ("end", out.end),
        ):
            lat.samples_ms.append((seen[name] - t0) * 1000)
        if {"start_written", "chunk_written", "chunk_wall"} <= seen.keys():
            for lat, since, until in (
                (out.start_written, seen["t0_wall"], seen["start_written"]),
                (out.chunk_written, seen["start_written"], seen["chunk_written"]),
                (out.chunk_delivered, seen["chunk_written"], seen["chunk_wall"]),
            ):
                lat.samples_ms.append((until - since) * 1000)


def dispatch(gateway_url: str, agent: str, runs: int, warmup: int, tick: Tick) -> Dispatch:
    """Sequential streamed POSTs, each to a fresh conversation, on one keep-alive connection."""
    out = Dispatch()
    prefix = f"lat-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        for i in range(warmup + runs):
            status, seen, _ = stream_one(client, agent, f"{prefix}-{i}")
            record(out, status, seen, i >= warmup)
            tick(1)
    return out


# --- 7. history length ----------------------------------------------------------------------------


@dataclass
class History:
    """The same streamed run in a fresh conversation and in one with a long history."""

    messages: int
    empty: Dispatch = field(default_factory=Dispatch)
    long: Dispatch = field(default_factory=Dispatch)


def seeded_messages(n: int) -> list[dict[str, Any]]:
    """``n`` short messages, user and assistant in turn (about 15 tokens each)."""
    return [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"seeded message {i} of the bench's long conversation, a few words",
            "run_id": f"seed-{i // 2}",
        }
        for i in range(n)
    ]


def history(
    gateway_url: str, redis_url: str, agent: str, messages: int, runs: int, warmup: int,
    tick: Tick,
) -> History:  # fmt: skip
    """Streamed POSTs alternating between a fresh conversation each time and one conversation
    seeded with ``messages`` messages (``lua/seed.lua``, as the OpenAI-compatible endpoint
    gives a conversation its prior messages), so both see the same load on the machine."""
    from walrus_tasks.conversations import seed

    out = History(messages)
    prefix = f"hist-{uuid.uuid4().hex[:8]}"
    long_sender = f"{prefix}-long"
    r = redis.Redis.from_url(redis_url, decode_responses=True, client_name=cost.OWN_NAME)
    try:
        if not seed(r, agent, long_sender, seeded_messages(messages)):
            raise RuntimeError(f"conversation {agent}/{long_sender} is not new")
        with httpx.Client(base_url=gateway_url, timeout=30) as client:
            for i in range(warmup + runs):
                for into, sender in ((out.empty, f"{prefix}-{i}"), (out.long, long_sender)):
                    status, seen, run_id = stream_one(client, agent, sender)
                    record(into, status, seen, i >= warmup)
                    started, ended = r.hmget(keys.run(run_id), "started_at", "finished_at")
                    if i >= warmup and status == "succeeded" and started and ended:
                        into.worker.samples_ms.append(float(int(ended) - int(started)))
                tick(1)
    finally:
        r.close()
    return out
