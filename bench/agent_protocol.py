"""Figure 8: background runs through the Agent Protocol, driven as a LangGraph user would.

The official ``langgraph-sdk`` async client (``get_client``), as tests/test_agent_protocol.py
drives it: ``threads.create``, ``runs.create(..., multitask_strategy="enqueue")`` and
``runs.join``. One coroutine per thread creates its thread, queues its runs one after the
other (so the thread's queue keeps their order) and joins them in that order; all the threads'
coroutines run at once on one client (its own connection pool, as the SDK builds it).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.measure import Tick
from bench.procs import CORES

LANGGRAPH_DEV_RUNS_PER_S = 149.0
"""LangGraph Server (``langgraph dev``, in-memory) on the same load, measured once on the
2-core machine of docs/benchmarks.md (issue 25): the fixed figure the goal is drawn from."""
GOAL_RUNS_PER_S = 225.0
"""Issue 25's goal for this face: 1.5x LangGraph's own server (223.5, as the issue rounds it)."""
WARMUP_RUNS = 5
"""Runs queued and joined on one thread before the timed span (the gateway's first calls)."""

CpuSeconds = Callable[[], dict[str, float]]
"""CPU seconds so far per kind of process (``bench.procs.cpu_seconds``)."""


@dataclass
class AgentProtocol:
    """``runs`` background runs on ``threads`` threads: first ``threads.create`` → last join."""

    runs: int
    threads: int
    elapsed_s: float = math.nan
    created_s: float = math.nan
    """First ``threads.create`` → the last ``runs.create`` answered."""
    created: int = 0
    """Runs the gateway accepted (``runs.create`` answered)."""
    joined: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    """Each run's ``status`` (``runs.get``, read after the timed span)."""
    errors: Counter[str] = field(default_factory=Counter)
    """Calls that raised, by exception name."""
    cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds per kind of process over the timed span."""
    rounds: list[float] = field(default_factory=list)
    """Each round's runs/s, when the figure sums several (:func:`combined`)."""

    @property
    def runs_per_s(self) -> float:
        return self.joined / self.elapsed_s if self.elapsed_s else math.nan

    def all_succeeded(self, runs: int) -> bool:
        """Whether all ``runs`` runs succeeded and no call raised (else no figure to compare)."""
        return not self.errors and self.statuses["success"] == runs

    def cpu_ms_per_run(self, kind: str) -> float:
        return self.cpu_s.get(kind, math.nan) * 1000 / self.joined if self.joined else math.nan

    def ceilings(self) -> dict[str, float]:
        """What the CPU this phase spent a run allows: every process's on this machine's cores,
        and the bench client's alone in its one process (one core, its event loop's)."""
        total = sum(self.cpu_ms_per_run(kind) for kind in self.cpu_s)
        client = self.cpu_ms_per_run("bench client")
        return {
            "cpu_ms_per_run": total,
            "cores": float(CORES),
            "cores_allow_runs_per_s": CORES * 1000 / total if total else math.nan,
            "client_allows_runs_per_s": 1000 / client if client else math.nan,
        }

    def summary(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "threads": self.threads,
            "created": self.created,
            "joined": self.joined,
            "statuses": dict(self.statuses),
            "errors": dict(self.errors),
            "created_s": self.created_s,
            "elapsed_s": self.elapsed_s,
            "runs_per_s": self.runs_per_s,
            "rounds_runs_per_s": self.rounds or [self.runs_per_s],
            "gateway_cpu_ms_per_run": self.cpu_ms_per_run("gateway"),
            "workers_cpu_ms_per_run": self.cpu_ms_per_run("workers"),
            "redis_cpu_ms_per_run": self.cpu_ms_per_run("redis"),
            "client_cpu_ms_per_run": self.cpu_ms_per_run("bench client"),
            **self.ceilings(),
            "langgraph_dev_runs_per_s": LANGGRAPH_DEV_RUNS_PER_S,
            "goal_runs_per_s": GOAL_RUNS_PER_S,
        }


def combined(parts: list[AgentProtocol]) -> AgentProtocol:
    """Rounds of the phase as one figure: runs joined over the time they took, CPU summed."""
    out = AgentProtocol(sum(p.runs for p in parts), parts[0].threads)
    out.elapsed_s = sum(p.elapsed_s for p in parts)
    out.created_s = sum(p.created_s for p in parts)
    out.created = sum(p.created for p in parts)
    out.joined = sum(p.joined for p in parts)
    for p in parts:
        out.statuses.update(p.statuses)
        out.errors.update(p.errors)
        for kind, seconds in p.cpu_s.items():
            out.cpu_s[kind] = out.cpu_s.get(kind, 0.0) + seconds
    out.rounds = [p.runs_per_s for p in parts]
    return out


def run(
    gateway_url: str, assistant: str, runs: int, threads: int, cpu: CpuSeconds, tick: Tick
) -> AgentProtocol:
    """Queue ``runs`` background runs of ``assistant`` over ``threads`` threads, join them all."""
    return asyncio.run(_run(gateway_url, assistant, runs, threads, cpu, tick))


async def _run(
    gateway_url: str, assistant: str, runs: int, threads: int, cpu: CpuSeconds, tick: Tick
) -> AgentProtocol:
    from langgraph_sdk import get_client

    out = AgentProtocol(runs, threads)
    per_thread = [runs // threads + (1 if i < runs % threads else 0) for i in range(threads)]
    done: list[tuple[str, str]] = []
    last_created = [0.0]
    async with get_client(url=gateway_url, api_key=None) as lg:

        async def one_thread(n: int, into: list[tuple[str, str]]) -> int:
            """Create a thread, queue ``n`` runs on it, join them: the runs created."""
            created = 0
            try:
                tid = (await lg.threads.create())["thread_id"]
                queued = []
                for i in range(n):
                    say: dict[str, Any] = {
                        "messages": [{"role": "user", "content": f"message {i}"}]
                    }
                    queued_run = await lg.runs.create(
                        tid, assistant, input=say, multitask_strategy="enqueue"
                    )
                    queued.append(queued_run["run_id"])
                    created += 1
                last_created[0] = max(last_created[0], time.perf_counter())
                for run_id in queued:
                    await lg.runs.join(tid, run_id)
                    into.append((tid, run_id))
                    tick(1)
            except Exception as e:  # counted and printed: a failed call is a failed figure
                out.errors[type(e).__name__] += 1
            return created

        await one_thread(WARMUP_RUNS, [])
        if out.errors:
            return out
        cpu0, t0 = cpu(), time.perf_counter()
        last_created[0] = t0
        out.created = sum(await asyncio.gather(*(one_thread(n, done) for n in per_thread)))
        out.elapsed_s = time.perf_counter() - t0
        out.created_s = last_created[0] - t0
        cpu1 = cpu()
        out.cpu_s = {k: cpu1[k] - cpu0[k] for k in cpu1}
        out.joined = len(done)

        async def status(tid: str, run_id: str) -> None:
            out.statuses[(await lg.runs.get(tid, run_id))["status"]] += 1

        for i in range(0, len(done), threads):
            await asyncio.gather(*(status(t, r) for t, r in done[i : i + threads]))
    return out
