"""One-shot client commands over the gateway's HTTP API: send, cancel, history, runs."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from walrus_tasks.cli.common import (
    RET_ERROR,
    JsonOption,
    OnBusyChoice,
    SenderOption,
    TokenOption,
    UrlOption,
    console,
    err,
    gateway_url,
    print_json,
    reported,
)
from walrus_tasks.cli.render import EventPrinter, preview
from walrus_tasks.cli.tables import Col, print_table
from walrus_tasks.client import Client
from walrus_tasks.models import OnBusy, RunPage

ROLE_STYLES = {"user": "bold cyan", "assistant": "bold green", "tool": "dim", "system": "magenta"}


def send(
    agent: Annotated[str, typer.Argument(help="Agent name.")],
    message: Annotated[str, typer.Argument(help="The message text.")],
    sender: SenderOption = None,
    on_busy: Annotated[
        OnBusyChoice, typer.Option("--on-busy", help="When the conversation is busy.")
    ] = OnBusyChoice.enqueue,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Stream the reply and wait for the end.")
    ] = True,
    cwd: Annotated[
        str | None, typer.Option(help="The conversation's working directory from now on.")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Send one message and stream the reply until the run ends (--no-wait: print the run id)."""
    policy: OnBusy = on_busy.value
    with reported(), Client(gateway_url(url), token=token) as client:
        accepted = client.send(agent, message, sender=sender, on_busy=policy, cwd=cwd)
        if not wait:
            typer.echo(accepted.run_id)
            return
        err.print(f"run {accepted.run_id}", style="dim")
        printer = EventPrinter()
        for event in client.events(accepted.run_id):
            printer(event)
    if printer.status != "succeeded":
        raise typer.Exit(RET_ERROR)


def cancel(
    agent: Annotated[str, typer.Argument(help="Agent name.")],
    sender: SenderOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Cancel the conversation's active run (its old name, kill, still works)."""
    with reported(), Client(gateway_url(url), token=token) as client:
        run_id = client.kill(agent, sender)
    if run_id:
        console.print(f"cancelled run {run_id}")
    else:
        err.print("nothing was running", style="dim")


def history(
    agent: Annotated[str, typer.Argument(help="Agent name.")],
    sender: SenderOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Print the conversation's messages in order."""
    with reported(), Client(gateway_url(url), token=token) as client:
        messages = client.history(agent, sender)
    if as_json:
        print_json(messages)
        return
    if not messages:
        err.print("no messages yet", style="dim")
    for m in messages:
        _print_message(m)


def _print_message(m: dict[str, Any]) -> None:
    role = str(m.get("role", "?"))
    style = ROLE_STYLES.get(role, "bold")
    label = role if role != "tool" else f"tool {m.get('name') or m.get('tool_call_id') or ''}"
    content = m.get("content")
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if role == "tool":
        text = preview(text)
    console.print(f"[{style}]{escape(label.strip())}:[/] {escape(text or '')}", soft_wrap=True)
    for call in m.get("tool_calls") or []:
        fn = call.get("function", call)
        args = preview(fn.get("arguments", ""))
        console.print(f"  → {escape(str(fn.get('name')))}({escape(args)})", style="dim")


def runs(
    run_id: Annotated[
        str | None, typer.Argument(help="A run id: show that run. None: list runs.")
    ] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's runs.")] = None,
    sender: Annotated[str | None, typer.Option(help="Only this sender's runs.")] = None,
    status: Annotated[
        list[str] | None, typer.Option(help="Only runs in this status (repeat for several).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Runs per page.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="Start after this page cursor.")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show one run's status, or list runs newest first (with filters)."""
    with reported(), Client(gateway_url(url), token=token) as client:
        if run_id is None:
            page = client.runs(cursor, limit, agent=agent, sender=sender, status=status)
        else:
            info = client.run(run_id)
    if run_id is None:
        list_runs(page, as_json)
        return
    if as_json:
        print_json(info.model_dump(mode="json"))
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a long word (an id, a path) folds, never "…"
    for name, value in info.model_dump().items():
        if value is None:
            continue
        if name.endswith("_at") and isinstance(value, (int, float)):
            value = datetime.fromtimestamp(value).isoformat(sep=" ", timespec="milliseconds")
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        table.add_row(name, escape(str(value)))
    console.print(table)


RUN_COLUMNS = (
    Col("run", "id"),
    Col("status"),
    Col("agent"),
    Col("sender"),
    Col("created", drop=1),
    Col("error", "text", drop=2),
)
"""The list of runs: at 80 columns the error goes, then the time (``walrus runs ID`` has both)."""


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).isoformat(sep=" ", timespec="seconds")


def list_runs(page: RunPage, as_json: bool) -> None:
    """Print a page of runs, and how to ask for the next one."""
    if as_json:
        print_json(page.model_dump(mode="json"))
        return
    rows = [
        [r.run_id, r.status, r.agent, r.sender, _time(r.created_at), r.error or ""]
        for r in page.runs
    ]
    print_table(RUN_COLUMNS, rows)
    if page.next_cursor:
        err.print(f"more: --cursor {page.next_cursor}", style="dim")
