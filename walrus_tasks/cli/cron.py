"""``walrus cron add|ls|rm`` and ``walrus reload``, over the gateway's HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from pydantic import ValidationError

from walrus_tasks.cli.common import (
    JsonOption,
    TokenOption,
    UrlOption,
    console,
    fail,
    gateway_url,
    print_json,
    reported,
)
from walrus_tasks.cli.help_labels import Typer
from walrus_tasks.cli.tables import Col, print_table
from walrus_tasks.client import Client
from walrus_tasks.models import CronEntry, CronSpec

app = Typer(help="Timers that send a message to an agent on a schedule.", no_args_is_help=True)


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


@app.command("add")
def add(
    schedule: Annotated[
        str, typer.Argument(help="5-field cron ('*/5 * * * *') or '@every 30s' (s|m|h).")
    ],
    agent: Annotated[str, typer.Argument(help="Agent the message goes to.")],
    message: Annotated[str | None, typer.Argument(help="The message to send.")] = None,
    skill: Annotated[
        str | None, typer.Option(help="Send '/SKILL' instead of a message.", show_default=False)
    ] = None,
    sender: Annotated[
        str | None, typer.Option(help="Conversation sender (default: cron:<id>).")
    ] = None,
    quiet: Annotated[
        str | None,
        typer.Option(help="Quiet hours HH:MM-HH:MM (local): fires inside are skipped."),
    ] = None,
    tz: Annotated[
        str | None, typer.Option("--timezone", help="IANA timezone (default: UTC).")
    ] = None,
    once: Annotated[bool, typer.Option(help="Delete the entry after its first fire.")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Add a cron entry; print its id and next fire time."""
    quiet_start = quiet_end = None
    if quiet is not None:
        quiet_start, sep, quiet_end = quiet.partition("-")
        if not sep:
            fail(f"--quiet must be HH:MM-HH:MM, got {quiet!r}")
    try:
        spec = CronSpec(
            schedule=schedule, agent=agent, sender=sender, message=message, skill=skill,
            quiet_start=quiet_start, quiet_end=quiet_end, timezone=tz, once=once,
        )  # fmt: skip
    except ValidationError as e:
        fail(f"bad cron entry: {e.errors()[0]['msg']}")
    with reported(), Client(gateway_url(url), token=token) as client:
        entry = client.add_cron(spec)
    if as_json:
        print_json(entry.model_dump())
        return
    console.print(f"cron {entry.id}: next fire {_when(entry.next_fire_at)}")


COLUMNS = (
    Col("id", "id"),
    Col("schedule"),
    Col("agent"),
    Col("sender"),
    Col("sends", "text", drop=3),
    Col("next", drop=4),
    Col("last", drop=1),
    Col("last run", "id", drop=2),
)
"""The cron list: at 80 columns the last fire goes first, then its run, then the message."""


@app.command("ls")
def ls(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """List cron entries with their last and next fire time and last run."""
    with reported(), Client(gateway_url(url), token=token) as client:
        entries = client.crons()
    if as_json:
        print_json([e.model_dump() for e in entries])
        return
    if not entries:
        console.print("no cron entries", style="dim")
        return
    rows = [
        [e.id, e.schedule, e.agent, e.sender, _sends(e), _when(e.next_fire_at),
         _when(e.last_fire_at), e.last_run_id or "-"]
        for e in entries
    ]  # fmt: skip
    print_table(COLUMNS, rows)


def _sends(e: CronEntry) -> str:
    text = e.message if e.message is not None else f"/{e.skill}"
    flags = [f"quiet {e.quiet_start}-{e.quiet_end}"] if e.quiet_start else []
    flags += ["once"] if e.once else []
    text = text if len(text) <= 40 else text[:39] + "…"
    return f"{text} ({', '.join(flags)})" if flags else text


@app.command("rm")
def rm(
    cron_id: Annotated[str, typer.Argument(help="The entry's id (from 'walrus cron ls').")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete a cron entry: it never fires again."""
    with reported(), Client(gateway_url(url), token=token) as client:
        client.remove_cron(cron_id)
    console.print(f"deleted cron {cron_id}")


def reload(url: UrlOption = None, token: TokenOption = None) -> None:
    """Make every gateway, worker and beat re-read the config directory."""
    with reported(), Client(gateway_url(url), token=token) as client:
        result = client.reload()
    agents = ", ".join(result.get("agents", []))
    console.print(f"config reloaded (generation {result.get('generation')}): agents {agents}")
