"""The ``walrus`` command: a Typer app whose commands live in the sibling modules."""

from __future__ import annotations

from importlib.metadata import version
from typing import Annotated

import typer

from walrus_tasks.cli import (
    agents,
    bus,
    chat,
    client_cmds,
    cron,
    doctor,
    export,
    processes,
    status,
    turn_cmds,
    up,
    up_state,
    usage,
)
from walrus_tasks.cli.help_labels import Typer

app = Typer(
    name="walrus",
    help="LLM agents as a distributed service on Celery + Redis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"walrus {version('walrus_tasks')}")
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """LLM agents as a distributed service on Celery + Redis."""
    if ctx.invoked_subcommand in up_state.ADOPTING_COMMANDS:
        up_state.adopt_redis()


# Processes: what compose, ops scripts and `walrus up` run.
app.command(rich_help_panel="Processes")(up.up)
app.command(rich_help_panel="Processes")(processes.gateway)
app.command(rich_help_panel="Processes")(processes.worker)
app.command(rich_help_panel="Processes")(processes.beat)
app.command(rich_help_panel="Processes")(processes.flower)

# Client: talk to the gateway over HTTP.
app.command(rich_help_panel="Client")(chat.chat)
app.command(rich_help_panel="Client")(client_cmds.send)
app.command(rich_help_panel="Client")(client_cmds.cancel)
app.command("kill", hidden=True)(client_cmds.cancel)  # the old name of cancel
app.command(rich_help_panel="Client")(client_cmds.history)
app.command(rich_help_panel="Client")(client_cmds.runs)
app.command(rich_help_panel="Client")(turn_cmds.reply)
app.command(rich_help_panel="Client")(turn_cmds.steer)
app.command(rich_help_panel="Client")(turn_cmds.compact)
app.add_typer(bus.app, name="events", rich_help_panel="Client")
app.add_typer(cron.app, name="cron", rich_help_panel="Client")
app.add_typer(agents.app, name="agents", rich_help_panel="Client")

# Operations.
app.command(rich_help_panel="Operations")(processes.init)
app.command(rich_help_panel="Operations")(status.status)
app.command(rich_help_panel="Operations")(doctor.doctor)
app.command(rich_help_panel="Operations")(usage.usage)
app.command(rich_help_panel="Operations")(cron.reload)
app.command(name="export", rich_help_panel="Operations")(export.export)
app.command(name="import", rich_help_panel="Operations")(export.import_)
app.command(rich_help_panel="Operations")(export.migrate)
