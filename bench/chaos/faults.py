"""The faults, and the restart policy: a thread that ``kill -9``s workers on a schedule, kills
and shuts down Redis once each, and restarts any process that died by itself."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from bench.procs import Env
from walrus_tasks.redis_server import start_redis

Log = Callable[[str], None]
"""Print one progress line (stderr)."""


@dataclass
class Plan:
    """When each fault happens, in seconds after the load starts."""

    worker_kills: list[float]
    redis_kill9_at: float | None
    redis_shutdown_at: float | None
    redis_down_s: float = 2.0
    """How long Redis stays down before it is started again (same port and data dir)."""


@dataclass
class FaultLog:
    """What the faults thread did and saw."""

    worker_kills: list[str] = field(default_factory=list)
    redis_restarts: list[str] = field(default_factory=list)
    deaths: list[str] = field(default_factory=list)
    """Processes that exited by themselves (name, exit code, time): each was restarted."""
    errors: list[str] = field(default_factory=list)
    """Faults that could not be applied (e.g. Redis did not come back)."""


class Faults(threading.Thread):
    """Applies a :class:`Plan` to an :class:`Env` from ``start()`` until ``stop()``.

    Supervision keeps going after the plan is done, until ``stop()``: a worker that dies on its
    own (Redis restart, bug) is replaced, as a container's on-failure restart policy would.
    """

    def __init__(self, env: Env, plan: Plan, concurrency: int, log: Log) -> None:
        super().__init__(name="chaos-faults", daemon=True)
        self.env, self.plan, self.concurrency, self.log = env, plan, concurrency, log
        self.out = FaultLog()
        self._halt = threading.Event()
        self._t0 = time.monotonic()
        self._next_worker = 1 + sum(n.startswith("worker") for n in env.cluster.procs)
        self._gateway_port = int(env.cluster.gateway_url.rsplit(":", 1)[1])
        self.redis_up = threading.Event()
        self.redis_up.set()

    def stop(self, timeout: float = 30.0) -> None:
        """End the thread (a Redis restart in progress finishes first, bounded)."""
        self._halt.set()
        self.join(timeout)

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def live_workers(self) -> list[str]:
        """Names of the worker processes running now."""
        procs = self.env.cluster.procs
        return [n for n, p in procs.items() if n.startswith("worker") and p.poll() is None]

    def run(self) -> None:
        self._t0 = time.monotonic()
        todo: list[tuple[float, str]] = [(t, "worker") for t in self.plan.worker_kills]
        if self.plan.redis_kill9_at is not None:
            todo.append((self.plan.redis_kill9_at, "redis-kill9"))
        if self.plan.redis_shutdown_at is not None:
            todo.append((self.plan.redis_shutdown_at, "redis-shutdown"))
        todo.sort()
        while not self._halt.is_set():
            now = self.elapsed()
            while todo and todo[0][0] <= now:
                _, what = todo.pop(0)
                try:
                    self._apply(what)
                except Exception as e:  # a fault that fails is reported, never fatal
                    self.out.errors.append(f"{what} at {now:.1f}s: {e!r}")
                    self.log(f"[{now:5.1f}s] fault {what} failed: {e!r}")
            try:
                self._supervise()
            except Exception as e:
                self.out.errors.append(f"restart at {now:.1f}s: {e!r}")
            self._halt.wait(0.25)

    def _apply(self, what: str) -> None:
        if what == "worker":
            self._kill_worker()
        else:
            self._restart_redis(kill9=what == "redis-kill9")

    def _kill_worker(self) -> None:
        live = self.live_workers()
        if not live:
            self.out.errors.append(f"no live worker to kill at {self.elapsed():.1f}s")
            return
        name = live[0]  # the oldest: it has been under load longest
        pid = self.env.cluster.procs[name].pid
        self.env.cluster.kill9(name)
        new = self._start_worker()
        line = f"kill -9 process group of {name} (pid {pid}); started {new}"
        self.out.worker_kills.append(f"{self.elapsed():.1f}s {line}")
        self.log(f"[{self.elapsed():5.1f}s] {line}")

    def _start_worker(self) -> str:
        name = f"worker{self._next_worker}"
        self._next_worker += 1
        self.env.cluster.start_worker(name, concurrency=self.concurrency)
        return name

    def _restart_redis(self, kill9: bool) -> None:
        server = self.env.redis
        how = "kill -9" if kill9 else "SHUTDOWN"
        self.redis_up.clear()
        try:
            if kill9:
                server.process.send_signal(signal.SIGKILL)
            else:
                # A clean SHUTDOWN fsyncs the AOF; the connection closes under the command.
                with (
                    contextlib.suppress(redis.ConnectionError),
                    redis.Redis.from_url(server.url, socket_timeout=5) as r,
                ):
                    r.shutdown()
            try:
                code = server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                code = server.process.wait(timeout=5)
            self.log(f"[{self.elapsed():5.1f}s] redis {how} (exit {code}); down for "
                     f"{self.plan.redis_down_s:.0f}s")  # fmt: skip
            self._halt.wait(self.plan.redis_down_s)
            t = time.monotonic()
            self.env.redis = start_redis(server.data_dir, port=server.port, appendfsync="always")
        finally:
            self.redis_up.set()
        line = f"redis {how}, restarted in {time.monotonic() - t:.1f}s (same port, AOF)"
        self.out.redis_restarts.append(f"{self.elapsed():.1f}s {line}")
        self.log(f"[{self.elapsed():5.1f}s] {line}")

    def _supervise(self) -> None:
        """Restart every process that exited without being killed by us."""
        cluster = self.env.cluster
        for name, p in list(cluster.procs.items()):
            if p.poll() is None or getattr(p, "_walrus_killed", False):
                continue
            p._walrus_killed = True  # type: ignore[attr-defined]  # handled: not again
            tail = _why_exited(cluster.log_dir / f"{name}.log")
            if name.startswith("worker"):
                new = self._start_worker()
            elif name == "gateway":
                new = "gateway"
                cluster.start_gateway(port=self._gateway_port)  # clients keep its URL
            else:
                new = name
                cluster.start_beat(name)
            line = f"{name} died by itself (exit {p.returncode}): started {new}; {tail}"
            self.out.deaths.append(f"{self.elapsed():.1f}s {line}")
            self.log(f"[{self.elapsed():5.1f}s] {line}")


def _why_exited(path: os.PathLike[str]) -> str:
    """The message of the last critical (else error) record in a process's JSON log, else its
    last line: usually why it exited."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 50_000))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    found: dict[str, str] = {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("level") in ("critical", "error"):
            found[record["level"]] = str(record.get("msg", ""))[:200]
    return found.get("critical") or found.get("error") or (lines[-1][:200] if lines else "")
