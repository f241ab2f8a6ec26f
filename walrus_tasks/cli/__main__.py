"""``python -m walrus_tasks.cli``: the same as the ``walrus`` console script."""

from __future__ import annotations

from walrus_tasks.cli import main

if __name__ == "__main__":
    main()
