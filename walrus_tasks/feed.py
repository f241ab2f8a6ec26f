"""The live feed: every event of every run, read from one bounded Redis Stream (``keys.FEED``).

``emit()`` in ``lua/lib/runs.lua`` appends each run event to the feed in the same atomic step as
to the run's own stream, with the run's ``run_id``, ``agent`` and ``sender``. Readers start at
the live end, or after a feed entry id (SSE ``Last-Event-ID``) to resume with no gap; the
gateway reads it through its one stream reader (``gateway/hub.py``).
"""

from __future__ import annotations

import json
from typing import Any

import redis

from walrus_tasks import keys


def live_end(r: redis.Redis) -> str:
    """The id of the feed's newest entry (``0-0`` if empty): reading after it sees only news."""
    newest: list[tuple[str, dict[str, str]]] = r.xrevrange(keys.FEED, count=1)  # type: ignore[assignment]
    return newest[0][0] if newest else "0-0"


def feed_event(fields: dict[str, str]) -> dict[str, Any]:
    """The run event of one feed entry, with its ``run_id``, ``agent`` and ``sender``."""
    event: dict[str, Any] = json.loads(fields["data"])
    event.update(run_id=fields["run_id"], agent=fields["agent"], sender=fields["sender"])
    return event
