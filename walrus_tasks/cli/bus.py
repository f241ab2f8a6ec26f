"""``walrus events …``: the event bus over the gateway (subscriptions, publish, the live feed)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from walrus_tasks.cli.common import (
    JsonOption,
    TokenOption,
    UrlOption,
    console,
    err,
    fail,
    gateway_url,
    print_json,
    reported,
)
from walrus_tasks.cli.help_labels import Typer
from walrus_tasks.cli.render import preview
from walrus_tasks.cli.tables import Col, print_table
from walrus_tasks.client import Client, Event

app = Typer(
    help="The event bus: subscriptions, publishing events, the live feed.",
    no_args_is_help=True,
)


@app.command("sub")
def subscribe(
    source: Annotated[str, typer.Argument(help="Event source, e.g. agent:writer:done.")],
    agent: Annotated[str, typer.Argument(help="The agent that gets each event as a message.")],
    once: Annotated[bool, typer.Option("--once", help="Remove it on its first fire.")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Subscribe AGENT to every event published to SOURCE; print the subscription id."""
    with reported(), Client(gateway_url(url), token=token) as client:
        sub = client.subscribe(source, agent, once=once)
    if as_json:
        print_json(sub.model_dump(mode="json"))
    else:
        typer.echo(sub.id)


COLUMNS = (
    Col("id", "id"),
    Col("source"),
    Col("target agent"),
    Col("once", drop=1),
    Col("created", drop=2),
)


@app.command("ls")
def list_subscriptions(
    as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """List the subscriptions, oldest first."""
    with reported(), Client(gateway_url(url), token=token) as client:
        subs = client.subscriptions()
    if as_json:
        print_json([s.model_dump(mode="json") for s in subs])
        return
    if not subs:
        err.print("no subscriptions", style="dim")
        return
    rows = [
        [s.id, s.source, s.target_agent, "yes" if s.once else "",
         datetime.fromtimestamp(s.created_at).isoformat(sep=" ", timespec="seconds")]
        for s in subs
    ]  # fmt: skip
    print_table(COLUMNS, rows)


@app.command("rm")
def remove(
    sub_id: Annotated[str, typer.Argument(metavar="ID", help="Subscription id.")],
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Remove a subscription."""
    with reported(), Client(gateway_url(url), token=token) as client:
        client.unsubscribe(sub_id)
    err.print(f"removed {sub_id}", style="dim")


@app.command("publish")
def publish(
    source: Annotated[str, typer.Argument(help="Event source.")],
    payload: Annotated[
        str, typer.Argument(help="The payload (text, or JSON with --json-payload).")
    ],
    json_payload: Annotated[
        bool, typer.Option("--json-payload", help="Parse PAYLOAD as JSON.")
    ] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Publish an event; print the id of each run it started, one a line."""
    body: Any = payload
    if json_payload:
        try:
            body = json.loads(payload)
        except ValueError as e:
            fail(f"PAYLOAD is not JSON: {e}")
    with reported(), Client(gateway_url(url), token=token) as client:
        fired = client.publish(source, body)
    if not fired:
        err.print("no subscription fired", style="dim")
    for run_id in fired:
        typer.echo(run_id)


@app.command("tail")
def tail(
    agent: Annotated[
        str | None, typer.Option("--agent", "-a", help="Only this agent's runs.")
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", "-n", min=1, help="Stop after N events.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON event a line.")] = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Follow the live feed of every run's events (Ctrl-C to stop)."""
    seen = 0
    with reported(), Client(gateway_url(url), token=token) as client:
        try:
            for event in client.feed(agent):
                if as_json:
                    typer.echo(json.dumps(event.data, ensure_ascii=False))
                else:
                    _print_event(event)
                seen += 1
                if count is not None and seen >= count:
                    return
        except KeyboardInterrupt:
            return


def _print_event(event: Event) -> None:
    d = event.data
    detail = {k: v for k, v in d.items() if k not in ("type", "run_id", "agent", "sender")}
    text = preview(json.dumps(detail, ensure_ascii=False)) if detail else ""
    who = f"{d.get('agent')}/{d.get('sender')} {str(d.get('run_id', ''))[:8]}"
    console.print(f"[dim]{escape(who)}[/] [bold]{escape(event.type)}[/] {escape(text)}")
