"""Tables that fit the terminal without cutting a cell: ids whole, text wrapped, columns left out.

Rich shortens what does not fit with "…", headers included (``walrus cron ls`` at 80 columns
showed ``s…``, ``a…``, ``@…``; ``walrus runs`` showed ``succe…``). Here every column's width is
decided before Rich draws the table:

- an ``id`` column is as wide as its longest value and never wraps: an id is copied from a
  table into another command, so a shortened one is useless;
- a ``name`` column (agent, sender, status, schedule) is as wide as its longest value when
  there is room, else it folds onto more lines (never "…");
- a ``text`` column wraps at spaces (a longer word folds), at least as wide as its header;
- when even that does not fit, the columns with a ``drop`` rank go, lowest rank first, and
  :func:`print_table` says on stderr which ones (``--json`` has every field).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from rich.cells import cell_len
from rich.console import Console, JustifyMethod
from rich.table import Column, Table
from rich.text import Text

from walrus_tasks.cli.common import console, err

TEXT_MIN = 10
"""Narrowest a text column gets (or its header's width, if wider) before columns are dropped."""


@dataclass(frozen=True)
class Col:
    """One column of a table: its header, how its cells may be laid out, when it may go."""

    header: str
    kind: Literal["id", "name", "text"] = "name"
    drop: int | None = None
    """None: always shown; else left out when the table does not fit, lowest rank first."""
    justify: JustifyMethod = "left"


def _natural(col: Col, cells: Sequence[str]) -> int:
    lines = [line for cell in cells for line in cell.splitlines()]
    return max([cell_len(col.header), *map(cell_len, lines)])


def _least(col: Col, natural: int, fold_names: bool) -> int:
    if col.kind == "id" or (col.kind == "name" and not fold_names):
        return natural
    floor = cell_len(col.header) if col.kind == "name" else max(cell_len(col.header), TEXT_MIN)
    return min(natural, floor)


def _frame(columns: int) -> int:
    """Width the default box takes besides the cells: a space each side, a line between."""
    return 3 * columns + 1


def fit(
    cols: Sequence[Col], rows: Sequence[Sequence[str]], width: int, title: str | None = None
) -> tuple[Table, list[str]]:
    """A table of ``rows`` (plain text, no markup) at most ``width`` wide, and what it left out."""
    natural = [_natural(c, [row[i] for row in rows]) for i, c in enumerate(cols)]
    shown = list(range(len(cols)))

    def need(fold_names: bool) -> int:
        least = sum(_least(cols[i], natural[i], fold_names) for i in shown)
        return least + _frame(len(shown))

    droppable = sorted((c.drop, i) for i, c in enumerate(cols) if c.drop is not None)
    while need(fold_names=False) > width and droppable:
        shown.remove(droppable.pop(0)[1])
    fold_names = need(fold_names=False) > width
    widths = {i: _least(cols[i], natural[i], fold_names) for i in shown}
    spare = width - need(fold_names)
    for kind in ("name", "text"):  # room left: names whole first, then longer text lines
        for i in shown:
            if cols[i].kind == kind and spare > 0:
                grow = min(spare, natural[i] - widths[i])
                widths[i] += grow
                spare -= grow
    table = Table(
        *(
            Column(
                cols[i].header,
                width=widths[i],
                no_wrap=cols[i].kind == "id",
                overflow="fold",
                justify=cols[i].justify,
            )
            for i in shown
        ),
        title=title,
        title_justify="left",
    )
    for row in rows:
        table.add_row(*(Text(row[i]) for i in shown))
    left_out = [c.header for i, c in enumerate(cols) if i not in shown]
    return table, left_out


def print_table(
    cols: Sequence[Col],
    rows: Sequence[Sequence[str]],
    title: str | None = None,
    out: Console | None = None,
) -> None:
    """Print the table fitted to the terminal; name on stderr the columns it left out."""
    out = out or console
    table, left_out = fit(cols, rows, out.width, title)
    out.print(table)
    if left_out:
        err.print(
            f"left out at {out.width} columns: {', '.join(left_out)} (wider terminal, or --json)",
            style="dim",
            markup=False,
        )
