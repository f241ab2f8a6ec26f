"""The checks, once the faults are over: every accepted message ran once, in order, and was
answered; every run ended once; nothing is left behind in Redis. Every wait here is bounded."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from bench.chaos.load import Load, Message
from tests.cluster import parse_sse
from walrus_tasks import indexes, keys

TERMINAL = ("succeeded", "failed", "cancelled")
UNACKED = "unacked"
"""Kombu's hash of delivered, unacknowledged task messages (Redis transport)."""


@dataclass
class Checks:
    """What the checks found. ``problems()`` is empty for a run that kept every invariant."""

    statuses: Counter[str] = field(default_factory=Counter)
    """Terminal status (or the last one seen) -> runs, over accepted runs."""
    failures: Counter[str] = field(default_factory=Counter)
    """Error of a failed run -> count."""
    stuck: list[str] = field(default_factory=list)
    """Runs not terminal after the settle timeout: message, run id, status."""
    recovered_runs: int = 0
    missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    out_of_order: list[str] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    wrong_run: list[str] = field(default_factory=list)
    """User messages whose run id is not the one the 202 gave, or contents never sent."""
    duplicate_answers: list[str] = field(default_factory=list)
    ambiguous_in_history: int = 0
    stream_ends: Counter[int] = field(default_factory=Counter)
    """Number of ``end`` entries in a run's Redis Stream -> runs (every accepted run)."""
    sse_sampled: int = 0
    sse_bad: list[str] = field(default_factory=list)
    leftovers: dict[str, int] = field(default_factory=dict)
    unacked_tasks: Counter[str] = field(default_factory=Counter)
    unreadable: list[str] = field(default_factory=list)
    """Conversations or runs the checks could not read (HTTP error): counted as problems."""

    def never_terminal(self) -> int:
        return sum(n for s, n in self.statuses.items() if s not in TERMINAL)

    def problems(self) -> list[str]:
        """One line per kind of broken invariant."""
        leaks = {k: v for k, v in self.leftovers.items() if k != "unacked" and v}
        bad_ends = sum(n for ends, n in self.stream_ends.items() if ends != 1)
        found = [
            ("runs never terminal", self.never_terminal()),
            ("runs failed", self.statuses["failed"]),
            ("runs cancelled", self.statuses["cancelled"]),
            ("messages missing from history", len(self.missing)),
            ("messages duplicated in history", len(self.duplicated)),
            ("conversations out of order", len(self.out_of_order)),
            ("messages unanswered", len(self.unanswered)),
            ("messages with a wrong run id", len(self.wrong_run)),
            ("runs answered twice", len(self.duplicate_answers)),
            ("runs whose stream has not exactly one end", bad_ends),
            ("bad SSE streams", len(self.sse_bad)),
            ("leftovers " + ", ".join(f"{k}={v}" for k, v in leaks.items()), len(leaks)),
            ("unreadable", len(self.unreadable)),
        ]
        return [f"{what}: {n}" for what, n in found if n]


def settle(r: redis.Redis, run_ids: list[str], timeout: float, stall: float, tick: Any) -> float:
    """Wait until every run is terminal; the seconds it took. Gives up after ``timeout`` s, or
    once no run has ended for ``stall`` s (longer than any recovery takes: the rest are stuck)."""
    t0 = moved = time.monotonic()
    pending = list(run_ids)
    while pending and time.monotonic() - t0 < timeout and time.monotonic() - moved < stall:
        try:
            with r.pipeline(transaction=False) as p:
                for run_id in pending:
                    p.hget(keys.run(run_id), "status")
                statuses = p.execute()
        except redis.RedisError:
            time.sleep(0.5)
            continue
        still = [i for i, s in zip(pending, statuses, strict=True) if s not in TERMINAL]
        if len(still) < len(pending):
            moved = time.monotonic()
        pending = still
        tick(len(run_ids) - len(pending))
        if pending:
            time.sleep(0.5)
    return time.monotonic() - t0


def leftovers(r: redis.Redis) -> dict[str, int]:
    """What should be gone once every run ended: leases, inboxes, active runs, unacked tasks."""
    inboxes = sum(bool(r.llen(k)) for k in r.scan_iter(keys.conv_pattern("inbox"), count=500))
    lease_index, inbox_index, active = indexes.sizes(r, "leases", "inboxes", "runs:active")
    return {
        "leases": sum(1 for _ in r.scan_iter(keys.conv_pattern("lease"), count=500)),
        "lease index": lease_index,
        "inboxes": inboxes,
        "inbox index": inbox_index,
        "active runs": active,
        "unacked": int(r.hlen(UNACKED)),
    }


def wait_clean(r: redis.Redis, timeout: float) -> dict[str, int]:
    """Leftovers, once leases, inboxes and active runs are gone or ``timeout`` s passed."""
    deadline = time.monotonic() + timeout
    while True:
        found = leftovers(r)
        if not any(v for k, v in found.items() if k != "unacked") or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def unacked_tasks(r: redis.Redis) -> Counter[str]:
    """Kombu's unacked task messages by task name: deliveries to workers that were killed,
    which Celery redelivers only after the visibility timeout (1 h)."""
    out: Counter[str] = Counter()
    for raw in r.hvals(UNACKED):
        try:
            out[str(json.loads(raw)[0]["headers"]["task"])] += 1
        except (ValueError, KeyError, IndexError, TypeError):
            out["unreadable"] += 1
    return out


def check(gateway_url: str, r: redis.Redis, load: Load, sample: int, seed: int) -> Checks:
    """Read history, run records, event streams and Redis; count every broken invariant."""
    out = Checks()
    with httpx.Client(base_url=gateway_url, timeout=10) as http:
        runs: dict[str, Message] = {}
        for name, msgs in load.sent.items():
            try:
                _conversation(http, load.agent, name, msgs, out, runs)
            except (httpx.HTTPError, KeyError, ValueError) as e:
                out.unreadable.append(f"history of {name}: {e!r}")
        recovered: list[str] = []
        for run_id, msg in runs.items():
            try:
                info = http.get(f"/v1/runs/{run_id}").raise_for_status().json()
            except (httpx.HTTPError, ValueError) as e:
                out.unreadable.append(f"run {run_id}: {e!r}")
                continue
            out.statuses[info["status"]] += 1
            if info["status"] not in TERMINAL:
                out.stuck.append(f"{msg.content} run {run_id} {info['status']}")
            if info["status"] == "failed":
                out.failures[str(info.get("error"))[:120]] += 1
            if r.hget(keys.run(run_id), "recoveries"):
                recovered.append(run_id)
            entries = r.xrange(keys.run_part(run_id, "events")) or []
            ends = sum(json.loads((f or {})["data"])["type"] == "end" for _, f in entries)
            out.stream_ends[ends] += 1
        out.recovered_runs = len(recovered)
        # Recovered runs first: their streams are the ones a takeover could have broken.
        rest = [i for i in runs if i not in set(recovered)]
        random.Random(seed).shuffle(rest)
        for run_id in (recovered + rest)[:sample]:
            out.sse_sampled += 1
            problem = _sse(http, run_id)
            if problem:
                out.sse_bad.append(f"{run_id}: {problem}")
    out.leftovers = leftovers(r)
    out.unacked_tasks = unacked_tasks(r)
    return out


def _conversation(
    http: httpx.Client, agent: str, name: str, msgs: list[Message], out: Checks,
    runs: dict[str, Message],
) -> None:  # fmt: skip
    resp = http.get(f"/v1/agents/{agent}/conversations/{name}/history").raise_for_status()
    check_history(name, resp.json()["messages"], msgs, out, runs)


def check_history(
    name: str, history: list[dict[str, Any]], msgs: list[Message], out: Checks,
    runs: dict[str, Message],
) -> None:  # fmt: skip
    """Check one conversation's history against what was sent (``msgs``, in send order):
    count into ``out``, and add each run to check to ``runs``."""
    by_content = {m.content: m for m in msgs}
    seen: Counter[str] = Counter()
    answers: Counter[str] = Counter()
    last = -1
    disordered = False
    for i, h in enumerate(history):
        if h["role"] == "assistant":
            answers[str(h.get("run_id"))] += 1
        if h["role"] != "user":
            continue
        msg = by_content.get(h["content"])
        if msg is None or msg.outcome not in ("accepted", "ambiguous"):
            out.wrong_run.append(f"{name}: unexpected user message {h['content']!r}")
            continue
        seen[msg.content] += 1
        if seen[msg.content] > 1:
            continue
        if msg.outcome == "ambiguous":
            out.ambiguous_in_history += 1
            msg.run_id = str(h.get("run_id"))  # its run is checked like an accepted one
        elif h.get("run_id") != msg.run_id:
            out.wrong_run.append(f"{msg.content}: run {h.get('run_id')} != 202's {msg.run_id}")
        runs[msg.run_id] = msg
        disordered = disordered or msg.index < last
        last = max(last, msg.index)
        nxt = history[i + 1] if i + 1 < len(history) else {}
        if nxt.get("role") != "assistant" or nxt.get("run_id") != h.get("run_id"):
            out.unanswered.append(f"{msg.content} (run {h.get('run_id')})")
    for msg in msgs:
        if msg.outcome == "accepted" and not seen[msg.content]:
            out.missing.append(f"{msg.content} (run {msg.run_id})")
            runs[msg.run_id] = msg  # its run's status is reported all the same
        if seen[msg.content] > 1:
            out.duplicated.append(f"{msg.content} x{seen[msg.content]}")
    if disordered:
        order = [h["content"] for h in history if h["role"] == "user"]
        out.out_of_order.append(f"{name}: {order}")
    out.duplicate_answers += [f"{name} run {r} x{n}" for r, n in answers.items() if n > 1]


def _sse(http: httpx.Client, run_id: str, timeout: float = 10.0) -> str:
    """Read the run's SSE from the start; what is wrong with it, or ``""``."""
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    try:
        with http.stream("GET", f"/v1/runs/{run_id}/events", timeout=3) as resp:
            if resp.status_code != 200:
                return f"HTTP {resp.status_code}"
            lines = resp.iter_lines()
            for _, event in parse_sse(lines):
                events.append(event)
                if time.monotonic() > deadline:
                    return f"no end within {timeout:.0f}s"
    except httpx.HTTPError as e:
        return f"{type(e).__name__} after {len(events)} events"
    types = [e["type"] for e in events]
    if types.count("end") != 1 or types[-1] != "end":
        return f"{types.count('end')} end events, last {types[-1:] or 'none'}"
    if types[0] != "start":
        return f"first event {types[0]}"
    return ""
