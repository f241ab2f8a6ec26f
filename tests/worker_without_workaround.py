"""``python -m tests.worker_without_workaround``: ``python -m worker`` without
``walrus_tasks.kombu_closed_transport``, to show the upstream bug it works around (and the
exit code of a worker that stops on an unrecoverable error)."""

from __future__ import annotations

from walrus_tasks import kombu_closed_transport

kombu_closed_transport.install = lambda: None  # before celery_app builds the app

from worker.__main__ import main  # noqa: E402

if __name__ == "__main__":
    main()
