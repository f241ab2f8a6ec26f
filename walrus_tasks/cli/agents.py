"""``walrus agents ls|show|add|rm``: the configured agents, over the gateway's HTTP API.

``add`` writes ``agents/<name>.toml`` through ``POST /v1/agents``, so it is checked like any
config change (a bad field is refused and nothing is written) and every process reloads.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from walrus_tasks.cli.common import (
    JsonOption,
    TokenOption,
    UrlOption,
    console,
    gateway_url,
    print_json,
    reported,
)
from walrus_tasks.cli.help_labels import Typer
from walrus_tasks.cli.tables import Col, print_table
from walrus_tasks.client import Client

app = Typer(help="The configured agents: list, show, add, remove.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="Agent name.")]


COLUMNS = (
    Col("name", "id"),
    Col("model"),
    Col("tools", "text"),
    Col("members", "text", drop=2),
    Col("description", "text", drop=1),
)


@app.command("ls")
def ls(as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None) -> None:
    """List the agents with their model, tools and description."""
    with reported(), Client(gateway_url(url), token=token) as client:
        agents = client.agents()
    if as_json:
        print_json([a.model_dump() for a in agents])
        return
    rows = [
        [a.name, a.model, ", ".join(a.tools), ", ".join(a.members), a.description] for a in agents
    ]
    print_table(COLUMNS, rows)


@app.command("show")
def show(
    name: Name, as_json: JsonOption = False, url: UrlOption = None, token: TokenOption = None
) -> None:
    """Show one agent."""
    with reported(), Client(gateway_url(url), token=token) as client:
        agent = client.agent(name)
    if as_json:
        print_json(agent.model_dump())
        return
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(overflow="fold")  # a long word (an id, a path) folds, never "…"
    for field, value in agent.model_dump().items():
        table.add_row(field, escape(", ".join(value) if isinstance(value, list) else str(value)))
    console.print(table)


@app.command("add")
def add(
    name: Name,
    model: Annotated[str, typer.Option(help="Model: 'mock' or '<provider>/<model>'.")] = "mock",
    description: Annotated[str, typer.Option(help="One line about the agent.")] = "",
    system_prompt: Annotated[str, typer.Option(help="The system prompt.")] = "",
    tool: Annotated[list[str] | None, typer.Option(help="A tool it may use (repeat).")] = None,
    member: Annotated[
        list[str] | None, typer.Option(help="An agent it delegates to (repeat).")
    ] = None,
    skill: Annotated[list[str] | None, typer.Option(help="A skill it has (repeat).")] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create an agent (refused if it exists or a field is bad; nothing is written then)."""
    fields: dict[str, Any] = {"model": model, "tools": tool or [], "members": member or []}
    fields |= {"skills": skill or []}
    fields |= {
        k: v for k, v in (("description", description), ("system_prompt", system_prompt)) if v
    }
    with reported(), Client(gateway_url(url), token=token) as client:
        agent = client.create_agent(name, **fields)
    if as_json:
        print_json(agent.model_dump())
        return
    console.print(f"created agent {agent.name} ({escape(agent.model)})")


@app.command("rm")
def rm(name: Name, url: UrlOption = None, token: TokenOption = None) -> None:
    """Delete an agent's config (its conversations, crons and subscriptions are kept)."""
    with reported(), Client(gateway_url(url), token=token) as client:
        client.delete_agent(name)
    console.print(f"deleted agent {name}")
