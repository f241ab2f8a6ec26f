"""``python -m gateway``: serve the gateway with uvicorn."""

from __future__ import annotations

import gc
import logging
import resource
import sys

from walrus_tasks import heap, profiling, tracing
from walrus_tasks.config import load_config
from walrus_tasks.errors import ConfigError
from walrus_tasks.log import setup_logging
from walrus_tasks.settings import get_settings, settings_or_exit

RET_CONFIG = 4
"""Exit code for a config that cannot be served: unreadable, or open off loopback."""
NOFILE_CAP = 1 << 20
"""Soft open-file limit to take when the hard one is unlimited (Linux's default ``nr_open``)."""

log = logging.getLogger("walrus.gateway")


def raise_open_files_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one; the soft limit now.

    Every open SSE stream or WebSocket holds a socket, and the usual soft default (1024) would
    refuse connections long before memory runs out; the hard limit is the operator's to set.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-file limit from %s to %s: %s", soft, want, e)
    return soft


def freeze_startup_heap() -> None:
    """Move what start-up built out of the garbage collector's reach (docs/design.md).

    The app, its routes and models and the imported packages are ~190 000 objects that live as
    long as the process, and every full collection walked them all: in one ``python -m bench``
    (51 s), five, 0.83 s of the event loop's time (docs/benchmarks.md, issue 25, tenth round).
    """
    gc.collect()  # start-up's garbage first: what is frozen is never collected
    gc.freeze()


def main() -> None:
    """Load the config and serve until stopped (exit 4 on a bad or unsafe config)."""
    profiling.start("gateway")  # WALRUS_PROFILE_DIR only (walrus_tasks.profiling)
    heap.install("gateway")  # WALRUS_HEAP_DIR only (walrus_tasks.heap)
    settings_or_exit("walrus gateway")  # a setting not valid: one line, exit 4
    setup_logging()
    if tracing.setup(tracing.GATEWAY):  # OTEL_* variables (walrus_tasks.tracing)
        tracing.instrument_celery()  # the tasks it sends
    settings = get_settings()
    nofile = raise_open_files_limit()
    log.info("open-file limit: %s (each open stream or WebSocket takes one)", nofile)
    from gateway.app import create_app
    from gateway.auth import is_loopback
    from gateway.server import serve

    try:
        config = load_config(settings.home)
        app = create_app(settings, config)
    except ConfigError as e:
        print(f"walrus gateway: bad config: {e.message}", file=sys.stderr)
        sys.exit(RET_CONFIG)
    if not config.gateway.tokens and not is_loopback(settings.gateway_host):
        print(
            f"walrus gateway: refusing to listen on {settings.gateway_host} without tokens: "
            f"set [gateway] tokens in {settings.home / 'config.toml'}, or "
            "WALRUS_GATEWAY_HOST=127.0.0.1",
            file=sys.stderr,
        )
        sys.exit(RET_CONFIG)
    freeze_startup_heap()
    serve(app, settings)  # uvicorn, with the bounds of gateway.server
    profiling.dump()


if __name__ == "__main__":
    main()
