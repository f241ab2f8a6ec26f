"""``python -m beat``: Celery beat with the walrus scheduler (reaper, cron, heartbeats)."""

from __future__ import annotations

import sys

from walrus_tasks import tracing
from walrus_tasks.celery_app import app
from walrus_tasks.config import load_config
from walrus_tasks.errors import ConfigError
from walrus_tasks.log import setup_logging
from walrus_tasks.settings import get_settings, settings_or_exit

RET_CONFIG = 4
"""Exit code for a config directory that cannot be loaded."""


def main() -> None:
    """Run beat until it is stopped (exit 4 on a bad config)."""
    settings_or_exit("walrus beat")  # a setting not valid: one line, exit 4
    setup_logging()
    if tracing.setup(tracing.BEAT):  # OTEL_* variables (walrus_tasks.tracing)
        tracing.instrument_celery()
    settings = get_settings()
    try:
        load_config(settings.home)  # fail here, with one clear line, not in Celery's start-up
    except ConfigError as e:
        print(f"walrus beat: bad config: {e.message}", file=sys.stderr)
        sys.exit(RET_CONFIG)
    # Only celery's beat command, as app.start() would run it (not standalone): celery's whole
    # command line would load every subcommand and plugin, most of a second of the start.
    from celery.bin.base import CLIContext
    from celery.bin.beat import beat as beat_command

    # The scheduler keeps no local state (timers live in Redis): unlike Celery's
    # PersistentScheduler it never opens the --schedule file, so none is made (no temp dir).
    beat_command.main(
        args=[
            "--scheduler=beat.scheduler:WalrusScheduler",
            f"--loglevel={settings.log_level}",
        ],
        prog_name="walrus beat",
        standalone_mode=False,
        obj=CLIContext(app=app, no_color=False, workdir=None, quiet=False),
    )


if __name__ == "__main__":
    main()
