"""``walrus doctor``: is everything a message needs in place? Config, Redis, workers, gateway."""

from __future__ import annotations

from dataclasses import dataclass

import typer
from rich.markup import escape
from rich.table import Table

from walrus_tasks.cli.common import (
    RET_ERROR,
    RET_OK,
    TOKEN_HINT,
    TokenOption,
    UrlOption,
    console,
    gateway_url,
)
from walrus_tasks.client import Client, http_status
from walrus_tasks.config import load_config
from walrus_tasks.connection import client
from walrus_tasks.errors import WalrusError
from walrus_tasks.migrate import pending
from walrus_tasks.redis_server import reachable
from walrus_tasks.sandbox import current as current_sandbox
from walrus_tasks.settings import get_settings


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str


def check_config() -> Check:
    """The config directory loads and defines at least one agent."""
    home = get_settings().home.resolve()
    if not home.is_dir():
        return Check("config", False, f"no config directory at {home} (run: walrus init)")
    try:
        config = load_config(home)
    except WalrusError as e:
        return Check("config", False, e.message)
    if not config.agents:
        return Check("config", False, f"{home}: no agents in agents/*.toml")
    agents = ", ".join(f"{a.name} ({a.model})" for a in config.agents.values())
    return Check("config", True, f"{home}: {agents}")


def check_redis() -> Check:
    """Redis answers PING at WALRUS_REDIS_URL."""
    url = get_settings().redis_url
    if not reachable(url):
        return Check("redis", False, f"no answer at {url}")
    with client(url, socket_connect_timeout=2) as r:
        if pending(r):
            return Check("redis", False, f"{url} holds an earlier release's state: walrus migrate")
    return Check("redis", True, url)


def check_workers() -> Check:
    """At least one Celery worker answers a broadcast ping."""
    from walrus_tasks.celery_app import app

    try:
        replies = app.control.ping(timeout=1)
    except Exception as e:  # Celery raises kombu/redis errors of many kinds; report, not crash
        return Check("workers", False, f"ping failed: {e}")
    names = sorted(name for reply in replies or [] for name in reply)
    if not names:
        return Check("workers", False, "no worker answered a ping (run: walrus worker)")
    return Check("workers", True, ", ".join(names))


def check_gateway(url: str, token: str | None) -> Check:
    """The gateway answers ``GET /healthz`` with 200."""
    try:
        with Client(url, timeout=3.0, token=token) as client:
            client.healthz()
    except WalrusError as e:
        return Check("gateway", False, e.message)
    return Check("gateway", True, f"{url}/healthz ok")


def check_token(url: str, token: str | None) -> Check:
    """The gateway takes this token (or needs none): ``GET /v1/agents`` is not a 401.

    ``/healthz`` is open, so it cannot say whether every other call will be refused. A 403 is a
    token the gateway knows, limited to some agents or a tenant: it is accepted.
    """
    try:
        with Client(url, timeout=3.0, token=token) as client:
            client.agents()
    except WalrusError as e:
        if http_status(e) == 401:
            return Check("token", False, f"{e.message}; {TOKEN_HINT[401]}")
        if http_status(e) != 403:
            return Check("token", False, e.message)
    if token is None:
        return Check("token", True, "the gateway needs none (it has no tokens)")
    return Check("token", True, "accepted by the gateway")


def check_sandbox() -> Check:
    """The sandbox ``bash`` runs in on this host (tool workers on other hosts probe their own)."""
    sandbox = current_sandbox()
    return Check(f"sandbox: {sandbox.kind}", not sandbox.refused, sandbox.detail)


def doctor(url: UrlOption = None, token: TokenOption = None) -> None:
    """Check the config, Redis, workers, the gateway and its token; exit non-zero if any fails."""
    checks = [check_config(), check_redis()]
    if checks[-1].ok:
        checks.append(check_workers())
    else:
        checks.append(Check("workers", False, "skipped: Redis is not reachable"))
    checks.append(check_gateway(gateway_url(url), token))
    if checks[-1].ok:
        checks.append(check_token(gateway_url(url), token))
    else:
        checks.append(Check("token", False, "skipped: the gateway is not reachable"))
    checks.append(check_sandbox())
    table = Table(title="walrus doctor")
    table.add_column("check", style="bold")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in checks:
        table.add_row(c.name, "[green]pass[/]" if c.ok else "[red]fail[/]", escape(c.detail))
    console.print(table)
    raise typer.Exit(RET_OK if all(c.ok for c in checks) else RET_ERROR)
