"""``walrus reply``, ``walrus steer``, ``walrus compact``: act on a conversation's turn."""

from __future__ import annotations

from typing import Annotated

import typer

from walrus_tasks.cli.common import (
    SenderOption,
    TokenOption,
    UrlOption,
    console,
    gateway_url,
    reported,
)
from walrus_tasks.client import Client

AgentArg = Annotated[str, typer.Argument(help="Agent name.")]


def reply(
    agent: AgentArg,
    content: Annotated[str, typer.Argument(help="The answer (for an approval: allow or deny).")],
    sender: SenderOption = None,
    call_id: Annotated[str | None, typer.Option(help="The question's call_id.")] = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Answer the conversation's pending ask_user question or approval."""
    with reported(), Client(gateway_url(url), token=token) as client:
        done = client.reply(agent, content, sender, call_id)
    if done.status == "resumed":
        console.print(f"run {done.run_id} resumed (call {done.call_id})")
    else:
        console.print(f"run {done.run_id} has no question yet: the reply answers its next one")


def steer(
    agent: AgentArg,
    content: Annotated[str, typer.Argument(help="The message to inject.")],
    sender: SenderOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Inject a message before the active run's next LLM call."""
    with reported(), Client(gateway_url(url), token=token) as client:
        run_id = client.steer(agent, content, sender)
    console.print(f"queued for run {run_id}")


def compact(
    agent: AgentArg,
    sender: SenderOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Summarise the conversation's history (the old history is archived)."""
    with reported(), Client(gateway_url(url), token=token) as client:
        run_id = client.compact(agent, sender).run_id
    console.print(f"compaction queued as run {run_id}")
