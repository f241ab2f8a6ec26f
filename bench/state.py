"""``python -m bench.state``: what a run asks of the state Redis and of the broker, apart.

The state on one Redis and on a Redis Cluster of 3 masters and 3 replicas, the broker on a
Redis of its own each time (``bench.procs`` ``State``), a gateway and ``--workers`` workers.
After ``--warmup`` runs, ``--runs`` messages over ``--conversations`` conversations are POSTed
concurrently and every run awaited; then, per run:

- **commands**: ``INFO commandstats`` deltas of every state master and of the broker
  (``EVALSHA``: the script steps; the commands a script calls count too, under their own
  names), the bench's own ``INFO`` left out;
- **Redis CPU**: ``used_cpu_user + used_cpu_sys`` deltas of each state master and of the
  broker, and the runs a second the state could take before its busiest master's core is full
  (``1000 / that master's CPU ms per run``: Redis's share alone, on this machine's cores);
- **memory** of what stays: a finished run's record and event stream (they live
  ``WALRUS_EVENTS_TTL``), a conversation's keys, a history message (``MEMORY USAGE``);
- on the cluster, the share of walrus keys each master holds.

Not a throughput figure: on a 2-core machine the walrus processes, not Redis, are the limit.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis

from bench import cost
from bench.procs import AGENT, Env, State, environment
from tests.redis_cluster import client as node_client
from walrus_tasks import keys

SKIP = {"INFO", "CONFIG", "CLUSTER", "CLIENT", "PING", "HELLO", "SCAN", "MEMORY", "DBSIZE"}
"""Commands of the bench itself (and of clients' handshakes), not of the runs."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.state", description=__doc__)
    p.add_argument("--runs", type=int, default=400, help="runs measured (400)")
    p.add_argument("--conversations", type=int, default=80, help="their conversations (80)")
    p.add_argument("--warmup", type=int, default=40, help="runs before the counters (40)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    p.add_argument("--concurrency", type=int, default=2, help="pool size per worker (2)")
    p.add_argument(
        "--state", choices=("apart", "cluster", "both"), default="both",
        help="one Redis for the state (apart), a cluster (cluster), or one after the other",
    )  # fmt: skip
    return p.parse_args(argv)


def _servers(env: Env) -> tuple[list[redis.Redis], redis.Redis]:
    """Plain clients of every state master, and of the broker's Redis."""
    if env.state_cluster is not None:
        masters = [node_client(m.port) for m in env.state_cluster.masters()]
        return masters, redis.Redis(port=env.redis.port, decode_responses=True)
    assert env.broker is not None
    state = redis.Redis(port=env.redis.port, decode_responses=True)
    return [state], redis.Redis(port=env.broker.port, decode_responses=True)


def _counters(r: redis.Redis) -> tuple[Counter[str], float]:
    """The command counters (``CLIENT|SETNAME`` counted as ``CLIENT``) and CPU seconds now."""
    calls: Counter[str] = Counter()
    for command, n in cost.snapshot(r).commands.items():
        calls[command.split("|")[0]] += n
    cpu: dict[str, Any] = r.info("cpu")
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def _send_all(env: Env, senders: list[str]) -> list[str]:
    c = env.cluster
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda s: c.send(AGENT, "go", s), senders))


def _memory(r: redis.Redis, run_id: str, sender: str) -> dict[str, int]:
    cid = keys.cid(AGENT, sender)
    run_bytes = sum(
        r.memory_usage(k) or 0 for k in (keys.run(run_id), keys.run_part(run_id, "events"))
    )
    conv_bytes = sum(r.memory_usage(keys.conv(cid, p)) or 0 for p in keys.CONV_PARTS)
    history = r.llen(keys.conv(cid, "history"))
    return {
        "a finished run (record + events), bytes": run_bytes,
        "a conversation of the bench (all its keys), bytes": conv_bytes,
        "its history messages": history,
    }


def measure(args: argparse.Namespace, state: State) -> dict[str, Any]:
    """The figures of one topology."""
    with environment(
        args.workers, args.concurrency, name=f"bench-state-{state}", state=state
    ) as env:
        c = env.cluster
        stem = uuid.uuid4().hex[:6]
        senders = [f"s{stem}-{i % args.conversations}" for i in range(args.runs)]
        warm = _send_all(env, [f"w{stem}-{i}" for i in range(args.warmup)])
        for run_id in warm:
            c.wait_run(run_id, timeout=120)
        masters, broker = _servers(env)
        before = [_counters(m) for m in masters]
        broker_before = _counters(broker)
        started = time.monotonic()
        run_ids = _send_all(env, senders)
        ends = [c.wait_run(run_id, timeout=300) for run_id in run_ids]
        wall = time.monotonic() - started
        time.sleep(0.5)  # the last run's trailing writes (its worker's ack, events)
        after = [_counters(m) for m in masters]
        broker_after = _counters(broker)
        state_calls: Counter[str] = Counter()
        for (b, _), (a, _) in zip(before, after, strict=True):
            state_calls.update(a - b)
        broker_calls = broker_after[0] - broker_before[0]
        each_cpu = [a[1] - b[1] for b, a in zip(before, after, strict=True)]
        state_cpu = sum(each_cpu)
        n = len(run_ids)
        sample = c.redis()
        out: dict[str, Any] = {
            "state": "Redis Cluster, 3 masters + 3 replicas" if state == "cluster" else "one Redis",
            "runs": n,
            "succeeded": sum(e["status"] == "succeeded" for e in ends),
            "wall s (2 cores, not a capacity figure)": round(wall, 1),
            "state commands per run": _per_run(state_calls, n),
            "state EVALSHA per run (script steps)": round(state_calls["EVALSHA"] / n, 2),
            "broker commands per run": _per_run(broker_calls, n),
            "state Redis CPU ms per run (all masters)": round(state_cpu * 1000 / n, 3),
            "broker Redis CPU ms per run": round(
                (broker_after[1] - broker_before[1]) * 1000 / n, 3
            ),
            "state Redis CPU ms per run, each master": sorted(
                round(cpu * 1000 / n, 3) for cpu in each_cpu
            ),
            # The busiest master saturates first: the state's ceiling, Redis CPU alone.
            "runs/s the state can take (busiest master's core full)": round(
                n / max(max(each_cpu), 1e-9)
            ),
            "memory": _memory(sample, run_ids[-1], senders[-1]),
        }
        if env.state_cluster is not None:
            held = {
                m.port: len(list(node_client(m.port).scan_iter("walrus:*")))
                for m in env.state_cluster.masters()
            }
            total = sum(held.values()) or 1
            out["walrus keys per master, %"] = sorted(
                round(100 * v / total, 1) for v in held.values()
            )
    return out


def _per_run(calls: Counter[str], n: int) -> dict[str, float]:
    mine = {k: v for k, v in calls.items() if k not in SKIP and v > 0}
    top = dict(sorted(mine.items(), key=lambda kv: -kv[1])[:10])
    out = {"total": round(sum(mine.values()) / n, 2)}
    out.update({k: round(v / n, 2) for k, v in top.items()})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    states: list[State] = ["apart", "cluster"] if args.state == "both" else [args.state]
    results = [measure(args, s) for s in states]
    print(json.dumps(results, indent=2))
    return 0 if all(r["succeeded"] == r["runs"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
