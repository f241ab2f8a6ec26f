"""What every tool shares: its context, its spec and body, and the two ways it can end early."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis

from walrus_tasks import event_types
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.runs import WaitKind
from worker.providers.base import ToolSpec

WakeKind = Literal["reply", "timeout", "cancelled", "children"]


@dataclass(frozen=True)
class Wake:
    """What ended a tool call's wait: a client reply, the timeout, a kill, or finished children."""

    wait: WaitKind
    kind: WakeKind
    content: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    since: int = 0
    """When the wait began (ms; 0: unknown), for the call's trace span."""


@dataclass(frozen=True)
class ToolContext:
    """What a tool may know and use: whose conversation, where, and the run's controls.

    ``pause`` sleeps but returns early (raising Cancelled) on a kill; ``cancelled`` is true
    once the run is killed or its lease lost (``lost``): either way the call must stop.
    ``lease_expires`` is the ``time.monotonic()`` by which the lease expires unless renewed
    again (a process a tool starts must not outlive it). ``wake`` is set when the call runs
    again after a wait (``WaitFor``) ended.
    """

    agent: AgentConfig
    config: Config
    sender: str
    run_id: str
    call_id: str
    redis: redis.Redis
    cwd: Path
    pause: Callable[[float], None]
    cancelled: Callable[[], bool]
    wake: Wake | None = None
    lost: Callable[[], bool] = lambda: False
    lease_expires: Callable[[], float] = lambda: math.inf


@dataclass(frozen=True)
class Tool:
    """A callable tool: its spec (offered to the model) and its body."""

    spec: ToolSpec
    run: Callable[[dict[str, Any], ToolContext], str]


class ToolFailed(Exception):
    """Raised by a tool body for an error the model should see (``is_error: true``)."""


class WaitFor(Exception):
    """Raised by a tool body to park the run until a client reply, children, or a timeout.

    The run enters ``waiting`` and frees its worker; ``event`` (if any) is emitted atomically
    with the wait being registered. When the wait ends the same call runs again, on any worker,
    with ``ctx.wake`` set.
    """

    def __init__(
        self,
        kind: WaitKind,
        timeout: float,
        event: event_types.AskUser | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(f"waiting for {kind}")
        self.kind = kind
        self.timeout = timeout
        self.event = event
        self.data = data or {}


TOOLS: dict[str, Tool] = {}
"""The built-in tools by name (filled by the modules of this package as they are imported)."""


def register(spec: ToolSpec) -> Callable[[Callable[[dict[str, Any], ToolContext], str]], Tool]:
    """Decorator: add the function as the body of the built-in tool ``spec``."""

    def add(body: Callable[[dict[str, Any], ToolContext], str]) -> Tool:
        tool = TOOLS[spec.name] = Tool(spec=spec, run=body)
        return tool

    return add


def schema(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """A JSON-schema object of ``properties`` (no extra properties)."""
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    return out


def arg(args: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    """Argument ``name`` of type ``kind``; ToolFailed (seen by the model) when missing or wrong."""
    if name not in args or args[name] is None:
        if default is ...:
            raise ToolFailed(f"missing argument: {name}")
        return default
    value = args[name]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ToolFailed(f"argument {name} must be {names}")
    return value
