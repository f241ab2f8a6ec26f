"""Strict validation of agent and sender names before they reach a Redis key or a path."""

from __future__ import annotations

import re

from walrus_tasks.errors import InvalidInput

AGENT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
SENDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
DEFAULT_SENDER = "user"
RUN_ID_RE = re.compile(r"^[0-9a-f]{32}$")
"""A run id: 32 lower-case hex digits (a UUID4 without dashes)."""
TOOL_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What LLM APIs accept as a tool name (an MCP tool's or a client's)."""
ENTRY_ID_RE = re.compile(r"^\d+-\d+$")
"""A Redis Stream entry id (``<ms>-<seq>``): SSE ``id``s, ``Last-Event-ID``, ``after``."""


def agent_name(name: str) -> str:
    """Return ``name`` if it is a valid agent name, else raise InvalidInput."""
    if not isinstance(name, str) or not AGENT_RE.fullmatch(name):
        raise InvalidInput(f"invalid agent name {name!r}: must match {AGENT_RE.pattern}")
    return name


def sender_name(name: str | None) -> str:
    """Return the sender (``user`` when empty) if valid, else raise InvalidInput."""
    if name is None or name == "":
        return DEFAULT_SENDER
    if not isinstance(name, str) or not SENDER_RE.fullmatch(name):
        raise InvalidInput(f"invalid sender {name!r}: must match {SENDER_RE.pattern}")
    return name
