"""Real walrus processes for tests: workers, a gateway and beat, each ended by PID."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import kombu.exceptions
import redis
from celery import Celery

from walrus_tasks.redis_server import free_port
from walrus_tasks.redis_url import sync_client


def wait_for(predicate: Any, timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


@dataclass
class Cluster:
    """A set of walrus processes sharing one Redis database and config directory."""

    redis_url: str
    home: Path
    log_dir: Path
    broker_url: str = ""
    """``WALRUS_BROKER_URL`` (empty: the broker is the state Redis)."""
    env_extra: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    gateway_url: str = ""
    port_chosen: bool = False
    """Whether the gateway's port was chosen here (free a moment before), not by the test."""
    port_retries: int = 0

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUS_")}
        env.update(
            WALRUS_REDIS_URL=self.redis_url,
            WALRUS_HOME=str(self.home),
            WALRUS_LOG_FORMAT="json",
            PYTHONUNBUFFERED="1",
            # One chunk event per token, as many tests count them; tests/test_coalesce.py
            # turns coalescing on.
            WALRUS_CHUNK_FLUSH_MS="0",
            # Most test agents use the mock model: a worker's start skips seconds of SDK
            # imports, and a pool process that calls a fake provider imports its SDK then.
            WALRUS_WORKER_PRELOAD_SDKS="false",
        )
        if self.broker_url:
            env["WALRUS_BROKER_URL"] = self.broker_url
        env.update(self.env_extra)
        return env

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        log = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", *args],
            env=env or self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so a test can kill -9 the whole worker (parent + children)
        )
        log.close()

    def start_worker(
        self, name: str, queues: str = "walrus.runs,walrus.tools,walrus.control",
        concurrency: int = 2, module: str = "worker",
    ) -> None:  # fmt: skip
        self._spawn(
            name,
            [module, f"--queues={queues}", f"--concurrency={concurrency}",
             f"--hostname={name}@test"],
        )  # fmt: skip

    def start_gateway(self, port: int | None = None) -> str:
        """Start the gateway (on ``port``, else a free one); its URL."""
        self.port_chosen = port is None
        port = port or free_port()
        env = self.env()
        env["WALRUS_GATEWAY_PORT"] = str(port)
        self._spawn("gateway", ["gateway"], env)
        self.gateway_url = f"http://127.0.0.1:{port}"
        return self.gateway_url

    def _port_taken(self) -> bool:
        """The gateway exited because another process bound its free port first; then it is
        started again on another (``free_port`` says which port was free a moment ago only)."""
        p = self.procs.get("gateway")
        if not self.port_chosen or p is None or p.poll() is None or self.port_retries >= 3:
            return False
        if "address already in use" not in (self.log_dir / "gateway.log").read_text()[-3000:]:
            return False
        self.port_retries += 1
        self.start_gateway()
        return True

    def start_beat(self, name: str = "beat") -> None:
        self._spawn(name, ["beat"])

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for the gateway's /healthz and for every worker to answer a Celery ping.

        A start is mostly imports (3 to 4 CPU-seconds each): on two shared cores under load it
        has been seen to take over 30 s, hence the bound of 60 s.
        """
        workers = {
            f"{n}@test"
            for n, p in self.procs.items()
            if n.startswith("worker") and not getattr(p, "_walrus_killed", False)
        }
        if self.gateway_url:

            def healthy() -> bool:
                if self._port_taken():
                    return False
                self.check_alive()
                try:
                    return httpx.get(self.gateway_url + "/healthz", timeout=1).status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(healthy, timeout, 0.1, "gateway /healthz")
        if workers:
            wait_for(
                lambda: self.pinged(len(workers)) >= workers, timeout, 0.1,
                f"workers {sorted(workers)}",
            )  # fmt: skip

    def pinged(self, expect: int | None = None) -> set[str]:
        """Hostnames of the workers that answer a Celery ping on this cluster's broker.

        The ping waits 0.5 s for replies, or only until ``expect`` workers have answered.
        """
        self.check_alive()
        try:
            with self.control_app() as app:
                replies = app.control.ping(timeout=0.5, limit=expect)
        except (redis.ConnectionError, kombu.exceptions.OperationalError):
            return set()  # a broker that is (re)starting answers nothing yet: ask again
        return {k for reply in replies for k in reply}

    def control_app(self) -> Celery:
        """A Celery app on this cluster's broker (a Sentinel group or RabbitMQ too)."""
        from walrus_tasks.celery_app import broker_config

        app = Celery(set_as_current=False)
        app.conf.update(broker_config(self.broker_url or self.redis_url, 3600))
        return app

    def enqueue(self, agent: str, sender: str) -> str:
        """Accept a message the way submit() does, but send no drain message for it."""
        from walrus_tasks import runs
        from walrus_tasks.submit import new_run_id

        run_id = new_run_id(agent, sender)
        assert runs.enqueue(self.redis(), run_id, agent, sender, "go", "enqueue", {}).state == "ok"
        return run_id

    def send_drains(self, agent: str, sender: str, n: int) -> None:
        """Send ``n`` drain messages, as submit() sends one for an idle conversation."""
        from walrus_tasks.celery_app import DRAIN, RUNS_QUEUE

        with self.control_app() as app:
            for _ in range(n):
                app.send_task(DRAIN, args=(agent, sender), queue=RUNS_QUEUE)

    def check_alive(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None and not getattr(p, "_walrus_killed", False):
                tail = (self.log_dir / f"{name}.log").read_text()[-3000:]
                raise AssertionError(f"{name} exited with {p.returncode}:\n{tail}")

    def kill9(self, name: str) -> None:
        """SIGKILL the process group of ``name`` (a worker's parent and its pool children)."""
        p = self.procs[name]
        p._walrus_killed = True  # type: ignore[attr-defined]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)

    def stop(self, names: Sequence[str] | None = None) -> None:
        """SIGTERM ``names`` (default: every process), SIGKILL what has not exited in 10 s."""
        procs = [p for n, p in self.procs.items() if names is None or n in names]
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    # --- client side -------------------------------------------------------------------------

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.gateway_url, timeout=30)

    def redis(self) -> redis.Redis:
        return sync_client(self.redis_url, decode_responses=True)

    def send(self, agent: str, content: str, sender: str, **extra: Any) -> str:
        with self.http() as c:
            resp = c.post(
                f"/v1/agents/{agent}/messages", json={"content": content, "sender": sender, **extra}
            )
        assert resp.status_code == 202, resp.text
        return str(resp.json()["run_id"])

    def events(
        self, run_id: str, last_event_id: str | None = None, timeout: float = 60
    ) -> list[tuple[str, dict[str, Any]]]:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with (
            self.http() as c,
            c.stream("GET", f"/v1/runs/{run_id}/events", headers=headers, timeout=timeout) as resp,
        ):
            assert resp.status_code == 200, resp.read()
            return list(parse_sse(resp.iter_lines()))

    def run(self, run_id: str) -> dict[str, Any]:
        """``GET /v1/runs/{run_id}``: the run as it is now, whatever face started it."""
        with self.http() as c:
            resp = c.get(f"/v1/runs/{run_id}")
        assert resp.status_code == 200, resp.text
        info: dict[str, Any] = resp.json()
        return info

    def wait_run(self, run_id: str, timeout: float = 60) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            info = self.run(run_id)
            return info if info["status"] in ("succeeded", "failed", "cancelled") else None

        return wait_for(done, timeout, 0.05, f"run {run_id} to end")  # type: ignore[no-any-return]

    def history(self, agent: str, sender: str) -> list[dict[str, Any]]:
        with self.http() as c:
            resp = c.get(f"/v1/agents/{agent}/conversations/{sender}/history")
        assert resp.status_code == 200, resp.text
        return list(resp.json()["messages"])


@contextmanager
def running(
    cluster: Cluster,
    workers: Sequence[str] = ("worker1",),
    concurrency: int = 2,
    gateway: bool = True,
    beat: bool = False,
) -> Iterator[Cluster]:
    """Start the gateway, ``workers`` (and beat), wait until they answer; stop them all on exit.

    Everything in ``cluster.procs`` is stopped, so processes a test starts later go too.
    """
    try:
        if gateway:
            cluster.start_gateway()
        for name in workers:
            cluster.start_worker(name, concurrency=concurrency)
        if beat:
            cluster.start_beat()
        cluster.wait_ready()
        yield cluster
    finally:
        cluster.stop()


@contextmanager
def own_processes(cluster: Cluster) -> Iterator[Cluster]:
    """The processes a test starts on a module's cluster, stopped and forgotten when it ends.

    A module then starts its gateway once, while each test still starts (and kills) workers
    and beat of its own, as it would on a cluster of its own.
    """
    before = set(cluster.procs)
    try:
        yield cluster
    finally:
        started = [n for n in cluster.procs if n not in before]
        cluster.stop(started)
        for name in started:
            del cluster.procs[name]


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(id, event)`` pairs of an SSE body; comments (keep-alives) are skipped."""
    entry_id, data = "", ""
    for line in lines:
        if line.startswith(":"):
            continue
        if line.startswith("id: "):
            entry_id = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            yield entry_id, json.loads(data)
            entry_id, data = "", ""
