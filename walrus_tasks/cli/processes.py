"""One process each: gateway, worker, beat, flower — and ``walrus init``.

The core package never imports ``worker``, ``beat`` or ``gateway`` (an import-linter contract),
so these commands replace the CLI process with ``python -m <package>``: same PID, so
supervisors, compose and tests can signal it directly.
"""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from walrus_tasks.cli.common import console, err
from walrus_tasks.settings import get_settings

QUEUES = "walrus.runs,walrus.tools,walrus.control"
"""Every walrus queue (the same as ``celery_app.ALL_QUEUES``, without importing Celery)."""


class Pool(StrEnum):
    """Celery execution pools a walrus worker may use."""

    prefork = "prefork"
    threads = "threads"
    solo = "solo"


def module_argv(module: str, *args: str) -> list[str]:
    """``[python, -m, module, *args]`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def exec_module(module: str, *args: str, env: dict[str, str] | None = None) -> NoReturn:
    """Replace this process with ``python -m module args`` (``env`` added to the environment)."""
    argv = module_argv(module, *args)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, {**os.environ, **(env or {})})


def worker_args(
    queues: str = QUEUES,
    concurrency: int | None = None,
    pool: str | None = None,
    name: str | None = None,
    loglevel: str | None = None,
    metrics_port: str | None = None,
) -> list[str]:
    """The flags of ``python -m worker`` (a bare ``name`` gets ``@<host>`` appended)."""
    args = [f"--queues={queues}"]
    if concurrency:
        args.append(f"--concurrency={concurrency}")
    if pool:
        args.append(f"--pool={pool}")
    if name:
        args.append(f"--hostname={name if '@' in name else name + '@%h'}")
    if loglevel:
        args.append(f"--loglevel={loglevel}")
    if metrics_port:
        args.append(f"--metrics-port={metrics_port}")
    return args


def gateway(
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: $WALRUS_GATEWAY_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: $WALRUS_GATEWAY_PORT).")] = None,
) -> None:
    """Serve the HTTP gateway (uvicorn)."""
    env = {}
    if host:
        env["WALRUS_GATEWAY_HOST"] = host
    if port:
        env["WALRUS_GATEWAY_PORT"] = str(port)
    exec_module("gateway", env=env)


def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to consume.")] = QUEUES,
    concurrency: Annotated[
        int | None, typer.Option(help="Pool size (default: the CPU count).", min=1)
    ] = None,
    pool: Annotated[Pool, typer.Option(help="Execution pool.")] = Pool.prefork,
    name: Annotated[
        str | None, typer.Option(help="Worker name (Celery hostname; NAME@host).")
    ] = None,
    loglevel: Annotated[
        str | None, typer.Option(help="Log level (default: $WALRUS_LOG_LEVEL).")
    ] = None,
    metrics_port: Annotated[
        str | None,
        typer.Option(
            metavar="[HOST:]PORT",
            help="Serve Prometheus /metrics of every pool process here (host 127.0.0.1).",
        ),
    ] = None,
) -> None:
    """Run one Celery worker on the walrus queues."""
    argv = worker_args(queues, concurrency, pool.value, name, loglevel, metrics_port)
    exec_module("worker", *argv)


def beat() -> None:
    """Run the scheduler (cron, heartbeats, lease reaper); extra beats stand by (Redis lock)."""
    exec_module("beat")


def flower(port: Annotated[int, typer.Option(help="Port of the Flower web UI.")] = 5555) -> None:
    """Run Flower, the Celery monitoring UI, on the walrus broker.

    Basic auth from WALRUS_FLOWER_BASIC_AUTH (user:password) guards its UI and its HTTP API.
    """
    env = flower_env()
    if "FLOWER_BASIC_AUTH" not in env and "FLOWER_BASIC_AUTH" not in os.environ:
        err.print(
            "Flower runs without auth; its HTTP API (/api/…) answers 401 unless "
            "WALRUS_FLOWER_BASIC_AUTH=user:password is set (then use those credentials) or, "
            "on a trusted network only, FLOWER_UNAUTHENTICATED_API=true",
            style="yellow",
        )
    exec_module("celery", *flower_args(port), env=env)


def flower_args(port: int) -> list[str]:
    """The arguments of ``python -m celery`` that start Flower on the walrus broker.

    The broker comes from the walrus Celery app, which reads it from the same settings as the
    workers (``WALRUS_BROKER_URL`` or ``WALRUS_REDIS_URL``, a Sentinel group's master name
    included): a password in the URL never appears on a command line (``ps`` shows those).
    """
    return ["-A", "walrus_tasks.celery_app:app", "flower", f"--port={port}"]


def flower_env() -> dict[str, str]:
    """Flower's own variables set from walrus settings: ``FLOWER_BASIC_AUTH``."""
    auth = get_settings().flower_basic_auth
    return {"FLOWER_BASIC_AUTH": auth} if auth else {}


def init() -> None:
    """Write a starter config directory (one mock agent) at WALRUS_HOME."""
    from walrus_tasks.config import DEFAULT_AGENT, init_home

    home = get_settings().home.resolve()
    if init_home(home):
        console.print(
            f"created {escape(str(home))} with the agent [bold]{DEFAULT_AGENT}[/] (mock model)"
        )
        console.print(f"next: [bold]walrus up[/], then [bold]walrus chat {DEFAULT_AGENT}[/]")
    else:
        console.print(f"{escape(str(home))} already has a config; left as is")
