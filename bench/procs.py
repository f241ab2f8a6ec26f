"""The benchmark's own Redis, config directory and walrus processes, all stopped by PID."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Literal

from celery import Celery

from tests.cluster import Cluster
from tests.redis_cluster import RedisClusterGroup
from walrus_tasks.redis_server import RedisServer, start_redis

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
"""The cores this bench's processes may use (their affinity)."""
AGENT = "bench"
LIFTED = {
    "WALRUS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT": "1000000",
    "WALRUS_GATEWAY_MAX_STREAMS_PER_CLIENT": "1000000",
}
"""The per-address caps of the security issue, lifted for the bench: every client is on
loopback."""
REPLY = "pong from the bench agent"


BENCH_AGENT = f"""
model = "mock"
description = "benchmark agent: replies at once"
[mock]
reply = "{REPLY}"
chunk_delay_ms = 0
"""


def write_home(home: Path, agents: dict[str, str] | None = None, config_toml: str = "") -> Path:
    """A config directory with ``agents`` (name -> TOML body), by default the benchmark's one
    agent (mock model, no delay), and ``config_toml`` (providers, tenants)."""
    (home / "agents").mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(textwrap.dedent(config_toml))
    for name, body in (agents or {AGENT: BENCH_AGENT}).items():
        (home / "agents" / f"{name}.toml").write_text(textwrap.dedent(body))
    return home


State = Literal["one", "apart", "cluster"]
"""Where the bench keeps state and broker: one Redis for both (``one``, the default), a Redis
each (``apart``), or the state on a Redis Cluster of 3 masters and 3 replicas and the broker
on a Redis of its own (``cluster``)."""


@dataclass
class Env:
    """What a measurement needs: the Redis URL, the gateway URL and the processes."""

    redis: RedisServer
    """The state Redis; with the state on a cluster, the broker's."""
    cluster: Cluster
    tmp: Path
    keep: bool = False
    """Keep the temp directory (logs) even after a clean exit: the caller found a problem."""
    broker: RedisServer | None = None
    """The broker's Redis, when it is not the state's."""
    state_cluster: RedisClusterGroup | None = None
    """The Redis Cluster of the state (``State`` ``cluster``)."""

    @property
    def redis_url(self) -> str:
        """The state's URL (``WALRUS_REDIS_URL``)."""
        return self.cluster.redis_url

    @property
    def gateway_url(self) -> str:
        return self.cluster.gateway_url

    def celery_app(self) -> Celery:
        """The walrus Celery app (same config as gateway and workers) on the private Redis.

        This is ``walrus_tasks.celery_app.app`` itself, the one ``submit()`` uses; it is built
        from the settings at its first import, so that import must come after this point:
        fail rather than send to some other Redis.
        """
        os.environ["WALRUS_REDIS_URL"] = self.redis_url
        os.environ["WALRUS_HOME"] = str(self.cluster.home)
        from walrus_tasks.settings import get_settings

        get_settings.cache_clear()
        from walrus_tasks.celery_app import app

        if app.conf.broker_url != self.redis_url:
            raise RuntimeError(
                f"walrus_tasks.celery_app was imported before the bench Redis started "
                f"(broker {app.conf.broker_url}, want {self.redis_url})"
            )
        return app


def group_cpu(pgid: int) -> float:
    """User + system CPU seconds of the live processes of process group ``pgid`` (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # after the name: state, ppid, pgrp, ...
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def cpu_seconds(env: Env) -> dict[str, float]:
    """CPU seconds used so far by each kind of process: gateway, workers (parents and pool
    children), redis and this client. Subtract two snapshots to get one phase's share."""
    out = {"gateway": 0.0, "workers": 0.0, "redis": 0.0}
    if not os.path.isdir("/proc"):
        return {}
    for name, p in env.cluster.procs.items():
        kind = "gateway" if name == "gateway" else "workers"
        out[kind] += group_cpu(p.pid)  # each was started in a session (and group) of its own
    tick = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{env.redis.process.pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    out["redis"] = (int(fields[11]) + int(fields[12])) / tick
    t = os.times()
    out["bench client"] = t.user + t.system
    return out


class Phase:
    """Wall time and CPU seconds per process kind of one phase (summed over its rounds)."""

    def __init__(self, env: Env, name: str, into: dict[str, dict[str, float]]) -> None:
        self.env, self.name, self.into = env, name, into

    def __enter__(self) -> None:
        self.cpu0, self.t0 = cpu_seconds(self.env), time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        wall = time.perf_counter() - self.t0
        cpu1 = cpu_seconds(self.env)
        spent = {"wall": wall} | {k: cpu1[k] - self.cpu0[k] for k in cpu1}
        before = self.into.get(self.name, {})  # a phase of rounds adds them up
        self.into[self.name] = {k: before.get(k, 0.0) + v for k, v in spent.items()}


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def environment(
    workers: int,
    concurrency: int,
    timeout: float = 60.0,
    *,
    agents: dict[str, str] | None = None,
    beat: bool = False,
    env_extra: dict[str, str] | None = None,
    appendfsync: str = "everysec",
    name: str = "bench",
    config_toml: str = "",
    state: State = "one",
) -> Iterator[Env]:
    """Start Redis, a gateway, ``workers`` worker processes (and beat); stop them all on exit.

    ``agents`` are written to the config directory (default: the benchmark agent),
    ``env_extra`` goes to every walrus process. Whatever ``env.redis`` and ``env.cluster.procs``
    hold on the way out is stopped, so a caller may restart Redis or add processes. The temp
    directory (Redis data, config, process logs) is removed after a clean run and kept (its
    path printed) after a failure, for the logs.
    """
    previous = signal.signal(signal.SIGTERM, _sigterm)
    tmp = Path(tempfile.mkdtemp(prefix=f"walrus-{name}-"))
    env: Env | None = None
    server: RedisServer | None = None
    broker: RedisServer | None = None
    group: RedisClusterGroup | None = None
    cluster: Cluster | None = None
    ok = False
    try:
        server = start_redis(tmp / "redis", appendfsync=appendfsync)
        state_url, broker_url = server.url, ""
        if state == "apart":
            broker = start_redis(tmp / "broker", appendfsync=appendfsync)
            broker_url = broker.url
        elif state == "cluster":
            group = RedisClusterGroup(tmp / "state-cluster").start()
            state_url, broker_url = group.url, server.url
        logs = tmp / "logs"
        logs.mkdir()
        cluster = Cluster(
            redis_url=state_url,
            broker_url=broker_url,
            home=write_home(tmp / "home", agents, config_toml),
            log_dir=logs,
            env_extra=dict(env_extra or {}),
        )
        env = Env(redis=server, cluster=cluster, tmp=tmp, broker=broker, state_cluster=group)
        cluster.start_gateway()
        for i in range(1, workers + 1):
            cluster.start_worker(f"worker{i}", concurrency=concurrency)
        if beat:
            cluster.start_beat()
        cluster.wait_ready(timeout=timeout)
        yield env
        ok = True
    finally:
        try:
            if cluster is not None:
                cluster.stop()
        finally:
            if env is not None:
                server = env.redis  # the one running now, if the caller restarted Redis
            if server is not None:
                server.stop()
            for other in (broker, group):
                if other is not None:
                    other.stop()
            signal.signal(signal.SIGTERM, previous)
            if ok and not (env is not None and env.keep):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                print(f"walrus {name}: logs kept in {tmp}", flush=True)
