"""The tool registry: what a model may call, and how a call runs inside a tool task."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from walrus_tasks.config import AgentConfig
from worker.providers.base import ToolSpec


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know about the call: whose conversation, and the run's pause."""

    agent: AgentConfig
    sender: str
    run_id: str
    pause: Callable[[float], None]


@dataclass(frozen=True)
class Tool:
    """A callable tool: its spec (offered to the model) and its body."""

    spec: ToolSpec
    run: Callable[[dict[str, Any], ToolContext], str]


class ToolFailed(Exception):
    """Raised by a tool body for an error the model should see (``is_error: true``)."""


def _clock(args: dict[str, Any], ctx: ToolContext) -> str:
    now = time.time()
    return json.dumps({"utc": datetime.fromtimestamp(now, UTC).isoformat(), "unix": round(now, 3)})


MAX_SLEEP = 60.0
"""Longest pause the ``sleep`` tool grants (seconds)."""


def _sleep(args: dict[str, Any], ctx: ToolContext) -> str:
    seconds = args.get("seconds", 5)
    if not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_SLEEP:
        raise ToolFailed(f"seconds must be a number from 0 to {MAX_SLEEP:g}")
    ctx.pause(float(seconds))  # interruptible: a kill ends the pause at once
    return f"slept {seconds:g}s"


TOOLS: dict[str, Tool] = {
    "clock": Tool(
        spec=ToolSpec(
            name="clock",
            description="The current date and time (UTC ISO-8601 and Unix seconds).",
            parameters={"type": "object", "properties": {}, "additionalProperties": False},
        ),
        run=_clock,
    ),
    "sleep": Tool(
        spec=ToolSpec(
            name="sleep",
            description="Wait a number of seconds (default 5, at most 60), e.g. before a retry.",
            parameters={
                "type": "object",
                "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": MAX_SLEEP}},
                "additionalProperties": False,
            },
        ),
        run=_sleep,
    ),
}


def specs_for(agent: AgentConfig) -> list[ToolSpec]:
    """The tools offered to ``agent``: its ``tools`` list, limited to what exists."""
    return [TOOLS[name].spec for name in agent.tools if name in TOOLS]


def call_tool(name: str, arguments: dict[str, Any], ctx: ToolContext) -> tuple[str, bool]:
    """Run one tool call; ``(output, is_error)``. Outside the agent's whitelist it is refused."""
    if name not in ctx.agent.tools or name not in TOOLS:
        return f"tool not available: {name}", True
    try:
        return TOOLS[name].run(arguments, ctx), False
    except ToolFailed as e:
        return str(e), True
