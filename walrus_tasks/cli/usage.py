"""``walrus usage``: LLM tokens, calls and cost by tenant, agent, model and period."""

from __future__ import annotations

from typing import Annotated

import typer

from walrus_tasks.cli.common import (
    JsonOption,
    TokenOption,
    UrlOption,
    err,
    gateway_url,
    print_json,
    reported,
)
from walrus_tasks.cli.tables import Col, print_table
from walrus_tasks.client import Client
from walrus_tasks.models import UsageReport, UsageRow

FIGURES = (
    Col("input", justify="right"),
    Col("output", justify="right"),
    Col("calls", justify="right", drop=2),
    Col("runs", justify="right", drop=1),
    Col("cost $", justify="right"),
)
"""The figures of each row; at a narrow terminal runs go first, then calls."""
TOTAL = "total"


def usage(
    by: Annotated[
        str,
        typer.Option(
            "--by", help="Group by, comma-separated: tenant, agent, model, and hour or day."
        ),
    ] = "agent,model",
    since: Annotated[
        str, typer.Option(help="Start: a duration before now (7d, 12h), ISO 8601 or unix seconds.")
    ] = "7d",
    until: Annotated[
        str | None, typer.Option(help="End, as --since (default: now).", show_default=False)
    ] = None,
    agent: Annotated[str | None, typer.Option(help="Only this agent's usage.")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's usage.")] = None,
    tenant: Annotated[
        str | None,
        typer.Option(help="Only this tenant's (admin token; a tenant token sees its own)."),
    ] = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show LLM tokens, calls, runs and cost (by the price table of config.toml), grouped."""
    with reported(), Client(gateway_url(url), token=token) as client:
        report = client.usage(by, since, until, agent=agent, model=model, tenant=tenant)
    if as_json:
        print_json(report.model_dump(mode="json", by_alias=True))
        return
    print_report(report)


def print_report(report: UsageReport) -> None:
    """The rows as a table, the totals last; which models had no price, on stderr."""
    groups = ["period" if g in ("hour", "day") else g for g in report.group_by]
    cols = [Col(g) for g in groups] + list(FIGURES)
    rows = [[str(getattr(row, g) or "") for g in groups] + _figures(row) for row in report.rows]
    if groups:
        rows.append([TOTAL] + [""] * (len(groups) - 1) + _figures(report.totals))
    else:
        cols, rows = [Col(""), *cols], [[TOTAL, *_figures(report.totals)]]
    print_table(cols, rows)
    if not report.rows:
        err.print("no usage in this range", style="dim")
    if report.unpriced_models:
        err.print(
            f"no price for {', '.join(report.unpriced_models)}: their cost is left out "
            '(add [prices."<model>"] to config.toml)',
            style="dim",
            markup=False,
        )


def _figures(row: UsageRow) -> list[str]:
    cost = "?" if row.cost_usd is None else f"{row.cost_usd:.4f}"
    return [
        f"{row.input_tokens:,}",
        f"{row.output_tokens:,}",
        f"{row.calls:,}",
        f"{row.runs:,}",
        cost,
    ]
