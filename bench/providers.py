"""Real-provider figures against the fake LLM over HTTP: a shared rate limit, a noisy neighbour.

``python -m bench.providers``:

1. **rate**: ``--conversations`` conversations at once against a fake provider that answers
   429 past ``--rpm`` requests per minute, with ``requests_per_minute = --rpm`` in config.toml.
   Reports the fake's 429s, failed runs and the rate the fake observed.
2. **noisy neighbour**: tenant A submits ``--flood`` runs of a mock agent that takes about
   ``--run-ms`` each, at once (what ``submit()`` does, without HTTP, so A's runs form a
   backlog), then tenant B one run through the gateway; B's queue wait
   (accepted → ``start``) beside B's wait on an idle cluster, and A's total time. Measured with
   the fair dispatcher (``walrus_tasks.fair``) and again with it off
   (``WALRUS_FAIR_DISPATCH=0``: runs start in arrival order), unless ``--fair-only``.
3. **wake**: ``--wake-runs`` conversations at once against a provider with
   ``max_concurrency = 1`` whose calls take ``--wake-call-s``: how long the slot stays free
   between one call's end and the next call's arrival at the fake (a released slot wakes the
   step that waited longest).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.procs import environment
from tests.cluster import Cluster
from tests.fakellm import FakeLLM, FakeReply
from walrus_tasks import runs
from walrus_tasks.celery_app import DRAIN, RUNS_QUEUE
from walrus_tasks.submit import new_run_id

RATE_PROVIDER = """
[providers.fake]
kind = "openai"
base_url = "{base}/v1"
api_key = "bench"
requests_per_minute = {rpm}
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.providers", description=__doc__)
    p.add_argument("--rpm", type=int, default=120, help="the fake's requests per minute (120)")
    p.add_argument("--conversations", type=int, default=50, help="conversations of 1. (50)")
    p.add_argument("--flood", type=int, default=500, help="tenant A's runs of 2. (500)")
    p.add_argument("--run-ms", type=int, default=200, help="how long each of A's runs takes (200)")
    p.add_argument("--fair-only", action="store_true", help="2. without the arrival-order run")
    p.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    p.add_argument("--concurrency", type=int, default=2, help="pool size per worker (2)")
    p.add_argument("--wake-runs", type=int, default=20, help="conversations of 3. (20)")
    p.add_argument("--wake-call-s", type=float, default=0.5, help="each call of 3., s (0.5)")
    p.add_argument("--only", choices=("rate", "fairness", "wake"), help="run one figure only")
    p.add_argument(
        "--state", choices=("one", "apart", "cluster"), default="one",
        help="state and broker on one Redis (one), a Redis each (apart), or the state on a "
        "Redis Cluster of 3 masters and 3 replicas and the broker apart (cluster)",
    )  # fmt: skip
    return p.parse_args(argv)


def send(c: Cluster, agent: str, sender: str, content: str = "go") -> str:
    """POST one message; its run id."""
    return c.send(agent, content, sender)


def wait_all(c: Cluster, run_ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """The final record of every run (polled through the gateway)."""
    return [c.wait_run(run_id, timeout=timeout) for run_id in run_ids]


def rate(args: argparse.Namespace) -> dict[str, Any]:
    """Figure 1: a provider limit shared by every worker keeps a fake's rate limit."""
    with FakeLLM() as fake:
        fake.limit_rate(args.rpm, burst=max(1, args.rpm // 60) + 1)
        config = RATE_PROVIDER.format(base=fake.base_url, rpm=args.rpm)
        agents = {"rated": 'model = "fake/m-rate"\nretries = 0\n'}
        with environment(
            args.workers, args.concurrency, agents=agents, config_toml=config, name="bench-rate",
            state=args.state,
        ) as env:  # fmt: skip
            c = env.cluster
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                run_ids = list(
                    pool.map(lambda i: send(c, "rated", f"conv-{i}"), range(args.conversations))
                )
            ends = wait_all(c, run_ids, timeout=120)
            wall = time.monotonic() - started
        arrivals = sorted(fake.arrivals)
    span = arrivals[-1] - arrivals[0] if len(arrivals) > 1 else float("nan")
    observed = (len(arrivals) - 1) / span * 60 if span else float("nan")
    return {
        "rpm": args.rpm,
        "conversations": args.conversations,
        "succeeded": sum(e["status"] == "succeeded" for e in ends),
        "failed": sum(e["status"] != "succeeded" for e in ends),
        "fake_429": fake.rejected,
        "requests": len(arrivals),
        "observed_rpm": round(observed, 1),
        "observed_vs_limit": round(observed / args.rpm, 3),
        "wall_s": round(wall, 1),
    }


def queue_wait(c: Cluster, run_id: str) -> float:
    """Seconds from the run's acceptance to its start."""
    info = c.wait_run(run_id, timeout=600)
    return float(info["started_at"]) - float(info["created_at"])


SLOW_AGENT = """
model = "mock"
[mock]
reply = "a five word mock reply"
chunk_delay_ms = {delay}
"""
"""Five chunks: four pauses of ``delay`` ms, so a run takes about ``4 * delay`` ms."""


def submit_all(c: Cluster, agent: str, senders: list[str]) -> list[str]:
    """What ``submit()`` does for each sender (the message, then its drain), without HTTP.

    Faster than the gateway, so a flood is queued before the workers have run much of it.
    """
    r = c.redis()
    with c.control_app() as app, ThreadPoolExecutor(8) as pool:

        def one(sender: str) -> str:
            run_id = new_run_id(agent, sender)
            assert runs.enqueue(r, run_id, agent, sender, "go", "enqueue", {}).state == "ok"
            app.send_task(DRAIN, args=(agent, sender), kwargs={"run_id": run_id}, queue=RUNS_QUEUE)
            return run_id

        return list(pool.map(one, senders))


def noisy_neighbour(args: argparse.Namespace, env_extra: dict[str, str]) -> dict[str, Any]:
    """B's one run behind A's flood of slow runs, beside B's run on an idle cluster."""
    agents = {"chat": SLOW_AGENT.format(delay=max(1, args.run_ms // 4))}
    with environment(
        args.workers, args.concurrency, agents=agents, env_extra=env_extra, name="bench-fair",
        state=args.state,
    ) as env:  # fmt: skip
        c = env.cluster
        idle = [queue_wait(c, send(c, "chat", f"b:idle-{i}")) for i in range(5)]
        flood = submit_all(c, "chat", [f"a:conv-{i}" for i in range(args.flood)])
        b_run = send(c, "chat", "b:one")
        b = c.wait_run(b_run, timeout=600)
        a_runs = wait_all(c, flood, timeout=600)
    b_created, b_started = float(b["created_at"]), float(b["started_at"])
    a_first = min(float(a["created_at"]) for a in a_runs)
    return {
        "B queue wait, idle cluster (median of 5), s": round(sorted(idle)[2], 3),
        "B queue wait behind A's flood, s": round(b_started - b_created, 3),
        "A's runs queued when B sent": sum(float(a["started_at"]) > b_created for a in a_runs),
        "A's runs started before B's, after B sent": sum(
            b_created < float(a["started_at"]) < b_started for a in a_runs
        ),
        "A's last run queue wait, s": round(
            max(float(a["started_at"]) - float(a["created_at"]) for a in a_runs), 3
        ),
        "A's total time (first accepted -> last ended), s": round(
            max(float(a["finished_at"]) for a in a_runs) - a_first, 1
        ),
        "A's runs failed": sum(a["status"] != "succeeded" for a in a_runs),
    }


def fairness(args: argparse.Namespace) -> dict[str, Any]:
    """Figure 2: the noisy neighbour with the fair dispatcher, and in arrival order."""
    out: dict[str, Any] = {
        "state": args.state,
        "flood (tenant A runs)": args.flood,
        "each run, ms": args.run_ms,
        "slots": args.workers * args.concurrency,
        "fair dispatch": noisy_neighbour(args, {}),
    }
    if not args.fair_only:
        out["arrival order (WALRUS_FAIR_DISPATCH=0)"] = noisy_neighbour(
            args, {"WALRUS_FAIR_DISPATCH": "0"}
        )
    return out


WAKE_PROVIDER = """
[providers.fake]
kind = "openai"
base_url = "{base}/v1"
api_key = "bench"
max_concurrency = 1
"""


def wake(args: argparse.Namespace) -> dict[str, Any]:
    """Figure 3: how soon a step waiting for the one slot starts once the slot frees."""
    with FakeLLM() as fake:
        fake.script(*[FakeReply(text="done", delay=args.wake_call_s)] * args.wake_runs, model="m-w")
        config = WAKE_PROVIDER.format(base=fake.base_url)
        agents = {"single": 'model = "fake/m-w"\n'}
        with environment(
            args.workers, args.concurrency, agents=agents, config_toml=config, name="bench-wake",
            state=args.state,
        ) as env:  # fmt: skip
            c = env.cluster
            with ThreadPoolExecutor(8) as pool:
                run_ids = list(
                    pool.map(lambda i: send(c, "single", f"w-{i}"), range(args.wake_runs))
                )
            ends = wait_all(c, run_ids, timeout=120)
        arrivals = sorted(fake.arrivals)
        peak = fake.max_in_flight
    gaps = sorted(b - a - args.wake_call_s for a, b in itertools.pairwise(arrivals))
    return {
        "conversations": args.wake_runs,
        "each call, s": args.wake_call_s,
        "succeeded": sum(e["status"] == "succeeded" for e in ends),
        "calls at the fake": len(arrivals),
        "most in flight at the fake": peak,
        "slot free before the next call, median s": round(gaps[len(gaps) // 2], 3),
        "slot free before the next call, max s": round(gaps[-1], 3),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {}
    if args.only in (None, "rate"):
        results["rate"] = rate(args)
    if args.only in (None, "fairness"):
        results["fairness"] = fairness(args)
    if args.only in (None, "wake"):
        results["wake"] = wake(args)
    print(json.dumps(results, indent=2))
    r, f = results.get("rate"), results.get("fairness")
    ok = r is None or (r["failed"] == 0 and r["fake_429"] == 0)
    ok = ok and (
        f is None or all(v["A's runs failed"] == 0 for v in f.values() if isinstance(v, dict))
    )
    w = results.get("wake")
    ok = ok and (w is None or w["succeeded"] == w["conversations"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
