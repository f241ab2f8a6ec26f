"""What every command shares: exit codes, consoles, the gateway URL and error reporting."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from walrus_tasks.client import GatewayUnreachable, http_status
from walrus_tasks.errors import ConfigError, WalrusError
from walrus_tasks.settings import get_settings

RET_OK = 0
"""Success."""
RET_ERROR = 1
"""The command ran and failed: an HTTP error, a failed or cancelled run, a failed check."""
RET_CONNECT = 3
"""The gateway or Redis could not be reached."""
RET_CONFIG = 4
"""The config directory cannot be loaded (the gateway exits with this code too)."""

TOKEN_HINT = {
    401: "the gateway wants a bearer token: pass --token TOKEN or set WALRUS_TOKEN",
    403: "this token may not do that: pass another with --token TOKEN or WALRUS_TOKEN",
}
"""What to do about a 401 or 403, after the gateway's own message."""

console = Console(highlight=False)
"""Standard output: replies, tables, panels."""
err = Console(stderr=True, highlight=False)
"""Standard error: progress notes and error lines."""

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="WALRUS_URL",
        help="Gateway URL (default: http://$WALRUS_GATEWAY_HOST:$WALRUS_GATEWAY_PORT).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="WALRUS_TOKEN", help="Bearer token for the gateway.", show_default=False
    ),
]
SenderOption = Annotated[
    str | None,
    typer.Option("--sender", "-s", help="Who is talking (default: user).", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


class OnBusyChoice(StrEnum):
    """What to do when the conversation is busy (docs/http.md: ``on_busy``)."""

    enqueue = "enqueue"
    reject = "reject"
    interrupt = "interrupt"


def print_json(data: Any) -> None:
    """Machine-readable output: indented JSON on stdout, never wrapped or styled."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def gateway_url(url: str | None = None) -> str:
    """``url`` if given, else the gateway the process settings point at."""
    if url:
        return url.rstrip("/")
    settings = get_settings()
    host = settings.gateway_host
    if host in ("0.0.0.0", "::", ""):  # a bind-all address; connect over loopback
        host = "127.0.0.1"
    if ":" in host:  # an IPv6 address goes in brackets in a URL
        host = f"[{host.strip('[]')}]"
    return f"http://{host}:{settings.gateway_port}"


def fail(message: str, code: int = RET_ERROR) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    err.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def reported() -> Iterator[None]:
    """Around gateway calls: turn walrus errors into one clear line and the matching exit code."""
    try:
        yield
    except GatewayUnreachable as e:
        fail(e.message, RET_CONNECT)
    except ConfigError as e:
        fail(e.message, RET_CONFIG)
    except WalrusError as e:
        status = http_status(e)  # None for an error raised client-side, without a response
        if status is None:
            fail(e.message)
        hint = f"; {TOKEN_HINT[status]}" if status in TOKEN_HINT else ""
        fail(f"{e.message} (HTTP {status} {e.code}){hint}")
