"""The faces (protocols) a run can be started by: one name each, kept with the run.

A client's run records the face it was sent by (the run field ``face``): ``GET /v1/runs/{id}``,
the runs list and the console show it, and any face can follow or cancel the run whatever face
started it. Runs the system starts itself (cron, heartbeat, a subscription, a delegate call) have
no face. The id each face gives a run, and how it maps back to the walrus run id, is in the
face's own module and in ``docs/faces.md``.
"""

from __future__ import annotations

from typing import Literal, get_args

Face = Literal[
    "http",  # the native /v1 routes
    "websocket",  # the native WebSocket
    "openai-chat",  # POST /v1/chat/completions
    "agent-protocol",  # the Agent Protocol (LangGraph SDKs)
    "openai-responses",  # POST /v1/responses
    "anthropic-messages",  # POST /v1/messages
    "mcp",  # the MCP server at /mcp
    "a2a",  # A2A at /a2a/{agent}
]

FACES: frozenset[str] = frozenset(get_args(Face))
"""Every face name (a run field ``face`` holds one of these, or is absent)."""
