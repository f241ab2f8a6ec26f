"""``python -m bench``'s own logic, without processes: the phase selector, how the strict raw
Celery baseline, the Agent Protocol figure and its LangGraph dev baseline are summed up, and
how a fan-out stream of each face is judged complete (docs/benchmarks.md)."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from bench import langgraph_dev, measure
from bench.__main__ import PHASES, parse_args
from bench.agent_protocol import GOAL_RUNS_PER_S, AgentProtocol, combined
from bench.measure import CeleryRound, CeleryThroughput, Throughput, Tick
from bench.sse_clients import Outcome, Request, encode
from bench.streamed_runs import Dispatch, record
from bench.streams import FACES, ended, gate_runs
from tests.conftest import redis_db_url
from walrus_tasks import keys
from walrus_tasks.client import parse_sse
from walrus_tasks.redis_server import RedisServer


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


def test_a_langgraph_dev_that_could_not_be_set_up_is_said_and_no_figure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def offline(*_: object) -> None:
        raise RuntimeError("pip install -r requirements/bench-langgraph.txt failed: no network")

    monkeypatch.setattr(langgraph_dev, "venv", offline)
    said: list[str] = []
    why = langgraph_dev.prepare(said.append)
    assert why == "pip install -r requirements/bench-langgraph.txt failed: no network"
    assert "LangGraph dev did not run" in said[0]


def test_rounds_add_up_to_one_figure_and_a_failed_run_gives_langgraph_no_runs_per_s() -> None:
    def part(elapsed: float, joined: int) -> AgentProtocol:
        p = AgentProtocol(runs=500, threads=50, elapsed_s=elapsed, created=500, joined=joined)
        p.cpu_s = {"LangGraph dev": 2.5, "bench client": 1.25}
        p.statuses["success"] = joined
        return p

    lg = combined([part(5.0, 500), part(7.5, 500)])
    assert (lg.runs, lg.joined, lg.elapsed_s, lg.rounds) == (1000, 1000, 12.5, [100.0, 500 / 7.5])
    out = langgraph_dev.summary(lg, "langgraph-api 0.16.7")
    assert out["runs_per_s"] == 80.0
    assert out["server_cpu_ms_per_run"] == 5.0 and out["client_cpu_ms_per_run"] == 2.5
    failed = combined([part(5.0, 500), part(5.0, 499)])
    failed.errors["ReadTimeout"] = 1
    out = langgraph_dev.summary(failed, "langgraph-api 0.16.7")
    assert out["runs_per_s"] != out["runs_per_s"], "NaN: not a figure to compare walrus with"
    assert parse_args([]).ap_rounds == 3


def test_the_fanout_face_is_native_by_default_and_one_of_the_faces() -> None:
    assert parse_args([]).fanout_face == "native"
    assert parse_args(["--fanout-face", "a2a"]).fanout_face == "a2a"
    with pytest.raises(SystemExit):
        parse_args(["--fanout-face", "openai"])
    assert set(FACES) == {"native", "agent-protocol", "responses", "a2a"}


def stream(last: str, events: int = 44, data: str = "{}", done: bool = False) -> Outcome:
    return Outcome(200, 1.0, 2.0, events, last, "", data, done)


def test_a_stream_ended_as_its_face_ends_a_succeeded_run() -> None:
    assert ended("native", stream("end"))
    assert not ended("native", stream("chunk"))
    assert not ended("native", Outcome(200, 1.0, 2.0, 44, "end", "IncompleteReadError"))
    assert not ended("native", Outcome(404, 1.0, 2.0, 0, "", ""))
    assert ended("agent-protocol", stream("values", 43, '{"messages": []}'))
    assert not ended("agent-protocol", stream("values", 43, '{"__interrupt__": [{}]}'))
    assert not ended("agent-protocol", stream("error", 44))
    completed = '{"type":"response.completed","sequence_number":47}'
    assert ended("responses", stream("response.completed", 48, completed, done=True))
    assert not ended("responses", stream("response.completed", 48, completed))  # no [DONE]
    assert not ended("responses", stream("response.completed", 47, completed, done=True))
    status = '{"jsonrpc":"2.0","id":1,"result":{"statusUpdate":{"status":{"state":"%s"}}}}'
    assert ended("a2a", stream("message", 44, status % "TASK_STATE_COMPLETED"))
    assert not ended("a2a", stream("message", 44, status % "TASK_STATE_CANCELED"))
    assert not ended("a2a", stream("message", 1, '{"jsonrpc":"2.0","id":1,"error":{}}'))


def test_gates_outlast_twice_the_connecting_and_a_client_request_is_bare_http() -> None:
    assert gate_runs(20, 2000) == gate_runs(4000, 2000) == 1 and gate_runs(10_000, 2000) == 2
    assert encode("h", 1, Request("GET", "/x")) == (
        b"GET /x HTTP/1.1\r\nHost: h:1\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
    )
    posted = encode("h", 1, Request("POST", "/a", (("A2A-Version", "1.0"),), b"{}"))
    assert posted.endswith(b"A2A-Version: 1.0\r\nContent-Length: 2\r\n\r\n{}")


def test_a_dispatch_run_is_also_timed_by_its_entries_clock() -> None:
    """Figure 2's breakdown: POST → ``start`` written, → first ``chunk`` written, → parsed."""
    body = [
        ": keep-alive", "",
        "id: 1700000000005-0", "event: start", 'data: {"type": "start"}', "",
        'data: {"type": "no id"}', "",
        "id: 1700000000007-1", "event: chunk", 'data: {"type": "chunk"}', "",
    ]  # fmt: skip
    assert [(e.id, e.type) for e in parse_sse(iter(body))] == [
        ("1700000000005-0", "start"), ("", "no id"), ("1700000000007-1", "chunk"),
    ]  # fmt: skip
    seen = {"t0": 10.0, "headers": 10.001, "start": 10.004, "chunk": 10.006, "end": 10.008,
            "t0_wall": 1700000000.001, "start_written": 1700000000.005,
            "chunk_written": 1700000000.007, "chunk_wall": 1700000000.0085}  # fmt: skip
    out = Dispatch()
    record(out, "succeeded", seen, measured=True)
    got = [lat.samples_ms for lat in (out.start_written, out.chunk_written, out.chunk_delivered)]
    assert [[round(x, 3) for x in s] for s in got] == [[4.0], [2.0], [1.5]]
    record(out, "succeeded", {k: v for k, v in seen.items() if "wall" not in k}, measured=True)
    assert len(out.start_written.samples_ms) == 1  # no ids: the breakdown is left out


def test_the_timed_throughput_round_runs_with_the_slow_log_off_and_the_counted_one_with_it_on(
    redis_server: RedisServer,
) -> None:
    """As the raw baseline's: logging every command costs Redis time, so only the extra round
    that counts the cost has it (docs/benchmarks.md, figure 3's cost per run)."""
    url = redis_db_url(redis_server)
    r = redis.Redis.from_url(url, decode_responses=True)
    logging_at_submit: list[str] = []

    def submitter(senders: list[str], tick: Tick, out: Throughput) -> list[str]:
        logging_at_submit.append(r.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"])
        run_ids = [uuid.uuid4().hex for _ in senders]
        now = int(time.time() * 1000)
        for run_id in run_ids:  # each run accepted and ended at once
            r.hset(keys.run(run_id), mapping={
                "status": "succeeded", "created_at": now, "finished_at": now + 1,
            })  # fmt: skip
        tick(len(senders))
        return run_ids

    before = r.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
    assert before != "0"
    timed = measure.throughput(submitter, url, 20, 4, 10, lambda n: None, lambda n: None)
    measure.throughput_cost(submitter, url, 10, lambda: 1.0, timed)
    assert logging_at_submit == [before, "0"]
    assert r.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"] == before
    assert timed.succeeded == 20 and timed.logged_runs == 20
    assert timed.log is not None and timed.redis_before is not None
    assert timed.redis_after is not None and timed.logged_workers_cpu_s == 0.0
