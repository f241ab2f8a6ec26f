"""One entry of a run event stream (Redis Streams): parsed, and framed for SSE."""

from __future__ import annotations

import json
from typing import Any

from walrus_tasks.event_types import event_json


def parse(entry_id: str, fields: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """``(entry id, event)`` of one stream entry."""
    return entry_id, json.loads(fields["data"])


def sse_frame(entry_id: str, event: dict[str, Any]) -> str:
    """One SSE frame: ``id`` = stream entry id, ``event`` = type, ``data`` = the JSON event."""
    return f"id: {entry_id}\nevent: {event['type']}\ndata: {event_json(event)}\n\n"
