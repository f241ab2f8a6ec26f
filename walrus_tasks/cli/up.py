"""``walrus up``: the development all-in-one — Redis, gateway, workers and beat in one terminal."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

import httpx
import typer
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from walrus_tasks.cli.common import RET_CONFIG, RET_ERROR, RET_OK, console, err, fail, gateway_url
from walrus_tasks.cli.processes import flower_args, flower_env, module_argv, worker_args
from walrus_tasks.cli.supervisor import TAIL_LINES, Supervisor
from walrus_tasks.cli.up_state import read_state, remove_state, write_state
from walrus_tasks.config import DEFAULT_AGENT, Config, init_home, load_config
from walrus_tasks.errors import ConfigError, WalrusError
from walrus_tasks.redis_server import RedisServer, reachable, start_redis
from walrus_tasks.redis_url import describe, is_cluster
from walrus_tasks.settings import Settings, get_settings

RUNS_QUEUES = "walrus.runs,walrus.control"
TOOLS_QUEUES = "walrus.tools"
READY_TIMEOUT = 60.0
"""Seconds the gateway has to answer ``/healthz`` after start."""
DEV_CONCURRENCY = 4
"""Pool size of each dev worker (Celery's default, the CPU count, is a lot on a laptop)."""


def up(
    concurrency: Annotated[
        int, typer.Option(help="Pool size of each worker (runs, tools).", min=1)
    ] = DEV_CONCURRENCY,
    flower: Annotated[bool, typer.Option("--flower", help="Also run Flower.")] = False,
    flower_port: Annotated[int, typer.Option(help="Port of Flower.")] = 5555,
) -> None:
    """Run everything for development, restarting what exits; Ctrl-C stops it all."""
    settings = get_settings()
    home = settings.home.resolve()
    url = gateway_url()
    _refuse_if_busy(home, url, flower_port if flower else None)
    if init_home(home):
        err.print(f"created a starter config in {escape(str(home))}")
    try:
        config = load_config(home)
    except ConfigError as e:
        fail(f"bad config: {e.message}", RET_CONFIG)

    supervisor = Supervisor(env={})
    code = RET_ERROR
    with supervisor.stop_on_signals():
        try:
            redis_url, where = _redis(supervisor, home, settings)
            supervisor.env = {
                **os.environ,
                "WALRUS_REDIS_URL": redis_url,
                "WALRUS_HOME": str(home),
                "PYTHONUNBUFFERED": "1",
                **flower_env(),
            }
            supervisor.on_change = lambda: write_state(
                home,
                {
                    "pid": os.getpid(),
                    "redis_url": redis_url,
                    "gateway_url": url,
                    "children": supervisor.snapshot(),
                },
            )
            children = {
                "gateway": module_argv("gateway"),
                "runs": module_argv("worker", *worker_args(RUNS_QUEUES, concurrency, name="runs")),
                "tools": module_argv(
                    "worker", *worker_args(TOOLS_QUEUES, concurrency, name="tools")
                ),
                "beat": module_argv("beat"),
            }
            if flower:
                children["flower"] = module_argv("celery", *flower_args(flower_port))
            for name, argv in children.items():
                if not supervisor.stop_requested.is_set():
                    supervisor.spawn(name, argv)

            def ready() -> None:
                flower_url = f"http://127.0.0.1:{flower_port}" if flower else None
                console.print(_panel(url, redis_url, where, config, flower_url))

            broker = settings.broker_url or redis_url  # a cluster's state needs a broker apart

            def all_up() -> bool:  # the banner means "send a message now": workers included
                return _healthy(url) and workers_ready(broker, ("runs", "tools"))

            code = watch(supervisor, url, ready, all_up)
        except WalrusError as e:
            err.print(f"[red]error:[/] {escape(e.message)}")
        finally:
            supervisor.on_change = None
            supervisor.stop()
            remove_state(home)
    raise typer.Exit(code)


def _refuse_if_busy(home: Path, url: str, flower_port: int | None) -> None:
    """Exit with a message, having written nothing, if this ``walrus up`` cannot start.

    Another ``walrus up`` of the same config directory runs, something answers or listens on
    the gateway's port, or (with ``--flower``) on Flower's.
    """
    running = read_state(home)
    if running:
        fail(
            f"walrus up already runs for {home} (pid {running['pid']}, gateway "
            f"{running.get('gateway_url', '?')}); stop it first"
        )
    if _healthy(url):
        fail(f"a gateway already answers at {url}; stop it or set WALRUS_GATEWAY_PORT")
    settings = get_settings()
    if not _bindable(settings.gateway_host, settings.gateway_port):
        fail(
            f"port {settings.gateway_port} on {settings.gateway_host} is in use; "
            "stop what listens there or set WALRUS_GATEWAY_PORT"
        )
    if flower_port is not None and not _bindable("127.0.0.1", flower_port):
        fail(f"Flower's port {flower_port} is in use; pass --flower-port")


def _bindable(host: str, port: int) -> bool:
    """True if a server could listen on ``host:port`` now (as uvicorn would: SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host.strip("[]"), port))
        except OSError:
            return False
    return True


def _redis(supervisor: Supervisor, home: Path, settings: Settings) -> tuple[str, str]:
    """The Redis URL the children get and where it is, for the banner.

    An explicit ``WALRUS_REDIS_URL`` (set in the environment) is used when a Redis answers
    there; else an embedded Redis is started, supervised like the other children (it restarts
    on its own data directory and port). It listens where an explicit loopback URL points, so
    that URL stays true in every shell; with no explicit URL on a free port (never on a Redis
    someone else runs at the default address): other shells' ``walrus status`` finds it in the
    state file (walrus_tasks/cli/up_state.py).
    """
    explicit = "redis_url" in settings.model_fields_set
    if explicit and reachable(settings.redis_url):
        return settings.redis_url, "WALRUS_REDIS_URL"
    if explicit and is_cluster(settings.redis_url):  # one embedded Redis is no stand-in for it
        raise WalrusError(f"no node of the Redis Cluster at {describe(settings.redis_url)} answers")
    if explicit:
        err.print(f"no Redis answers at {settings.redis_url}; starting an embedded one")
    else:
        err.print("WALRUS_REDIS_URL is not set; starting an embedded Redis")
    server, url = _start_embedded(home / "redis", settings.redis_url if explicit else None)

    def restart() -> subprocess.Popen[bytes]:
        return start_redis(server.data_dir, port=server.port, tie_to_parent=True).process

    def log_tail() -> list[str]:
        log = server.data_dir / "redis.log"
        return log.read_text(errors="replace").splitlines()[-TAIL_LINES:] if log.exists() else []

    supervisor.add("redis", restart, process=server.process, last=True, log_tail=log_tail)
    return url, f"embedded, data in {server.data_dir}"


def _start_embedded(data_dir: Path, url: str | None) -> tuple[RedisServer, str]:
    """Start an embedded Redis that dies with this process; return it and its URL.

    It listens where ``url`` points when that is a loopback address, so the URL every other
    shell has (``walrus status``, ``walrus send``) is true; else on a free port.
    """
    parsed = urlsplit(url or "")
    if parsed.scheme == "redis" and parsed.hostname in ("127.0.0.1", "localhost") and parsed.port:
        try:
            return start_redis(data_dir, port=parsed.port, tie_to_parent=True), url or ""
        except WalrusError:
            pass  # the port is taken by something that is not Redis: use a free one
    server = start_redis(data_dir, tie_to_parent=True)
    return server, server.url


def workers_ready(broker_url: str, names: tuple[str, ...]) -> bool:
    """True when a worker named ``<name>@…`` answers a Celery ping for each of ``names``.

    Asked on the broker at ``broker_url`` (Redis, a Sentinel group or RabbitMQ).
    """
    from celery import Celery

    from walrus_tasks.celery_app import broker_config

    try:
        with Celery(set_as_current=False) as app:
            app.conf.update(broker_config(broker_url, 3600))
            replies = app.control.ping(timeout=0.5)
    except Exception:  # Celery raises kombu/redis errors of many kinds: not ready yet
        return False
    answered = {host.split("@", 1)[0] for reply in replies for host in reply}
    return set(names) <= answered


def watch(
    supervisor: Supervisor,
    url: str,
    on_ready: Callable[[], None],
    is_ready: Callable[[], bool] | None = None,
) -> int:
    """Wait until ready, call ``on_ready`` once, then supervise until a stop or a failure.

    Ready is ``is_ready()``, by default the gateway answering ``/healthz``. Children that exit
    are restarted (walrus_tasks/cli/supervisor.py).

    Returns RET_OK after a stop signal; RET_ERROR (RET_CONFIG for a gateway with a bad config)
    when a child fails too often or the gateway never gets healthy.
    """
    ready = False
    deadline = time.monotonic() + READY_TIMEOUT
    while not supervisor.stop_requested.is_set():
        failure = supervisor.check()
        if failure:
            err.print(f"[red]{escape(failure.message())}[/]")
            child = failure.child
            return (
                RET_CONFIG
                if (child.name, child.last_exit) == ("gateway", RET_CONFIG)
                else RET_ERROR
            )
        if not ready:
            if (is_ready or (lambda: _healthy(url)))():
                ready = True
                on_ready()
            elif time.monotonic() > deadline:
                err.print(
                    f"[red]the gateway ({url}/healthz) and workers were not ready in "
                    f"{READY_TIMEOUT:.0f} s[/]"
                )
                return RET_ERROR
        supervisor.stop_requested.wait(0.2)
    err.print("stopping…")
    return RET_OK


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _panel(url: str, redis_url: str, where: str, config: Config, flower: str | None) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("gateway", url)
    grid.add_row("console", f"{url}/console")
    grid.add_row("redis", f"{escape(describe(redis_url))} ({escape(where)})")
    grid.add_row("config", escape(str(config.home)))
    agents = ", ".join(f"{a.name} ({a.model})" for a in config.agents.values())
    grid.add_row("agents", escape(agents) or "[yellow]none — add agents/<name>.toml[/]")
    if flower:
        grid.add_row("flower", flower)
    first = DEFAULT_AGENT if DEFAULT_AGENT in config.agents else next(iter(config.agents), "NAME")
    grid.add_row("try", f"walrus chat {first}\nwalrus status")
    return Panel(
        grid,
        title="walrus is up",
        subtitle="restarts what exits; Ctrl-C stops everything",
        expand=False,
    )
