"""The live feed: every event of every run, read from one bounded Redis Stream per bucket.

``emit()`` in ``lua/lib/runs.lua`` appends each run event to its run's bucket's feed
(``keys.feed``) in the same atomic step as to the run's own stream, with the run's ``run_id``,
``agent`` and ``sender``. The live feed is the buckets' streams merged, so a position in it is a
*cursor*: the last entry id read of each bucket, ``<id0>,<id1>,…`` (``format_cursor``). Readers
start at the live end, or after a cursor (SSE ``Last-Event-ID``) to resume with no gap; the
gateway reads the buckets through its one stream reader (``gateway/hub.py``).
"""

from __future__ import annotations

import json
import re
from typing import Any

import redis

from walrus_tasks import keys
from walrus_tasks.errors import InvalidInput
from walrus_tasks.names import ENTRY_ID_RE

_ID = ENTRY_ID_RE.pattern.strip("^$")
CURSOR_RE = re.compile(rf"^{_ID}(,{_ID}){{{keys.BUCKETS - 1}}}$")
"""A feed cursor: one stream entry id a bucket."""
CURSOR_MAX = 42 * keys.BUCKETS
"""The longest cursor text (an entry id is at most 41 characters)."""
START = "0-0"


def format_cursor(ids: list[str] | tuple[str, ...]) -> str:
    """The text of a cursor (what an SSE ``id`` of the feed carries)."""
    return ",".join(ids)


def parse_cursor(text: str, what: str = "after") -> list[str]:
    """The entry id of each bucket in a cursor.

    A single entry id (a cursor of the one-stream feed of earlier releases) stands for itself
    in every bucket: the stream ids of one Redis share its clock, so the resume is close.
    """
    if CURSOR_RE.fullmatch(text):
        return text.split(",")
    if ENTRY_ID_RE.fullmatch(text):
        return [text] * keys.BUCKETS
    raise InvalidInput(f"invalid {what} {text!r}: must be a feed cursor (an event's id)")


def live_end(r: redis.Redis) -> str:
    """The cursor of every bucket's newest entry: reading after it sees only news."""
    pipe = r.pipeline(transaction=False)
    for b in range(keys.BUCKETS):
        pipe.xrevrange(keys.feed(b), count=1)
    newest: list[list[tuple[str, Any]]] = pipe.execute()
    return format_cursor([found[0][0] if found else START for found in newest])


def feed_event(fields: dict[str, str]) -> dict[str, Any]:
    """The run event of one feed entry, with its ``run_id``, ``agent`` and ``sender``."""
    event: dict[str, Any] = json.loads(fields["data"])
    event.update(run_id=fields["run_id"], agent=fields["agent"], sender=fields["sender"])
    return event
