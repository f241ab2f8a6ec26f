"""``walrus up``: the development all-in-one — Redis, gateway, workers and beat in one terminal."""

from __future__ import annotations

import os
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
from walrus_tasks.cli.processes import flower_args, module_argv, worker_args
from walrus_tasks.cli.supervisor import Supervisor
from walrus_tasks.config import DEFAULT_AGENT, Config, init_home, load_config
from walrus_tasks.errors import ConfigError, WalrusError
from walrus_tasks.redis_server import RedisServer, reachable, start_redis
from walrus_tasks.settings import get_settings

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
    """Run everything for development; Ctrl-C stops it all."""
    settings = get_settings()
    home = settings.home.resolve()
    if init_home(home):
        err.print(f"created a starter config in {escape(str(home))}")
    try:
        config = load_config(home)
    except ConfigError as e:
        fail(f"bad config: {e.message}", RET_CONFIG)
    url = gateway_url()
    if _healthy(url):
        fail(f"a gateway already answers at {url}; stop it or set WALRUS_GATEWAY_PORT")

    supervisor = Supervisor(env={})
    embedded: RedisServer | None = None
    code = RET_ERROR
    with supervisor.stop_on_signals():
        try:
            redis_url = settings.redis_url
            if not reachable(redis_url):
                err.print(f"no Redis answers at {redis_url}; starting an embedded one")
                embedded, redis_url = _start_embedded(home / "redis", redis_url)
            supervisor.env = {
                **os.environ,
                "WALRUS_REDIS_URL": redis_url,
                "WALRUS_HOME": str(home),
                "PYTHONUNBUFFERED": "1",
            }
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
                console.print(_panel(url, redis_url, embedded, config, flower_url))

            code = watch(supervisor, url, ready)
        except WalrusError as e:
            err.print(f"[red]error:[/] {escape(e.message)}")
        finally:
            supervisor.stop()
            if embedded is not None:
                embedded.stop()
    raise typer.Exit(code)


def _start_embedded(data_dir: Path, url: str) -> tuple[RedisServer, str]:
    """Start an embedded Redis; return it and its URL.

    It listens where ``url`` points when that is a loopback address, so the URL every other
    shell has (``walrus status``, ``walrus send``) is true; else on a free port.
    """
    parsed = urlsplit(url)
    if parsed.scheme == "redis" and parsed.hostname in ("127.0.0.1", "localhost") and parsed.port:
        try:
            return start_redis(data_dir, port=parsed.port), url
        except WalrusError:
            pass  # the port is taken by something that is not Redis: use a free one
    server = start_redis(data_dir)
    return server, server.url


def watch(supervisor: Supervisor, url: str, on_ready: Callable[[], None]) -> int:
    """Wait for the gateway, call ``on_ready`` once, then watch until a stop or a crash.

    Returns RET_OK after a stop signal; RET_ERROR (RET_CONFIG for a gateway with a bad config)
    when a child exits on its own or the gateway never gets healthy.
    """
    ready = False
    deadline = time.monotonic() + READY_TIMEOUT
    while not supervisor.stop_requested.is_set():
        exited = supervisor.exited()
        if exited:
            name, rc = exited
            err.print(f"[red]{name} exited unexpectedly with code {rc}[/]; stopping the others")
            return RET_CONFIG if name == "gateway" and rc == RET_CONFIG else RET_ERROR
        if not ready:
            if _healthy(url):
                ready = True
                on_ready()
            elif time.monotonic() > deadline:
                err.print(
                    f"[red]the gateway did not answer {url}/healthz in {READY_TIMEOUT:.0f} s[/]"
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


def _panel(
    url: str, redis_url: str, embedded: RedisServer | None, config: Config, flower: str | None
) -> Panel:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("gateway", url)
    where = f"embedded, data in {embedded.data_dir}" if embedded else "external"
    grid.add_row("redis", f"{redis_url} ({escape(where)})")
    grid.add_row("config", escape(str(config.home)))
    agents = ", ".join(f"{a.name} ({a.model})" for a in config.agents.values())
    grid.add_row("agents", escape(agents) or "[yellow]none — add agents/<name>.toml[/]")
    if flower:
        grid.add_row("flower", flower)
    first = DEFAULT_AGENT if DEFAULT_AGENT in config.agents else next(iter(config.agents), "NAME")
    hints = [f"walrus chat {first}"]
    if embedded and redis_url != get_settings().redis_url:
        # other shells need the URL to find this Redis (walrus status, doctor)
        hints.append(f"export WALRUS_REDIS_URL={redis_url}")
    grid.add_row("try", "\n".join(hints))
    return Panel(grid, title="walrus is up", subtitle="Ctrl-C stops everything", expand=False)
