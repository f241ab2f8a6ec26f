"""``python -m bench``'s own logic, without processes: the phase selector and how the strict raw
Celery baseline and the Agent Protocol figure are summed up (docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from bench.__main__ import PHASES, parse_args
from bench.agent_protocol import GOAL_RUNS_PER_S, AgentProtocol
from bench.measure import CeleryRound, CeleryThroughput


def test_only_picks_phases_and_rejects_unknown_ones() -> None:
    assert parse_args([]).only == set(PHASES)
    assert parse_args(["--only", "raw, agent-protocol"]).only == {"raw", "agent-protocol"}
    with pytest.raises(SystemExit):
        parse_args(["--only", "raw,nope"])


def test_raw_baseline_is_the_best_round() -> None:
    raw = CeleryThroughput(tasks=2000, warmup=50)
    raw.rounds = [
        CeleryRound(2000, 1.0, 4.0),
        CeleryRound(2000, 1.0, 3.2),
        CeleryRound(2000, 1.0, 5.0),
    ]
    raw.rounds[1].workers_cpu_s = 6.0
    summary = raw.summary()
    assert summary["tasks_per_s"] == 625.0
    assert summary["elapsed_s"] == 3.2
    assert summary["workers_cpu_ms_per_task"] == 3.0
    assert summary["rounds_tasks_per_s"] == [500.0, 625.0, 400.0]


def test_agent_protocol_counts_joined_runs_and_gateway_cpu_per_run() -> None:
    ap = AgentProtocol(runs=500, threads=50, elapsed_s=4.0, created=500, joined=500)
    ap.cpu_s = {"gateway": 1.5, "workers": 2.0}
    summary = ap.summary()
    assert summary["runs_per_s"] == 125.0
    assert summary["gateway_cpu_ms_per_run"] == 3.0
    assert summary["goal_runs_per_s"] == GOAL_RUNS_PER_S == 225.0
