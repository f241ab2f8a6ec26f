"""``walrus chat``: an interactive conversation with one agent, replies streamed word by word."""

from __future__ import annotations

import contextlib
from typing import Annotated, Any

import typer

from walrus_tasks.cli.common import (
    SenderOption,
    TokenOption,
    UrlOption,
    console,
    err,
    gateway_url,
    reported,
)
from walrus_tasks.cli.render import EventPrinter
from walrus_tasks.client import Client
from walrus_tasks.errors import WalrusError
from walrus_tasks.names import DEFAULT_SENDER

QUIT = frozenset({"/quit", "/exit", "/q"})
PROMPT = "[bold cyan]you>[/] "


def chat(
    agent: Annotated[str, typer.Argument(help="Agent name.")],
    sender: SenderOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Talk with AGENT; /quit or Ctrl-D leaves, Ctrl-C during a reply stops it."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401  (line editing and history for input())

    base = gateway_url(url)
    with reported(), Client(base, token=token) as client:
        info = client.agent(agent)  # fail fast on an unknown agent or an unreachable gateway
        err.print(
            f"chatting with {info.name} ({info.model}) as {sender or DEFAULT_SENDER} at {base}"
            " — /quit or Ctrl-D to leave, Ctrl-C stops a reply",
            style="dim",
            markup=False,
            soft_wrap=True,
        )
        while True:
            try:
                line = console.input(PROMPT).strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if not line:
                continue
            if line in QUIT:
                return
            try:
                reply(client, agent, sender, line)
            except WalrusError as e:  # one bad turn does not end the chat
                err.print(f"error: {e.message}", style="red", markup=False)


def reply(client: Client, agent: str, sender: str | None, line: str) -> None:
    """Send ``line`` and print the reply as it streams; Ctrl-C cancels the run."""
    try:
        run_id = client.send(agent, line, sender=sender).run_id
    except KeyboardInterrupt:  # the message may or may not have been accepted
        console.print()
        err.print("interrupted before the gateway answered", style="dim")
        return
    printer = EventPrinter()
    events = client.events(run_id)
    try:
        for event in events:
            printer(event)
            if event.type == "ask_user":
                _answer(client, agent, sender, event.data)
    except KeyboardInterrupt:
        events.close()
        _interrupt(client, agent, sender, run_id, printer)
    finally:
        events.close()


def _answer(client: Client, agent: str, sender: str | None, asked: dict[str, Any]) -> None:
    """The agent asks (or wants approval): read the answer here and send it as the reply."""
    hint = "allow / deny" if asked.get("kind") == "approval" else "your answer"
    for q in asked.get("questions", []):
        options = ", ".join(str(o.get("label")) for o in q.get("options", []))
        err.print(f"? {q.get('question')}" + (f"  [{options}]" if options else ""), markup=False)
    answer = console.input(f"({hint}) > ").strip() or "(no answer)"
    client.reply(agent, answer, sender, asked.get("call_id"))


def _interrupt(
    client: Client, agent: str, sender: str | None, run_id: str, printer: EventPrinter
) -> None:
    """Kill the conversation's run; if it is ours, show what it emitted until its ``end``."""
    printer.newline()
    killed = client.kill(agent, sender)
    if killed != run_id:  # ours waits behind another run (or has not started): kill missed it
        other = f"cancelled the conversation's run {killed}; " if killed else ""
        err.print(f"interrupted; {other}run {run_id} is queued and will still run", style="dim")
        return
    err.print(f"interrupted; cancelling run {run_id}", style="dim")
    if printer.end is not None:
        return
    events = client.events(run_id, printer.last_id)
    try:
        for event in events:
            printer(event)
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for the end event
        printer.newline()
    finally:
        events.close()
