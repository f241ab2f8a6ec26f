"""``python -m bench.chaos`` (``make chaos``): walrus under worker kills and Redis restarts.

N conversations x M messages are POSTed to a real gateway while a worker's whole process group
is ``kill -9``ed every ``--kill-every`` seconds (a replacement started), Redis is ``kill -9``ed
once and shut down once (each restarted on the same port and AOF); then every accepted message
must have run exactly once, in order, answered, with one ``end`` per run and nothing left over.
Progress goes to stderr, the table to stdout; the exit code is 1 if any invariant broke.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from rich.console import Console
from rich.table import Table

from bench.chaos.run import Params, Result, run


def parse_args(argv: list[str] | None = None) -> tuple[Params, bool]:
    """The run's parameters, and whether to print JSON."""
    d = Params()
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--conversations", type=int, default=d.conversations, help="N (%(default)s)")
    add("--messages", type=int, default=d.messages, help="M per conversation (%(default)s)")
    add("--workers", type=int, default=d.workers, help="K worker processes (%(default)s)")
    add("--concurrency", type=int, default=d.concurrency, help="pool per worker (%(default)s)")
    add("--duration", type=float, default=d.duration, help="fault window, s (%(default)s)")
    add("--kill-every", type=float, default=d.kill_every, help="s between worker kills")
    add("--redis-faults", default=",".join(d.redis_faults),
        help="comma list of kill9, shutdown (or none) (%(default)s)")  # fmt: skip
    add("--redis-down", type=float, default=d.redis_down, help="s Redis stays down")
    add("--chunk-delay-ms", type=int, default=d.chunk_delay_ms, help="mock pace (%(default)s)")
    add("--lease-ttl", type=float, default=d.lease_ttl, help="WALRUS_LEASE_TTL (%(default)s)")
    add("--dispatch-grace", type=float, default=d.dispatch_grace,
        help="WALRUS_DISPATCH_GRACE (%(default)s)")  # fmt: skip
    add("--in-flight", type=int, default=d.in_flight, help="concurrent POSTs (%(default)s)")
    add("--max-pending", type=int, default=d.max_pending,
        help="unended runs above which sends wait, 0: no limit (%(default)s)")  # fmt: skip
    add("--send-timeout", type=float, default=d.send_timeout, help="retrying one send, s")
    add("--settle-timeout", type=float, default=d.settle_timeout, help="runs ending, s")
    add("--sample", type=int, default=d.sample, help="runs whose SSE is read (%(default)s)")
    add("--seed", type=int, default=d.seed)
    add("--deadline", type=float, default=0, help="global deadline, s (0: derived)")
    add("--json", action="store_true", help="print JSON instead of the table")
    a = p.parse_args(argv)
    faults = tuple(f for f in a.redis_faults.split(",") if f and f != "none")
    if not set(faults) <= {"kill9", "shutdown"}:
        p.error("--redis-faults takes kill9, shutdown or none")
    for name in ("conversations", "messages", "workers", "concurrency", "in_flight"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    fields = {k: v for k, v in vars(a).items() if k not in ("json", "redis_faults")}
    return Params(**fields, redis_faults=faults), a.json


def table(res: Result) -> Table:
    """The chaos table: load, faults, runs, history, streams, leftovers, verdict."""
    t = Table(title="walrus chaos", title_justify="left")
    t.add_column("figure")
    t.add_column("value", justify="right")
    p = res.params

    def row(label: str, value: object, bad: bool = False) -> None:
        t.add_row(label, f"[red]{value}[/red]" if bad else str(value))

    row("conversations x messages / workers", f"{p.conversations} x {p.messages} / {p.workers}")
    f = res.faults
    row("worker kill -9 (process group)", len(f.worker_kills))
    row("redis restarts (kill -9, SHUTDOWN)", len(f.redis_restarts))
    row("processes that died by themselves", len(f.deaths), bool(f.deaths))
    if f.errors:
        row("faults not applied", "; ".join(f.errors), True)
    if res.load is not None:
        c = res.load.counts()
        row("messages accepted (202)", c["accepted"])
        row("ambiguous (500 / reset after sending)", c["ambiguous"])
        row("not accepted (gave up after refused / 503)", c["gave up"])
        row("rejected (4xx)", c["rejected"], bool(c["rejected"]))
        row("send retries (refused / 503)", dict(res.load.retries) or 0)
    k = res.checks
    if k is not None:
        row("runs succeeded", k.statuses["succeeded"])
        row("runs failed", k.statuses["failed"], bool(k.statuses["failed"]))
        if k.failures:
            row("  failed with", "; ".join(f"{n}x {e}" for e, n in k.failures.most_common(3)))
        row("runs never terminal", _first(k.stuck), bool(k.stuck))
        row("runs recovered by the reaper", k.recovered_runs)
        row("ambiguous messages found in history", k.ambiguous_in_history)
        for label, found in (
            ("user messages missing", k.missing),
            ("user messages duplicated", k.duplicated),
            ("conversations out of order", k.out_of_order),
            ("user messages unanswered", k.unanswered),
            ("wrong run id / unexpected message", k.wrong_run),
            ("runs answered twice", k.duplicate_answers),
        ):
            row(label, _first(found), bool(found))
        ends = ", ".join(f"{n} runs: {e}" for e, n in sorted(k.stream_ends.items()))
        row("`end` entries per run stream", ends, set(k.stream_ends) - {1} != set())
        row(f"SSE streams read from the start (bad / {k.sse_sampled})", _first(k.sse_bad),
            bool(k.sse_bad))  # fmt: skip
        for name, n in k.leftovers.items():
            row(f"left in redis: {name}", n, bool(n) and name != "unacked")
        if k.unacked_tasks:
            row("  unacked by task", ", ".join(f"{t} {n}" for t, n in k.unacked_tasks.items()))
        if k.unreadable:
            row("could not read", _first(k.unreadable), True)
    row("settle (faults over → all runs terminal)", f"{res.settle_s:.1f} s")
    row("wall time", f"{res.wall_s:.1f} s")
    problems = res.problems()
    row("verdict", "; ".join(problems) if problems else "[green]ok[/green]", bool(problems))
    return t


def _first(items: list[str], n: int = 3) -> str:
    if not items:
        return "0"
    more = f" (+{len(items) - n} more)" if len(items) > n else ""
    return f"{len(items)}: " + "; ".join(items[:n]) + more


def main(argv: list[str] | None = None) -> int:
    params, as_json = parse_args(argv)
    res = run(params)
    if as_json:
        out = {"params": asdict(params), "problems": res.problems(), "faults": asdict(res.faults)}
        if res.checks is not None:
            out["checks"] = asdict(res.checks)
        if res.load is not None:
            out["sent"] = dict(res.load.counts())
        print(json.dumps(out, indent=2, default=str))
    else:
        Console(width=None if sys.stdout.isatty() else 140).print(table(res))
    if res.problems() and res.logs:
        print(f"logs: {res.logs}", file=sys.stderr)
    return 1 if res.problems() else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("walrus chaos: interrupted; all processes stopped", file=sys.stderr)
        sys.exit(130)
