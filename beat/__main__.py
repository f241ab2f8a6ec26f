"""``python -m beat``: the Celery beat process (reaper sweep; heartbeats and cron later)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from walrus_tasks.celery_app import app
from walrus_tasks.log import setup_logging
from walrus_tasks.settings import get_settings


def main() -> None:
    """Run beat until it is stopped."""
    setup_logging()
    # The schedule is static (it lives in the app config): a private state file per process.
    state = Path(tempfile.mkdtemp(prefix="walrus-beat-")) / "schedule"
    app.start(["beat", f"--schedule={state}", f"--loglevel={get_settings().log_level}"])


if __name__ == "__main__":
    main()
