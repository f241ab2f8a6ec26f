"""Progress bars on stderr for long commands (``walrus export``, ``walrus import``).

Only on a terminal: piped or redirected, a command prints what it always did and nothing else,
so its output stays parseable.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from walrus_tasks.cli.common import err

Tell = Callable[[str, int, int], None]
"""``(phase, done, total)``: what ``walrus_tasks.export.Progress`` is told."""


@contextmanager
def bars(out: Console | None = None) -> Iterator[Tell]:
    """A :data:`Tell` drawing one bar per phase on ``out`` (stderr) if it is a terminal.

    Elsewhere it tells no one.
    """
    out = out or err
    if not out.is_terminal:
        yield lambda phase, done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeElapsedColumn(), console=out) as progress:
        tasks: dict[str, TaskID] = {}

        def tell(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = progress.add_task(phase, total=total)
            progress.update(tasks[phase], completed=done, total=total)

        yield tell
