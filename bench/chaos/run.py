"""One chaos run: own Redis (AOF always), gateway, workers and beat; load and faults at once;
then the checks. Bounded everywhere, with a global deadline; every process stopped by PID."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from bench.chaos.faults import FaultLog, Faults, Plan
from bench.chaos.load import Load, Pacer, send_all
from bench.chaos.verify import TERMINAL, Checks, check, settle, wait_clean
from bench.procs import environment
from walrus_tasks import keys

AGENT = "chaos"
WORDS = 8


def agent_toml(chunk_delay_ms: int) -> str:
    """The mock agent under load: ``WORDS`` chunks, ``chunk_delay_ms`` apart."""
    reply = " ".join(f"w{i}" for i in range(1, WORDS + 1))
    return f'model = "mock"\n[mock]\nreply = "{reply}"\nchunk_delay_ms = {chunk_delay_ms}\n'


@dataclass
class Params:
    """A chaos run's size, pace and faults (``python -m bench.chaos --help``)."""

    conversations: int = 200
    messages: int = 5
    workers: int = 3
    concurrency: int = 2
    duration: float = 120.0
    """The fault window (s): messages are sent and faults applied within it."""
    kill_every: float = 10.0
    redis_faults: tuple[str, ...] = ("kill9", "shutdown")
    redis_down: float = 2.0
    chunk_delay_ms: int = 60
    lease_ttl: float = 3.0
    dispatch_grace: float = 60.0
    in_flight: int = 32
    max_pending: int = 48
    """Accepted runs not yet ended above which sends wait (0: no limit; see ``Pacer``)."""
    send_timeout: float = 30.0
    settle_timeout: float = 600.0
    """Most seconds to wait for runs to end after the faults (a stall ends the wait sooner)."""
    sample: int = 50
    seed: int = 1
    deadline: float = 0.0
    """Global deadline (s) for the whole run; 0: duration + settle timeout + 240 s."""

    def stall(self) -> float:
        """Seconds with no run ending after which the rest count as stuck: longer than the
        slowest recovery (a prefetched task of a killed worker: the dispatch grace, then the
        reaper's takeover within a lease TTL or two)."""
        return self.dispatch_grace + 2 * self.lease_ttl + 5

    def plan(self) -> Plan:
        kills = [self.kill_every * k for k in range(1, int(self.duration / self.kill_every) + 1)]
        return Plan(
            worker_kills=[t for t in kills if t < self.duration],
            redis_kill9_at=0.3 * self.duration if "kill9" in self.redis_faults else None,
            redis_shutdown_at=0.65 * self.duration if "shutdown" in self.redis_faults else None,
            redis_down_s=self.redis_down,
        )


@dataclass
class Result:
    """Everything a chaos run found, for the table and the exit code."""

    params: Params
    load: Load | None = None
    faults: FaultLog = field(default_factory=FaultLog)
    checks: Checks | None = None
    settle_s: float = 0.0
    wall_s: float = 0.0
    deadline_hit: bool = False
    logs: str = ""

    def problems(self) -> list[str]:
        """Why the run failed; empty when every invariant held."""
        out = ["global deadline hit: the run was cut short"] if self.deadline_hit else []
        if self.load is None or self.checks is None:
            return out or ["the run did not get to its checks"]
        return out + self.checks.problems()


def _progress(log: Callable[[str], None], load: Load, faults: Faults) -> Callable[[], None]:
    def line() -> None:
        c = load.counts()
        log(
            f"[{faults.elapsed():5.1f}s] sent {sum(c.values()) - c['unsent']}"
            f"/{load.conversations * load.messages}: accepted {c['accepted']}, ambiguous "
            f"{c['ambiguous']}, retries {sum(load.retries.values())} | workers "
            f"{len(faults.live_workers())}, kills {len(faults.out.worker_kills)}, deaths "
            f"{len(faults.out.deaths)}, redis {'up' if faults.redis_up.is_set() else 'DOWN'}"
        )

    return line


async def _drive(
    gateway_url: str, r: redis.Redis, load: Load, p: Params, progress: Callable[[], None]
) -> None:
    pacer = Pacer(limit=p.max_pending, max_wait=p.dispatch_grace)
    sending = asyncio.ensure_future(
        send_all(gateway_url, load, p.duration * 0.9, p.send_timeout, p.in_flight, pacer)
    )
    ended: set[str] = set()
    last = time.monotonic()
    up = True
    while not sending.done():
        await asyncio.wait([sending], timeout=0.5)
        accepted = [m.run_id for m in load.all() if m.outcome == "accepted"]
        try:
            ended |= await asyncio.to_thread(_ended, r, [i for i in accepted if i not in ended])
            pacer.pending = len(accepted) - len(ended)
            up = True
        except redis.RedisError:
            if up:  # Redis just went down: let a few held sends meet the outage
                pacer.free = p.in_flight // 2
            up = False
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            progress()
    sending.result()


def _ended(r: redis.Redis, run_ids: list[str]) -> set[str]:
    with r.pipeline(transaction=False) as pipe:
        for run_id in run_ids:
            pipe.hget(keys.run(run_id), "status")
        statuses = pipe.execute()
    return {i for i, s in zip(run_ids, statuses, strict=True) if s in TERMINAL}


def run(p: Params, log: Callable[[str], None] | None = None) -> Result:
    """Run the chaos suite with ``p``; never raises for a broken invariant (see ``problems``).

    A real Ctrl-C (or SIGTERM) stops every process and is re-raised.
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    result = Result(params=p)
    started = time.monotonic()
    deadline = p.deadline or p.duration + p.settle_timeout + 240
    hit = threading.Event()

    def interrupt() -> None:
        hit.set()
        log(f"global deadline of {deadline:.0f}s hit: stopping everything")
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    watchdog = threading.Timer(deadline, interrupt)
    watchdog.daemon = True
    watchdog.start()
    extra = {
        "WALRUS_REAPER_INTERVAL": "1",
        "WALRUS_LEASE_TTL": str(p.lease_ttl),
        "WALRUS_DISPATCH_GRACE": str(p.dispatch_grace),
    }
    try:
        log(f"chaos: starting redis (AOF always), gateway, {p.workers} workers and beat")
        with environment(
            p.workers, p.concurrency, agents={AGENT: agent_toml(p.chunk_delay_ms)}, beat=True,
            env_extra=extra, appendfsync="always", name="chaos",
        ) as env:  # fmt: skip
            result.logs = str(env.tmp)
            load = Load(AGENT, p.conversations, p.messages)
            faults = Faults(env, p.plan(), p.concurrency, log)
            result.load = load
            faults.start()
            r = redis.Redis.from_url(
                env.redis.url, decode_responses=True, socket_timeout=10, socket_connect_timeout=1
            )
            try:
                gateway = env.cluster.gateway_url
                asyncio.run(_drive(gateway, r, load, p, _progress(log, load, faults)))
                while faults.elapsed() < p.duration:  # the rest of the fault plan
                    time.sleep(0.5)
                faults.redis_up.wait(p.redis_down + 30)
                log(f"[{faults.elapsed():5.1f}s] faults over; waiting for runs to end")
                ids = [m.run_id for m in load.all() if m.outcome == "accepted"]
                result.settle_s = settle(
                    r, ids, p.settle_timeout, p.stall(), _settle_tick(log, len(ids))
                )
                wait_clean(r, timeout=p.lease_ttl + 2)
                log(f"[{faults.elapsed():5.1f}s] checking history, runs, streams, leftovers")
                result.checks = check(gateway, r, load, p.sample, p.seed)
            finally:
                watchdog.cancel()  # from here on only cleanup, which the deadline must not cut
                r.close()
                faults.stop()
                result.faults = faults.out
            env.keep = bool(result.problems())
    except KeyboardInterrupt:
        if not hit.is_set():
            raise
        result.deadline_hit = True
    finally:
        watchdog.cancel()
        result.wall_s = time.monotonic() - started
    return result


def _settle_tick(log: Callable[[str], None], total: int) -> Callable[[int], None]:
    """Log the count of terminal runs when it moves (at most every 2 s) or every 15 s."""
    last = {"at": 0.0, "done": -1}

    def tick(done: int) -> None:
        since = time.monotonic() - last["at"]
        if since >= 15 or (since >= 2 and done != last["done"]):
            last.update(at=time.monotonic(), done=done)
            log(f"  runs terminal: {done}/{total}")

    return tick
