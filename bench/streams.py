"""Stream figures: N concurrent SSE clients of one gateway (fan-out), and one long stream.

Fan-out: ``n`` plain SSE clients (:mod:`bench.sse_clients`, spread over a few processes, opened
at a bounded rate) follow ``runs`` runs of the ``fanout`` agent (a paced reply) through one
face of the gateway (``face``, :data:`FACES`), whose runs are created through that face too,
so that what the clients send is valid there:

- ``native``: runs POSTed to ``/v1/agents/fanout/messages``; a client sends ``GET
  /v1/runs/{run_id}/events``;
- ``agent-protocol``: a thread (``POST /threads``), its runs ``POST /threads/{thread_id}/runs``
  with ``multitask_strategy: "enqueue"``; a client sends ``GET
  /threads/{thread_id}/runs/{run_id}/stream?stream_mode=values&stream_mode=messages-tuple``
  (the modes LangGraph chat UIs ask for);
- ``responses``: background responses (``POST /v1/responses``, ``background`` and ``store``,
  ``conversation`` naming the walrus sender); a client sends ``GET
  /v1/responses/{id}?stream=true``;
- ``a2a``: tasks sent with the JSON-RPC ``SendMessage`` (``returnImmediately``, the
  ``contextId`` naming the sender) to ``/a2a/fanout``; a client POSTs the JSON-RPC
  ``SubscribeToTask`` there (``A2A-Version: 1.0``), what the ``a2a-sdk`` client does by
  default.

Each followed run is queued in its conversation (its thread) behind :func:`gate_runs` runs of
the same agent, created the same way, which hold it while the clients connect (a gate is a run
of the same agent, since a conversation is one agent's; several, so that together they outlast
the connecting). Once every client has its response headers the bench cancels the gates, the
last queued first (``POST /v1/runs/{run_id}/cancel``; on the Agent Protocol face ``POST
/threads/{thread_id}/runs/{run_id}/cancel``): so every stream is open before its run starts and
reads it live (the report says how many were open at once, and how many runs started before
the release: ``started_at`` of the run record against the release time).

A stream is *complete* when it ended as a stream of a succeeded run of its face ends, and got
every event:

- ``native``: every entry of its run's Redis stream (``XLEN``), the last one ``end``;
- ``agent-protocol``: its last event ``values`` without ``__interrupt__`` (the thread's state
  at the run's end: a cancelled or failed run ends with ``error`` after it, one that asks with
  ``__interrupt__`` in it), and as many events as the most of the run's clients that ended so
  got, which is not zero;
- ``responses``: its last event ``response.completed`` then ``data: [DONE]``, its events every
  ``sequence_number`` from 0 to the last one's, and as many as the most of the run's clients
  that ended so got;
- ``a2a``: its last event the status update ``TASK_STATE_COMPLETED``, and as many events as the
  most of the run's clients that ended so got, which is not zero.

(A subscription that starts late gets fewer A2A events, a task as it is then and the updates
after; the other faces replay the run from its start.) Measured on the gateway process from
/proc: RSS (``VmRSS``) before the clients connect, once they all are (their runs not started:
what an idle stream holds) and at its highest while they are connected,
CPU (utime + stime) from the first connect to the last stream's end, and the Redis connections
(``INFO clients`` of the bench Redis, every process) before and while.

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
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from bench import sse_clients
from walrus_tasks import heap, keys

FANOUT_AGENT, STREAM_AGENT = "fanout", "stream20k"
FANOUT_WORDS, FANOUT_DELAY_MS = 40, 300
FANOUT_RUN_S = (FANOUT_WORDS - 1) * FANOUT_DELAY_MS / 1000
"""How long one run of the ``fanout`` agent takes (its chunks' pauses)."""
GATE_MARGIN_S = 5.0
"""How much longer than three times the clients' nominal connecting time (``n / rate``; 10 000
streams took 15 s at 2 000/s) the gate runs ahead of each followed run last, together
(:func:`gate_runs`)."""
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


@dataclass
class Followed:
    """A run the clients follow: its id, what each of its clients sends, and its gate runs."""

    run_id: str
    request: sse_clients.Request
    gates: list[str]
    """The runs ahead of it in its conversation (or thread), in the order they were queued."""
    thread_id: str = ""
    """Its thread (the Agent Protocol face)."""


@dataclass(frozen=True)
class Face:
    """How the fan-out creates, follows and releases its runs through one face of the gateway.

    ``create(client, key, gates)`` queues ``gates`` gate runs, then the followed run, in one
    conversation (or thread) named after ``key``; ``release(client, followed)`` cancels the
    gate runs, the last queued first, so the followed run starts next; ``final`` is the type of
    the last event a stream of a succeeded run ends with; ``follow`` says what a client sends.
    """

    name: str
    create: Callable[[httpx.Client, str, int], Followed]
    release: Callable[[httpx.Client, Followed], None]
    final: str
    follow: str


def _cancel_runs(c: httpx.Client, f: Followed) -> None:
    for run_id in reversed(f.gates):  # the queued gates first, so none of them starts
        c.post(f"/v1/runs/{run_id}/cancel").raise_for_status()


def _native(c: httpx.Client, key: str, gates: int) -> Followed:
    ids = []
    for _ in range(gates + 1):  # the gates, then the followed run, in conversation (fanout, key)
        resp = c.post(f"/v1/agents/{FANOUT_AGENT}/messages", json={"content": "go", "sender": key})
        ids.append(str(resp.raise_for_status().json()["run_id"]))
    return Followed(ids[-1], sse_clients.Request("GET", f"/v1/runs/{ids[-1]}/events"), ids[:-1])


AP_MODES = ("values", "messages-tuple")
"""The stream modes an Agent Protocol client follows (those LangGraph chat UIs ask for)."""


def _agent_protocol(c: httpx.Client, key: str, gates: int) -> Followed:
    thread = c.post("/threads", json={"metadata": {"bench": key}}).raise_for_status().json()
    tid = str(thread["thread_id"])
    body = {"assistant_id": FANOUT_AGENT, "multitask_strategy": "enqueue",
            "input": {"messages": [{"role": "user", "content": "go"}]}}  # fmt: skip
    ids = [
        str(c.post(f"/threads/{tid}/runs", json=body).raise_for_status().json()["run_id"])
        for _ in range(gates + 1)
    ]
    modes = "&".join(f"stream_mode={m}" for m in AP_MODES)
    path = f"/threads/{tid}/runs/{ids[-1]}/stream?{modes}"
    return Followed(ids[-1], sse_clients.Request("GET", path), ids[:-1], tid)


def _agent_protocol_release(c: httpx.Client, f: Followed) -> None:
    for run_id in reversed(f.gates):
        c.post(f"/threads/{f.thread_id}/runs/{run_id}/cancel").raise_for_status()


def _responses(c: httpx.Client, key: str, gates: int) -> Followed:
    body = {"model": FANOUT_AGENT, "input": "go", "conversation": key, "background": True,
            "store": True}  # fmt: skip
    ids = [
        str(c.post("/v1/responses", json=body).raise_for_status().json()["id"])
        for _ in range(gates + 1)
    ]
    run_ids = [i.removeprefix("resp_") for i in ids]  # resp_<run_id>: its first response
    request = sse_clients.Request("GET", f"/v1/responses/{ids[-1]}?stream=true")
    return Followed(run_ids[-1], request, run_ids[:-1])


A2A_HEADERS = (("A2A-Version", "1.0"), ("Content-Type", "application/json"))


def _a2a_call(c: httpx.Client, method: str, params: dict[str, Any]) -> dict[str, Any]:
    """One A2A JSON-RPC call to the fan-out agent: its result."""
    call = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    answer = c.post(f"/a2a/{FANOUT_AGENT}", json=call, headers=dict(A2A_HEADERS))
    body = answer.raise_for_status().json()
    if "error" in body:
        raise RuntimeError(f"A2A {method}: {body['error']}")
    return dict(body["result"])


def _a2a(c: httpx.Client, key: str, gates: int) -> Followed:
    ids = []
    for _ in range(gates + 1):  # the task id is the run id; the context id, the sender
        message = {"messageId": uuid.uuid4().hex, "role": "ROLE_USER", "contextId": key,
                   "parts": [{"text": "go"}]}  # fmt: skip
        params = {"message": message, "configuration": {"returnImmediately": True}}
        ids.append(str(_a2a_call(c, "SendMessage", params)["task"]["id"]))
    call = {"jsonrpc": "2.0", "id": 1, "method": "SubscribeToTask", "params": {"id": ids[-1]}}
    body = json.dumps(call).encode()
    request = sse_clients.Request("POST", f"/a2a/{FANOUT_AGENT}", A2A_HEADERS, body)
    return Followed(ids[-1], request, ids[:-1])


A2A_FINAL = "statusUpdate TASK_STATE_COMPLETED"


def a2a_event(data: str) -> str:
    """The type of an A2A stream event (JSON-RPC): ``task``, ``artifactUpdate``,
    ``statusUpdate <state>``, ``error``; ``?`` for data that is none of these."""
    try:
        answer = json.loads(data)
    except ValueError:
        return "?"
    if not isinstance(answer, dict):
        return "?"
    if "error" in answer:
        return "error"
    result = answer.get("result")
    if not isinstance(result, dict) or not result:
        return "?"
    kind = next(iter(result))
    if kind == "statusUpdate":
        return f"{kind} {result[kind].get('status', {}).get('state', '?')}"
    return str(kind)


AP_FOLLOW = "GET /threads/{thread_id}/runs/{run_id}/stream?" + "&".join(
    f"stream_mode={m}" for m in AP_MODES
)
A2A_FOLLOW = f"POST /a2a/{FANOUT_AGENT} (JSON-RPC SubscribeToTask, A2A-Version: 1.0)"
FACES: dict[str, Face] = {
    face.name: face
    for face in (
        Face("native", _native, _cancel_runs, "end", "GET /v1/runs/{run_id}/events"),
        Face("agent-protocol", _agent_protocol, _agent_protocol_release, "values", AP_FOLLOW),
        Face("responses", _responses, _cancel_runs, "response.completed",
             "GET /v1/responses/{response_id}?stream=true"),
        Face("a2a", _a2a, _cancel_runs, A2A_FINAL, A2A_FOLLOW),
    )
}  # fmt: skip
"""The faces whose clients can follow a run that exists already with one request."""


def last_event(face: str, o: sse_clients.Outcome) -> str:
    """The type of the last event of stream ``o`` as ``face`` names it (A2A: from its data)."""
    return a2a_event(o.data) if face == "a2a" and o.events else o.last


def ended(face: str, o: sse_clients.Outcome) -> bool:
    """Stream ``o`` ended as a stream of a succeeded run of ``face`` ends.

    The Agent Protocol's last ``values`` is also that of a run that asks (with
    ``__interrupt__``). The Responses face numbers its events from 0 and sends ``data: [DONE]``
    last: its events are then every number up to the last one's.
    """
    if o.status != 200 or o.error or last_event(face, o) != FACES[face].final:
        return False
    if face == "agent-protocol":
        return '"__interrupt__"' not in o.data
    if face == "responses":
        try:
            last_number = json.loads(o.data)["sequence_number"]
        except (ValueError, KeyError, TypeError):
            return False
        return o.done and last_number == o.events - 1
    return True


def gate_runs(n: int, rate: float) -> int:
    """Gate runs ahead of each followed run: enough to hold it while ``n`` clients connect
    at ``rate`` per second (three times ``n / rate``, plus ``GATE_MARGIN_S``): one up to 4 000
    clients at 2 000/s, two at 10 000. A gate cancelled before it started is still taken by a
    worker, to end it: the fewer, the less the release does."""
    return max(1, math.ceil((3 * n / rate + GATE_MARGIN_S) / FANOUT_RUN_S))


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
    procs: int = 0, rate: float = 2000.0, face: str = "native", heap_dir: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``n`` concurrent SSE clients of ``face`` on ``runs`` runs of one gateway (see the module
    docstring).

    The clients live in ``procs`` processes (0: one per 2 500 clients), which open ``rate``
    streams per second between them. With ``heap_dir`` (the gateway's ``WALRUS_HEAP_DIR``) the
    gateway starts tracing its heap just before they connect and writes a snapshot once they
    all are (``walrus_tasks.heap``), summed up per stream in the result's ``heap``.
    """
    spec = FACES[face]
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
        stamp = time.time_ns()
        followed = [spec.create(http, f"fan-{i}-{stamp}", gates) for i in range(runs)]
        run_ids = [f.run_id for f in followed]
        rss0, conns0, cpu0 = rss_kb(gateway_pid), redis_clients(redis_url), cpu_s(gateway_pid)
        if heap_dir:
            os.kill(gateway_pid, heap.SIGNAL)  # start tracing: what the streams allocate
            time.sleep(0.5)
        start_at = time.monotonic() + 0.1
        for _, conn, mine in children:
            requests = [followed[i % runs].request for i in mine]
            conn.send((host, port, requests, rate / procs, start_at))
        peak_rss, peak_conns = rss0, conns0
        connected: set[int] = set()
        released_s, released_ms, connected_rss = None, 0, rss0
        heap_file: Path | None = None
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
                connected_rss = rss_kb(gateway_pid)
                if heap_dir:
                    heap_file = heap_snapshot(gateway_pid, Path(heap_dir))
                released_ms = time.time_ns() // 1_000_000
                for f in followed:  # every client is connected: let the runs start
                    spec.release(http, f)
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
    try:  # the events each run has, when and how it ran
        xlen = {run_id: int(r.xlen(keys.run_part(run_id, "events"))) for run_id in run_ids}
        record = {run_id: r.hmget(keys.run(run_id), "status", "started_at") for run_id in run_ids}
    finally:
        r.close()
    index = {i: run_ids[i % runs] for i in range(n)}
    order = [i for _, _, mine in children for i in mine]
    done = [ended(face, o) for o in outcomes]
    if face == "native":  # every entry of the run's stream
        expected = xlen
    else:  # what most of the run's clients that ended as its face ends got
        counts: dict[str, Counter[int]] = {run_id: Counter() for run_id in run_ids}
        for i, o, e in zip(order, outcomes, done, strict=True):
            if e:
                counts[index[i]][o.events] += 1
        expected = {k: (c.most_common(1)[0][0] if c else 0) for k, c in counts.items()}
    complete = sum(
        e and o.events == expected[index[i]] > 0
        for i, o, e in zip(order, outcomes, done, strict=True)
    )
    seen: dict[str, set[int]] = {run_id: set() for run_id in run_ids}
    for i, o in zip(order, outcomes, strict=True):
        seen[index[i]].add(o.events)
    delivered = sum(o.events for o in outcomes)
    headers = [o.headers_at - start_at for o in outcomes if o.headers_at]
    ends = [o.ended_at - start_at for o, e in zip(outcomes, done, strict=True) if e]
    statuses = Counter(str(o.status) for o in outcomes if o.status != 200)
    statuses.update(o.error for o in outcomes if o.error)
    statuses.update(
        f"last event {last_event(face, o)!r}"
        for o, e in zip(outcomes, done, strict=True)
        if o.status == 200 and not o.error and not e
    )
    early = sum(bool(s) and int(s) < released_ms for _, s in record.values())
    return {
        "face": face,
        "follow": spec.follow,
        "final_event": spec.final,
        "clients": n,
        "runs": runs,
        "gate_runs_per_run": gates,
        "client_processes": procs,
        "connect_rate_per_s": rate,
        "completed_streams": sum(done),
        "complete_streams": complete,
        "failures": dict(statuses),
        "events_per_run": sorted(set(expected.values())),
        "events_seen_per_run": {k: sorted(v) for k, v in seen.items()},
        "run_stream_entries": sorted(set(xlen.values())),
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
        "rss_connected_kb": connected_rss,
        "rss_growth_per_idle_stream_kb": (connected_rss - rss0) / n,
        "redis_clients_before": conns0,
        "redis_clients_peak": peak_conns,
        "gateway_cpu_ms": cpu_ms,
        "gateway_cpu_ms_per_1000_events": cpu_ms * 1000 / delivered if delivered else None,
        "client_cpu_s": client_cpu,
        "client_busiest_share": max(client_cpu) / wall if wall else None,
        "gateway_open_files_limit": open_files_limit(gateway_pid),
        "heap": heap.top(heap_file, n) if heap_file else None,
    }


HEAP_WAIT_S = 300.0
"""How long the fan-out waits for the gateway's heap snapshot (10 000 streams take a while)."""


def heap_snapshot(gateway_pid: int, directory: Path) -> Path:
    """Ask the gateway for its heap snapshot (``walrus_tasks.heap``) and wait for the file."""
    path = directory / f"gateway-{gateway_pid}-1.heap"
    os.kill(gateway_pid, heap.SIGNAL)
    deadline = time.monotonic() + HEAP_WAIT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the gateway wrote no heap snapshot {path} in {HEAP_WAIT_S:g} s")
        time.sleep(0.2)
    return path


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
