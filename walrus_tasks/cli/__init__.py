"""The ``walrus`` command line: processes (up, gateway, worker, beat, flower) and clients."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``walrus`` console script.

    A setting that is not valid (``WALRUS_*``, read by whichever command needs it first) is one
    line on stderr and exit code ``RET_CONFIG``, not a traceback.
    """
    from rich.markup import escape

    from walrus_tasks.cli.app import app
    from walrus_tasks.cli.common import RET_CONFIG, err
    from walrus_tasks.errors import ConfigError

    try:
        app(prog_name="walrus")
    except ConfigError as e:
        err.print(f"[red]error:[/] {escape(e.message)}", soft_wrap=True)
        raise SystemExit(RET_CONFIG) from None
