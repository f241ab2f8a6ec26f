"""``python -m bench`` (``make bench``): walrus dispatch latency and throughput vs Celery.

One run, one private Redis, one set of processes (a gateway and ``--workers`` worker processes):

1. baseline   ``app.send_task(PING).get()`` round trips of a no-op Celery task;
2. dispatch   streamed POST /v1/agents/bench/messages → first ``chunk`` SSE event;
3. throughput ``--messages`` messages over ``--conversations`` conversations, POSTed
              concurrently, first submit → last run terminal (Redis's slow log off); its cost
              per run (Redis commands, Celery messages, worker CPU: ``bench.cost``), counted
              in one more round of the same size with the slow log on; and its baseline, raw
              Celery measured strictly: 50 warm-up round trips, then no-op tasks sent at once,
              results awaited, best of 3 rounds;
5. fan-out    ``--fanout`` concurrent SSE clients of the one gateway (``bench.streams``);
6. one stream one run of 20 000 one-word chunks to one SSE client;
7. history    a step of a conversation with ``--history`` messages vs one with none;
8. Agent Protocol  ``--ap-runs`` background runs on ``--ap-threads`` threads, queued with
              ``multitask_strategy="enqueue"`` and joined through the official ``langgraph-sdk``
              (``bench.agent_protocol``), beside LangGraph dev's fixed figure; and its
              baseline, the same phase against a fresh ``langgraph dev``
              (``bench.langgraph_dev``), ``--ap-rounds`` rounds of walrus's then LangGraph's.

``--only`` runs some of them alone (``python -m bench --only raw,agent-protocol``);
``--tracing`` has the processes export OpenTelemetry spans (``bench.trace_sink``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from collections import Counter
from contextlib import nullcontext
from typing import Any

import celery
import redis
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench import (
    agent_protocol,
    agent_protocol_turns,
    cost,
    measure,
    streamed_runs,
    streams,
    trace_sink,
)
from bench.procs import AGENT, BENCH_AGENT, CORES, LIFTED, Phase, cpu_seconds, environment
from bench.report import ratio, report
from walrus_tasks import heap, profiling
from walrus_tasks.settings import Settings

PHASES = {
    "latency": "1. baseline and 2. dispatch",
    "throughput": "3. throughput and its cost",
    "raw": "3.'s baseline, raw Celery measured strictly",
    "fanout": "5. fan-out and 6. one stream",
    "history": "7. history",
    "agent-protocol": "8. Agent Protocol background runs",
    "langgraph": "8.'s baseline, LangGraph dev on the same load (its own virtualenv)",
}
"""What ``--only`` can pick (all of them by default, in this order)."""


def profiled() -> dict[str, str]:
    """``WALRUS_PROFILE_DIR`` (and ``WALRUS_PROFILE_CLOCK``) passed on to every walrus process
    (walrus_tasks.profiling)."""
    directory = os.environ.get(profiling.ENV)
    if not directory:
        return {}
    env = {profiling.ENV: os.path.abspath(directory)}
    if clock := os.environ.get(profiling.CLOCK_ENV):
        env[profiling.CLOCK_ENV] = clock
    return env


def heap_env(args: argparse.Namespace) -> dict[str, str]:
    """``WALRUS_HEAP_DIR`` for the gateway when 5. is to snapshot its heap (walrus_tasks.heap)."""
    return {heap.ENV: os.path.abspath(args.fanout_heap)} if args.fanout_heap else {}


def phases(value: str) -> set[str]:
    """``--only``'s comma-separated phase names."""
    names = {v.strip() for v in value.split(",") if v.strip()}
    unknown = names - PHASES.keys()
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown phase {', '.join(sorted(unknown)) or '(none)'}: pick from "
            + ", ".join(PHASES)
        )
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=200, help="measured runs of 1. and 2. (200)")
    p.add_argument("--warmup", type=int, default=20, help="unmeasured runs before each (20)")
    p.add_argument("--messages", type=int, default=1000, help="messages of 3. (1000)")
    p.add_argument("--conversations", type=int, default=100, help="conversations of 3. (100)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (2)")
    p.add_argument("--concurrency", type=int, default=2, help="pool size per worker (2)")
    p.add_argument("--in-flight", type=int, default=32, help="concurrent submits in 3. (32)")
    p.add_argument(
        "--via",
        choices=["gateway", "submit"],
        default="gateway",
        help="3. submits by POST to the gateway (default) or by calling submit() in-process",
    )
    p.add_argument(
        "--fanout", type=int, default=1000,
        help="concurrent SSE clients of 5. (1000; 0 skips 5. and 6.)",
    )  # fmt: skip
    p.add_argument("--fanout-runs", type=int, default=4, help="runs the clients of 5. follow (4)")
    p.add_argument(
        "--fanout-face", choices=list(streams.FACES), default="native",
        help="the face whose streams the clients of 5. follow, and through which its runs are "
        "created (native)",
    )  # fmt: skip
    p.add_argument(
        "--celery-tasks", type=int, default=2000,
        help="no-op Celery tasks of 3.'s baseline, sent at once (2000)",
    )  # fmt: skip
    p.add_argument(
        "--celery-rounds", type=int, default=3,
        help="timed rounds of 3.'s baseline, the best one kept (3)",
    )  # fmt: skip
    p.add_argument(
        "--celery-warmup", type=int, default=50,
        help="round trips before 3.'s baseline rounds (50)",
    )  # fmt: skip
    p.add_argument("--ap-runs", type=int, default=500, help="background runs of 8. (500)")
    p.add_argument("--ap-threads", type=int, default=50, help="threads of 8. (50)")
    p.add_argument(
        "--ap-rounds", type=int, default=3,
        help="rounds of 8. (3), each walrus's then LangGraph dev's: the figures sum them",
    )  # fmt: skip
    p.add_argument(
        "--only", type=phases, default=set(PHASES),
        help="comma-separated phases to run, of: " + ", ".join(PHASES) + " (all)",
    )  # fmt: skip
    p.add_argument(
        "--history", type=int, default=1000,
        help="messages of the long conversation of 7. (1000; 0 skips 7.)",
    )  # fmt: skip
    p.add_argument(
        "--history-runs", type=int, default=50, help="measured runs of 7., of each kind (50)"
    )
    p.add_argument(
        "--fanout-procs", type=int, default=0,
        help="client processes of 5. (0: one per 2500 clients)",
    )  # fmt: skip
    p.add_argument(
        "--fanout-rate", type=float, default=2000, help="streams 5. opens per second (2000)"
    )
    p.add_argument(
        "--fanout-heap", metavar="DIR",
        help="a tracemalloc snapshot of the gateway's heap while 5.'s clients are connected, "
        "written to DIR and summed up per stream (walrus_tasks.heap; slows 5. down, and its "
        "RSS figures then count the tracing's own memory)",
    )  # fmt: skip
    p.add_argument(
        "--tracing", action="store_true",
        help="the processes export OpenTelemetry spans (to a local sink that discards them)",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=300, help="max seconds for 3. to finish")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = p.parse_args(argv)
    for name in (
        "runs", "messages", "conversations", "workers", "concurrency", "in_flight",
        "celery_tasks", "history_runs", "celery_rounds", "ap_runs", "ap_threads", "ap_rounds",
    ):  # fmt: skip
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.history < 0 or args.celery_warmup < 0:
        p.error("--warmup, --celery-warmup and --history must be at least 0")
    if args.ap_threads > args.ap_runs:
        p.error("--ap-threads must be at most --ap-runs")
    return args


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(redis_url: str) -> dict[str, Any]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        redis_version = str(r.info("server")["redis_version"])
    finally:
        r.close()
    return {
        "nproc": CORES,
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "celery": celery.__version__,
        "redis_server": redis_version,
    }


def cost_of(
    before: cost.Snapshot | None,
    after: cost.Snapshot | None,
    units: int,
    phase_cpu: dict[str, float],
    own: Counter[str] | None = None,
    log: tuple[Counter[str], Counter[str], bool] | None = None,
) -> dict[str, Any]:
    """The per-unit cost figures of one phase (``bench.cost``)."""
    if before is None or after is None:
        return {}
    workers = phase_cpu.get("workers", 0.0)
    return cost.Cost.between(before, after, units, workers, own, log).summary()


def history_summary(h: streamed_runs.History) -> dict[str, Any]:
    """Figure 7: the two kinds of run side by side, and their ratios."""
    kinds = {"empty": h.empty, "long": h.long}
    out: dict[str, Any] = {"messages": h.messages}
    for name, d in kinds.items():
        out[name] = {
            "first_chunk": d.first_chunk.summary(),
            "worker": d.worker.summary(),
            "end": d.end.summary(),
            "failures": dict(d.failures),
        }
    n = h.messages
    out["ratios"] = {
        f"7. POST → 1st chunk p50, {n} messages / empty (goal ≤ 1.2)": ratio(
            out["long"]["first_chunk"]["p50_ms"], out["empty"]["first_chunk"]["p50_ms"]
        ),
        f"7. run started → finished (worker) p50, {n} messages / empty": ratio(
            out["long"]["worker"]["p50_ms"], out["empty"]["worker"]["p50_ms"]
        ),
    }
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only: set[str] = args.only
    err = Console(stderr=True)
    out = Console()
    started = time.perf_counter()
    progress = Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    )
    results: dict[str, Any] = {}
    fanout = args.fanout if "fanout" in only else 0
    history = args.history if "history" in only else 0
    # Every stream of 5. is a socket in the gateway and in a client process (both inherit this).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if fanout and hard != resource.RLIM_INFINITY and hard < fanout + 1024:
        err.print(
            f"[red]open-file hard limit {hard} < {fanout + 1024}: the gateway cannot hold "
            f"{fanout} streams (raise it: ulimit -Hn, LimitNOFILE)[/red]"
        )
    base = disp = tp = raw = hist = ap = lg = None
    with progress:
        boot = progress.add_task("start redis, gateway, workers", total=1)
        # The product's chunk coalescing (the test harness turns it off by default).
        flush = str(Settings.model_fields["chunk_flush_ms"].default)
        agents = {AGENT: BENCH_AGENT, **streams.AGENTS}
        with (
            trace_sink.sink() if args.tracing else nullcontext({}) as traced,
            environment(
                args.workers, args.concurrency, agents=agents,
                env_extra={
                    "WALRUS_CHUNK_FLUSH_MS": flush, **LIFTED, **traced, **profiled(),
                    **heap_env(args),
                },
            ) as env,
        ):  # fmt: skip
            results["tracing"] = bool(traced)
            progress.advance(boot)
            results["machine"] = machine(env.redis_url)

            cpu: dict[str, dict[str, float]] = {}
            results["cpu_seconds"] = cpu
            app = env.celery_app()
            if "latency" in only:
                task = progress.add_task("1. baseline (Celery ping)", total=args.warmup + args.runs)
                try:
                    with Phase(env, "1. baseline", cpu):
                        base = measure.baseline(
                            app, args.runs, args.warmup, lambda n: progress.advance(task, n)
                        )
                finally:
                    app.close()  # its connections only; the app object stays usable

                task = progress.add_task(
                    "2. dispatch (POST → first chunk)", total=args.warmup + args.runs
                )
                with Phase(env, "2. dispatch", cpu):
                    disp = streamed_runs.dispatch(
                        env.gateway_url, AGENT, args.runs, args.warmup,
                        lambda n: progress.advance(task, n),
                    )  # fmt: skip

            if "throughput" in only:
                sub = progress.add_task("3. throughput: submitted", total=args.messages)
                done = progress.add_task("3. throughput: terminal", total=args.messages)
                if args.via == "gateway":
                    submitter = measure.via_gateway(env.gateway_url, AGENT, args.in_flight)
                else:
                    env.celery_app()  # submit() must send to the bench Redis
                    submitter = measure.via_submit(AGENT, args.in_flight)
                with Phase(env, "3. throughput", cpu):
                    tp = measure.throughput(
                        submitter,
                        env.redis_url,
                        args.messages,
                        args.conversations,
                        args.timeout,
                        lambda n: progress.advance(sub, n),
                        lambda n: progress.advance(done, n),
                    )
                logged = progress.add_task("3. throughput: its cost (slow log on)", total=1)
                measure.throughput_cost(
                    submitter, env.redis_url, args.timeout,
                    lambda: cpu_seconds(env)["workers"], tp,
                )  # fmt: skip
                progress.advance(logged)
                if tp.http_errors or tp.succeeded != args.messages:
                    env.keep = True  # the gateway's and workers' logs say why
            if "raw" in only:
                task = progress.add_task(
                    "3. baseline: raw Celery no-ops", total=args.celery_rounds + 2
                )
                try:
                    with Phase(env, "3. raw Celery", cpu):
                        raw = measure.celery_throughput(
                            app, env.redis_url, args.celery_tasks, args.celery_rounds,
                            args.celery_warmup, lambda: cpu_seconds(env)["workers"],
                            lambda n: progress.advance(task, n),
                        )  # fmt: skip
                finally:
                    app.close()
            if fanout:
                fan = progress.add_task(
                    f"5. fan-out: {fanout} SSE clients, {args.fanout_face}", total=1
                )
                with Phase(env, "5. fan-out", cpu):
                    results["fanout"] = streams.fanout(
                        env.gateway_url, env.redis_url, env.cluster.procs["gateway"].pid,
                        fanout, args.fanout_runs, args.fanout_procs, args.fanout_rate,
                        args.fanout_face, heap_env(args).get(heap.ENV),
                    )  # fmt: skip
                progress.advance(fan)
                one = progress.add_task("6. one stream of 20 000 chunks", total=1)
                with Phase(env, "6. one stream", cpu):
                    results["single_stream"] = streams.single_stream(env.gateway_url)
                progress.advance(one)
            if history:
                task = progress.add_task(
                    f"7. history: {history} messages", total=args.warmup + args.history_runs
                )
                with Phase(env, "7. history", cpu):
                    hist = streamed_runs.history(
                        env.gateway_url, env.redis_url, AGENT, history, args.history_runs,
                        args.warmup, lambda n: progress.advance(task, n),
                    )  # fmt: skip
                results["history"] = history_summary(hist)
            if "agent-protocol" in only or "langgraph" in only:
                ap, lg = agent_protocol_turns.rounds(args, env, progress, cpu, results)
                if ap and not ap.all_succeeded(args.ap_runs * args.ap_rounds):
                    env.keep = True
            env.cluster.check_alive()
        stop = progress.add_task("stopped all processes", total=1)
        progress.advance(stop)

    results["params"] = params(args, flush, fanout, history)
    results["ratios"] = {}
    if base is not None and disp is not None:
        b, fc, end = base.summary(), disp.first_chunk.summary(), disp.end.summary()
        results["baseline"] = b
        results["dispatch"] = {
            "first_chunk": fc,
            "headers": disp.headers.summary(),
            "start": disp.start.summary(),
            "end": end,
            "start_written": disp.start_written.summary(),
            "chunk_written": disp.chunk_written.summary(),
            "chunk_delivered": disp.chunk_delivered.summary(),
            "failures": dict(disp.failures),
        }
        results["ratios"].update({
            "dispatch p50 / baseline p50": ratio(fc["p50_ms"], b["p50_ms"]),
            "dispatch p99 / baseline p99": ratio(fc["p99_ms"], b["p99_ms"]),
            "dispatch mean / baseline mean": ratio(fc["mean_ms"], b["mean_ms"]),
            "end-of-run p50 / baseline p50": ratio(end["p50_ms"], b["p50_ms"]),
            "end-of-run p99 / baseline p99": ratio(end["p99_ms"], b["p99_ms"]),
        })  # fmt: skip
    results["cost"] = {"walrus, per run (3.)": {}, "raw Celery, per task": {}}
    if tp is not None:
        results["throughput"] = tp.summary()
        results["cost"]["walrus, per run (3.)"] = cost_of(
            tp.redis_before, tp.redis_after, tp.logged_runs,
            {"workers": tp.logged_workers_cpu_s}, tp.own_commands, tp.log,
        )  # fmt: skip
    if raw is not None:
        results["celery_throughput"] = raw.summary()
        logged_cpu = {"workers": raw.logged.workers_cpu_s if raw.logged else math.nan}
        results["cost"]["raw Celery, per task"] = cost_of(
            raw.redis_before, raw.redis_after, raw.tasks, logged_cpu, None, raw.log
        )
    if tp is not None and raw is not None:
        results["ratios"]["throughput / raw Celery tasks/s (goal ≥ 0.6)"] = ratio(
            tp.runs_per_s, raw.tasks_per_s
        )
    if "history" in results:
        results["ratios"].update(results["history"]["ratios"])
    if ap is not None:
        results["agent_protocol"] = ap.summary()
        results["ratios"][
            f"8. Agent Protocol runs/s / LangGraph dev {agent_protocol.LANGGRAPH_DEV_RUNS_PER_S:g}"
            " (goal ≥ 1.5)"
        ] = ratio(ap.runs_per_s, agent_protocol.LANGGRAPH_DEV_RUNS_PER_S)
        if raw is not None:
            results["ratios"]["8. Agent Protocol runs/s / raw Celery tasks/s"] = ratio(
                ap.runs_per_s, raw.tasks_per_s
            )
        theirs = results.get("langgraph_dev", {}).get("runs_per_s")
        if theirs:
            results["agent_protocol"]["langgraph_dev_this_run_runs_per_s"] = theirs
            results["ratios"]["8. Agent Protocol runs/s / LangGraph dev's, this run"] = ratio(
                ap.runs_per_s, theirs
            )
    results["wall_s"] = time.perf_counter() - started

    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        report(args, results, out)
    failed = bool(disp and disp.failures)
    failed = failed or bool(tp and (tp.timed_out or tp.succeeded != args.messages))
    if hist is not None:
        failed = failed or bool(hist.empty.failures) or bool(hist.long.failures)
    streamed = results.get("fanout")
    failed = failed or bool(streamed and streamed["complete_streams"] != streamed["clients"])
    every = args.ap_runs * args.ap_rounds
    for figure in (ap, lg):  # LangGraph dev that could not be set up: printed, not failed
        failed = failed or bool(figure and not figure.all_succeeded(every))
    return 1 if failed else 0


def params(args: argparse.Namespace, flush: str, fanout: int, history: int) -> dict[str, Any]:
    """The run's parameters, as printed under the figures."""
    return {
        "phases": ", ".join(k for k in PHASES if k in args.only),
        "runs (1., 2.)": args.runs,
        "warm-up runs (1., 2.)": args.warmup,
        "dispatch conversations": "a fresh conversation per run, sequential, one keep-alive "
        "HTTP connection",
        "messages (3.)": args.messages,
        "conversations (3.)": args.conversations,
        "3. submitted via": "POST /v1/agents/bench/messages (gateway; asyncio HTTP/1.1, keep-alive)"
        if args.via == "gateway"
        else "walrus_tasks.submit.submit() in the bench process (thread pool)",
        "concurrent submits (3.)": args.in_flight,
        "cost counts (3.)": "from one more round of the same size, Redis's slow log on (the "
        "timed round has it off)",
        "worker processes": args.workers,
        "--concurrency per worker": f"{args.concurrency} (prefork)",
        "gateway": "1 process (uvicorn)",
        "mock provider": "chunk_delay_ms = 0, 5-word reply",
        "chunk coalescing (WALRUS_CHUNK_FLUSH_MS)": flush,
        "fan-out (5.)": f"{fanout} clients of the {args.fanout_face} face on "
        f"{args.fanout_runs} runs of {streams.FANOUT_WORDS} words, {streams.FANOUT_DELAY_MS} ms "
        "apart, started once all clients are connected"
        if fanout
        else "skipped",
        "redis": "private redis-server, AOF everysec, one DB for broker, backend and state",
        "raw Celery baseline (3.)": f"{args.celery_warmup} round trips, then best of "
        f"{args.celery_rounds} rounds of {args.celery_tasks} x walrus.control.ping sent at once "
        "(send_task, one thread), every result awaited; cost counts from one more round",
        "history (7.)": f"{history} seeded messages, {args.history_runs} runs of each kind"
        if history
        else "skipped",
        "Agent Protocol (8.)": f"{args.ap_rounds} rounds of {args.ap_runs} runs on "
        f"{args.ap_threads} threads, "
        "multitask_strategy=enqueue, langgraph-sdk async client, one coroutine per thread "
        "(create, queue its runs, join them)"
        if "agent-protocol" in args.only
        else "skipped",
        "8.'s baseline": "the same phase against langgraph dev (in-memory, one graph that "
        f"answers with the bench agent's reply); {args.ap_rounds} rounds, walrus's then a fresh "
        "LangGraph dev's in each"
        if "langgraph" in args.only
        else "skipped",
    }


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("walrus bench: interrupted; all processes stopped", file=sys.stderr)
        sys.exit(130)
