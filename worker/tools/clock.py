"""``clock`` and ``sleep``: the tools that need nothing but the run."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

from worker.providers.base import ToolSpec
from worker.tools.base import ToolContext, ToolFailed, register, schema

MAX_SLEEP = 60.0
"""Longest pause the ``sleep`` tool grants (seconds)."""


@register(
    ToolSpec(
        name="clock",
        description="The current date and time (UTC ISO-8601 and Unix seconds).",
        parameters=schema({}),
    )
)
def clock(args: dict[str, Any], ctx: ToolContext) -> str:
    """Now, in UTC."""
    now = time.time()
    return json.dumps({"utc": datetime.fromtimestamp(now, UTC).isoformat(), "unix": round(now, 3)})


@register(
    ToolSpec(
        name="sleep",
        description="Wait a number of seconds (default 5, at most 60), e.g. before a retry.",
        parameters=schema({"seconds": {"type": "number", "minimum": 0, "maximum": MAX_SLEEP}}),
    )
)
def sleep(args: dict[str, Any], ctx: ToolContext) -> str:
    """Pause, interruptibly: a kill ends the pause at once."""
    seconds = args.get("seconds", 5)
    if not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_SLEEP:
        raise ToolFailed(f"seconds must be a number from 0 to {MAX_SLEEP:g}")
    ctx.pause(float(seconds))
    return f"slept {seconds:g}s"
