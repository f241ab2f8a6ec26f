"""The ``walrus`` command line: processes (up, gateway, worker, beat, flower) and clients."""

from __future__ import annotations

__all__ = ["main"]


def main() -> None:
    """Entry point of the ``walrus`` console script."""
    from walrus_tasks.cli.app import app

    app(prog_name="walrus")
