"""Servers for the high-availability tests: a Redis Sentinel group and a private RabbitMQ node.

Everything listens on 127.0.0.1 on free ports, keeps its files in a temporary directory, and is
stopped by the PID (process group) it was started with: never the machine's Redis on 6379, its
RabbitMQ on 5672 or its epmd on 4369.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.cluster import wait_for
from walrus_tasks.redis_server import RedisServer, free_port, redis_server_binary, start_redis

MASTER_NAME = "walrus"
DOWN_AFTER_MS = 1000
"""How long the sentinels wait before they call the master down: most of the failover time."""


def _stop_group(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Signal the process group of ``process`` (started with its own session), then reap it."""
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@dataclass
class SentinelGroup:
    """A master, one replica and three sentinels watching them under ``MASTER_NAME``."""

    root: Path
    servers: list[RedisServer] = field(default_factory=list)
    sentinels: list[tuple[int, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The ``WALRUS_REDIS_URL`` of the group."""
        hosts = ",".join(f"127.0.0.1:{port}" for port, _ in self.sentinels)
        return f"sentinel://{hosts}/{MASTER_NAME}/0"

    def start(self) -> SentinelGroup:
        """Start the master, the replica (in sync) and the sentinels (agreed on both)."""
        master = start_redis(self.root / "master", appendonly=True)
        replica = start_redis(self.root / "replica", appendonly=True)
        self.servers = [master, replica]
        client(replica.port).replicaof("127.0.0.1", master.port)
        wait_for(lambda: in_sync(replica.port), 20, 0.05, "the replica to sync")
        for n in range(3):
            self.sentinels.append(self._start_sentinel(n, master.port))
        wait_for(self._agreed, 30, 0.1, "the sentinels to see each other and the replica")
        return self

    def _start_sentinel(self, n: int, master_port: int) -> tuple[int, subprocess.Popen[bytes]]:
        port = free_port()
        directory = self.root / f"sentinel-{n}"
        directory.mkdir(parents=True)
        conf = directory / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\nlogfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        process = subprocess.Popen(
            [redis_server_binary(), str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        return port, process

    def _agreed(self) -> bool:
        for port, _ in self.sentinels:
            try:
                info: Any = client(port).sentinel_master(MASTER_NAME)
            except redis.RedisError:
                return False
            if int(info["num-other-sentinels"]) < 2 or int(info["num-slaves"]) < 1:
                return False
        return True

    def master_port(self) -> int:
        """The port of the server the sentinels call master now."""
        port, _ = self.sentinels[0]
        _, master = client(port).sentinel_get_master_addr_by_name(MASTER_NAME)  # type: ignore[misc]
        return int(master)

    def kill9_master(self) -> int:
        """SIGKILL the current master; its port."""
        port = self.master_port()
        server = next(s for s in self.servers if s.port == port)
        server.process.kill()
        server.process.wait()
        return port

    def stop(self) -> None:
        """Stop the sentinels, then the servers."""
        for _, process in self.sentinels:
            _stop_group(process)
        for server in self.servers:
            server.stop()


def client(port: int) -> redis.Redis:
    """A client of the server (or sentinel) on ``port``."""
    return redis.Redis(port=port, decode_responses=True, socket_timeout=2)


def in_sync(replica_port: int) -> bool:
    """True when the replica on ``replica_port`` is linked to its master and loaded."""
    info: Any = client(replica_port).info("replication")
    return bool(info.get("master_link_status") == "up" and not info.get("master_sync_in_progress"))


# --- RabbitMQ -----------------------------------------------------------------------------------


def rabbitmq_server_binary() -> str | None:
    """The ``rabbitmq-server`` start script (not Debian's wrapper, which switches user)."""
    direct = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    if direct.exists():
        return str(direct)
    return shutil.which("rabbitmq-server")


@dataclass
class RabbitNode:
    """A private RabbitMQ node: its own node name, ports, epmd, data and config."""

    root: Path
    port: int = 0
    epmd: subprocess.Popen[bytes] | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``WALRUS_BROKER_URL`` of the node (the default ``guest`` user, on loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self, binary: str) -> RabbitNode:
        """Start epmd and the node; wait until it accepts AMQP connections."""
        self.port, dist_port, epmd_port = free_port(), free_port(), free_port()
        self.root.mkdir(parents=True, exist_ok=True)
        for name in ("mnesia", "log", "home"):
            (self.root / name).mkdir(exist_ok=True)
        (self.root / "rabbitmq.conf").write_text("loopback_users.guest = true\n")
        (self.root / "enabled_plugins").write_text("[].\n")
        (self.root / "rabbitmq-env.conf").write_text("")  # not the machine's
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root / "home"),  # its own Erlang cookie
            "ERL_EPMD_PORT": str(epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODENAME": f"walrus-test-{os.getpid()}-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.root / "log"),
            "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(self.root / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.root / "rabbit.pid"),
            "LANG": "C.UTF-8",
        }
        # Our own epmd, in the foreground so that its PID is ours to stop; the node finds it on
        # ERL_EPMD_PORT and starts none of its own.
        self.epmd = subprocess.Popen(
            ["epmd", "-port", str(epmd_port), "-address", "127.0.0.1"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        log = (self.root / "server.out").open("ab")
        self.process = subprocess.Popen(
            [binary], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        wait_for(self._accepts, 90, 0.2, "the RabbitMQ node to accept connections")
        return self

    def _accepts(self) -> bool:
        from kombu import Connection

        assert self.process is not None
        if self.process.poll() is not None:
            tail = (self.root / "server.out").read_text()[-3000:]
            raise AssertionError(f"rabbitmq-server exited with {self.process.returncode}:\n{tail}")
        try:
            with Connection(self.url, connect_timeout=1) as conn:  # type: ignore[no-untyped-call]
                conn.connect()  # type: ignore[no-untyped-call]
            return True
        except Exception:  # kombu raises socket and AMQP errors of many kinds while it boots
            return False

    def stop(self) -> None:
        """Stop the node, then its epmd."""
        for process in (self.process, self.epmd):
            if process is not None:
                _stop_group(process)
