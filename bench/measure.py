"""The measurements: Celery no-op baselines (round trip, throughput) and walrus's throughput.
The streamed runs (dispatch latency, history length) are ``bench.streamed_runs``'s."""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from bench import cost
from walrus_tasks import keys

# Nothing here imports walrus_tasks.celery_app (or submit) at module level: that import builds
# the Celery app from WALRUS_REDIS_URL, only known once the bench Redis runs (Env.celery_app).

Tick = Callable[[int], None]
"""Advance the progress bar by n."""

TERMINAL = ("succeeded", "failed", "cancelled")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation between closest ranks."""
    s = sorted(values)
    if not s:
        return math.nan
    pos = (len(s) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass
class Latencies:
    """Latency samples in milliseconds."""

    samples_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        s = self.samples_ms
        return {
            "n": len(s),
            "p50_ms": percentile(s, 50),
            "p90_ms": percentile(s, 90),
            "p99_ms": percentile(s, 99),
            "mean_ms": sum(s) / len(s) if s else math.nan,
            "min_ms": min(s, default=math.nan),
            "max_ms": max(s, default=math.nan),
        }


# --- 1. baseline ---------------------------------------------------------------------------------


def baseline(app: Celery, runs: int, warmup: int, tick: Tick) -> Latencies:
    """``app.send_task(PING).get()`` round trips, one after the other."""
    from walrus_tasks.celery_app import PING

    out = Latencies()
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        result = app.send_task(PING)
        reply = result.get(timeout=30)
        dt = (time.perf_counter() - t0) * 1000
        result.forget()
        if reply != "pong":
            raise RuntimeError(f"ping returned {reply!r}")
        if i >= warmup:
            out.samples_ms.append(dt)
        tick(1)
    return out


@dataclass
class CeleryRound:
    """One round of the raw baseline: ``tasks`` no-op tasks sent at once, results awaited."""

    tasks: int
    send_s: float = math.nan
    """First ``send_task`` → last one returned."""
    elapsed_s: float = math.nan
    """First ``send_task`` → every result received."""
    workers_cpu_s: float = math.nan
    """The workers' CPU seconds over the round (parents and pools)."""

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.elapsed_s if self.elapsed_s else math.nan


@dataclass
class CeleryThroughput:
    """Raw Celery, measured strictly: ``warmup`` round trips, then ``rounds`` timed rounds of
    ``tasks`` no-op tasks sent at once (the best one is the figure), then one untimed round
    with every command logged, for the cost counts."""

    tasks: int
    warmup: int
    rounds: list[CeleryRound] = field(default_factory=list)
    redis_before: cost.Snapshot | None = None
    redis_after: cost.Snapshot | None = None
    """Redis's command counters around the logged round."""
    log: tuple[Counter[str], Counter[str], bool] | None = None
    logged: CeleryRound | None = None
    """The untimed round the cost counts come from (the slow log on)."""

    @property
    def best(self) -> CeleryRound:
        return max(self.rounds, key=lambda r: r.tasks_per_s)

    @property
    def tasks_per_s(self) -> float:
        return self.best.tasks_per_s if self.rounds else math.nan

    def summary(self) -> dict[str, Any]:
        best = self.best if self.rounds else CeleryRound(self.tasks)
        return {
            "tasks": self.tasks,
            "warmup_round_trips": self.warmup,
            "rounds_tasks_per_s": [r.tasks_per_s for r in self.rounds],
            "send_s": best.send_s,
            "elapsed_s": best.elapsed_s,
            "tasks_per_s": self.tasks_per_s,
            "workers_cpu_ms_per_task": best.workers_cpu_s * 1000 / self.tasks,
        }


def celery_round(app: Celery, tasks: int, workers_cpu: Callable[[], float]) -> CeleryRound:
    """``tasks`` x ``app.send_task(PING)`` from this thread, then all results awaited
    (``ResultSet.join_native``: the result backend's pub/sub, as ``.get()`` uses)."""
    from celery.result import ResultSet

    from walrus_tasks.celery_app import PING

    out = CeleryRound(tasks)
    cpu0 = workers_cpu()
    t0 = time.perf_counter()
    results = [app.send_task(PING) for _ in range(tasks)]
    out.send_s = time.perf_counter() - t0
    replies = ResultSet(results).join_native(timeout=120)
    out.elapsed_s = time.perf_counter() - t0
    out.workers_cpu_s = workers_cpu() - cpu0
    if any(reply != "pong" for reply in replies):
        raise RuntimeError(f"ping returned {set(replies) - {'pong'}}")
    return out


def celery_throughput(
    app: Celery,
    redis_url: str,
    tasks: int,
    rounds: int,
    warmup: int,
    workers_cpu: Callable[[], float],
    tick: Tick,
) -> CeleryThroughput:
    """The raw Celery baseline, strictly: ``warmup`` ``send_task(PING).get()`` round trips,
    ``rounds`` timed rounds (``celery_round``), the best kept; then one more round with the
    slow log on (it costs Redis time, so none of the timed rounds has it) for the counts."""
    from walrus_tasks.celery_app import PING

    out = CeleryThroughput(tasks, warmup)
    for _ in range(warmup):
        result = app.send_task(PING)
        result.get(timeout=30)
        result.forget()
    tick(1)
    for _ in range(rounds):
        out.rounds.append(celery_round(app, tasks, workers_cpu))
        tick(1)
    r = redis.Redis.from_url(redis_url, decode_responses=True, client_name=cost.OWN_NAME)
    try:
        saved = cost.start_log(r)
        out.redis_before = cost.snapshot(r)
        out.logged = celery_round(app, tasks, workers_cpu)
        out.redis_after = cost.snapshot(r)
        out.log = cost.read_log(r, saved)
        tick(1)
    finally:
        r.close()
    return out


# --- 3. throughput --------------------------------------------------------------------------------


@dataclass
class Throughput:
    """Many messages over many conversations, submitted at once."""

    messages: int
    conversations: int
    submitted: int = 0
    submit_s: float = math.nan
    """First POST sent → last 202 received."""
    elapsed_s: float = math.nan
    """First POST sent → last run's ``finished_at``."""
    statuses: Counter[str] = field(default_factory=Counter)
    http_errors: Counter[str] = field(default_factory=Counter)
    """Messages not accepted: HTTP status or exception name -> count."""
    run_latency: Latencies = field(default_factory=Latencies)
    """Per run: ``created_at`` (accepted) → ``finished_at``, server clocks."""
    timed_out: bool = False
    redis_before: cost.Snapshot | None = None
    redis_after: cost.Snapshot | None = None
    """Redis's command counters at the first submit of the logged round (``throughput_cost``)
    and once its every run was seen terminal."""
    log: tuple[Counter[str], Counter[str], bool] | None = None
    """What clients sent meanwhile (``cost.read_log``)."""
    own_commands: Counter[str] = field(default_factory=Counter)
    """The commands of the bench's own polling between the two snapshots (left out)."""
    logged_runs: int = 0
    """Runs of the logged round that succeeded: the unit of its counts."""
    logged_workers_cpu_s: float = math.nan
    """The workers' CPU seconds over the logged round."""

    @property
    def succeeded(self) -> int:
        return self.statuses["succeeded"]

    @property
    def runs_per_s(self) -> float:
        return self.succeeded / self.elapsed_s if self.elapsed_s else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "conversations": self.conversations,
            "submitted": self.submitted,
            "succeeded": self.succeeded,
            "statuses": dict(self.statuses),
            "http_errors": dict(self.http_errors),
            "timed_out": self.timed_out,
            "submit_s": self.submit_s,
            "submit_per_s": self.submitted / self.submit_s if self.submit_s else math.nan,
            "elapsed_s": self.elapsed_s,
            "runs_per_s": self.runs_per_s,
            "run_latency": self.run_latency.summary(),
        }


Submitter = Callable[[list[str], Tick, Throughput], list[str]]
"""Send one message to each of the given senders; the accepted run ids."""


def via_gateway(gateway_url: str, agent: str, in_flight: int) -> Submitter:
    """POST through the gateway, ``in_flight`` requests at a time (asyncio HTTP/1.1)."""

    def run(senders: list[str], tick: Tick, out: Throughput) -> list[str]:
        return asyncio.run(_post_all(gateway_url, agent, senders, in_flight, tick, out))

    return run


def via_submit(agent: str, in_flight: int) -> Submitter:
    """Call ``walrus_tasks.submit.submit()`` from ``in_flight`` threads (no HTTP, no gateway)."""
    from walrus_tasks.connection import get_redis
    from walrus_tasks.submit import submit

    def run(senders: list[str], tick: Tick, out: Throughput) -> list[str]:
        r = get_redis()

        def one(item: tuple[int, str]) -> str | None:
            i, sender = item
            try:
                return submit(r, agent, sender, f"message {i}").run_id
            except Exception as e:
                out.http_errors[type(e).__name__] += 1
                return None
            finally:
                tick(1)

        with ThreadPoolExecutor(in_flight) as pool:
            return [rid for rid in pool.map(one, enumerate(senders)) if rid]

    return run


async def _post_all(
    gateway_url: str, agent: str, senders: list[str], in_flight: int, tick: Tick, out: Throughput
) -> list[str]:
    """POST every message over ``in_flight`` keep-alive connections, each sending its next
    message as soon as the last is answered.

    Bare HTTP/1.1 on asyncio streams (``Content-Length`` bodies both ways), not httpx: on a
    2-core machine an httpx client took more CPU per POST than the gateway answering it, and
    the figure measured the client. Failures are counted by kind, as httpx's were.
    """
    host, port = gateway_url.removeprefix("http://").rsplit(":", 1)
    queue = list(enumerate(senders))[::-1]
    run_ids: list[str] = []
    path = f"/v1/agents/{agent}/messages"

    async def connection() -> None:
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while queue:
            i, sender = queue.pop()
            body = json.dumps({"content": f"message {i}", "sender": sender}).encode()
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(
                    f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                    .encode() + body
                )  # fmt: skip
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = next(
                    int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                    if line.startswith(b"content-length:")
                )  # fmt: skip
                answer = await reader.readexactly(length)
                if b"connection: close" in head.lower():
                    writer.close()
                    reader = writer = None
            except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration) as e:
                out.http_errors[type(e).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
            else:
                if status == 202:
                    run_ids.append(json.loads(answer)["run_id"])
                else:
                    out.http_errors[str(status)] += 1
            tick(1)
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(in_flight)))
    return run_ids


def throughput(
    submitter: Submitter,
    redis_url: str,
    messages: int,
    conversations: int,
    timeout: float,
    tick_submit: Tick,
    tick_done: Tick,
) -> Throughput:
    """Send ``messages`` messages (round-robin over ``conversations``) concurrently, then wait
    for every run to reach a terminal status in its Redis hash ``walrus:run:<id>``.

    Timed with Redis's slow log off, as the raw baseline's timed rounds are (logging every
    command costs Redis time); the cost counts come from one more round (``throughput_cost``).
    """
    out = Throughput(messages=messages, conversations=conversations)
    r = redis.Redis.from_url(redis_url, decode_responses=True, client_name=cost.OWN_NAME)
    try:
        t0_wall = time.time()
        t0 = time.perf_counter()
        run_ids = submitter(_senders(messages, conversations), tick_submit, out)
        out.submit_s = time.perf_counter() - t0
        out.submitted = len(run_ids)
        _wait_terminal(r, run_ids, timeout, tick_done, out)
        detected = time.perf_counter() - t0

        pipe = r.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hmget(keys.run(run_id), "status", "created_at", "finished_at")
        finished: list[int] = []
        for status, created, ended in pipe.execute():
            out.statuses[status or "missing"] += 1
            if ended:
                finished.append(int(ended))
                if created:
                    out.run_latency.samples_ms.append(float(int(ended) - int(created)))
    finally:
        r.close()
    # The end is the last run's own finished_at (ms, written by the worker on this machine);
    # the poll that noticed it is up to one poll interval later.
    out.elapsed_s = (max(finished) / 1000 - t0_wall) if finished else detected
    return out


def throughput_cost(
    submitter: Submitter,
    redis_url: str,
    timeout: float,
    workers_cpu: Callable[[], float],
    out: Throughput,
) -> None:
    """One more round of ``out``'s size with the slow log on, for its cost counts.

    As the raw baseline's ``logged`` round: Redis's command counters, what clients sent and the
    workers' CPU over this round, counted per run that succeeded in it (``out.logged_runs``).
    """
    logged = Throughput(messages=out.messages, conversations=out.conversations)
    r = redis.Redis.from_url(redis_url, decode_responses=True, client_name=cost.OWN_NAME)
    try:
        saved = cost.start_log(r)
        out.redis_before = cost.snapshot(r)
        cpu0 = workers_cpu()
        run_ids = submitter(_senders(out.messages, out.conversations), _no_tick, logged)
        _wait_terminal(r, run_ids, timeout, _no_tick, logged)
        out.logged_workers_cpu_s = workers_cpu() - cpu0
        out.redis_after = cost.snapshot(r)
        out.log = cost.read_log(r, saved)
        out.own_commands = logged.own_commands
        pipe = r.pipeline(transaction=False)
        for run_id in run_ids:
            pipe.hget(keys.run(run_id), "status")
        out.logged_runs = sum(status == "succeeded" for status in pipe.execute())
    finally:
        r.close()


def _no_tick(n: int) -> None:
    """No progress to show (the logged round)."""


def _senders(messages: int, conversations: int) -> list[str]:
    """The sender of each message: ``conversations`` fresh conversations, round-robin."""
    prefix = f"tp-{uuid.uuid4().hex[:8]}"
    return [f"{prefix}-{i % conversations}" for i in range(messages)]


def _wait_terminal(
    r: redis.Redis, run_ids: list[str], timeout: float, tick: Tick, out: Throughput
) -> None:
    """Poll until every run's status is terminal (or ``timeout``: ``out.timed_out``)."""
    pending = list(run_ids)
    deadline = time.monotonic() + timeout
    while pending:
        pipe = r.pipeline(transaction=False)
        for run_id in pending:
            pipe.hget(keys.run(run_id), "status")
        out.own_commands["HGET"] += len(pending)
        statuses = pipe.execute()
        still = [rid for rid, st in zip(pending, statuses, strict=True) if st not in TERMINAL]
        tick(len(pending) - len(still))
        pending = still
        if pending and time.monotonic() > deadline:
            out.timed_out = True
            break
        if pending:
            time.sleep(0.05)
