"""Client tools: functions the client offered with its message, run by the client itself.

A call parks the run (``WaitFor`` of kind ``client``) with ``ask_user {kind: "client_tool",
tool: {name, arguments}, questions: []}``, as ``ask_user`` parks it for a question; the
client's reply is the call's output (``walrus_tasks.client_tools``, docs/waits.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from walrus_tasks import client_tools, event_types
from walrus_tasks.config import AgentConfig
from walrus_tasks.models import ClientTool
from worker.providers.base import ToolSpec
from worker.tools.base import Tool, ToolContext, ToolFailed, WaitFor


def client_tool(tool: ClientTool) -> Tool:
    """The tool the model calls for the client's function ``tool``."""

    def run(args: dict[str, Any], ctx: ToolContext) -> str:
        wake = ctx.wake
        if wake is None:
            asked = {"name": tool.name, "arguments": args}
            event = event_types.ask_user(client_tools.EVENT_KIND, [], tool=asked)
            raise WaitFor(client_tools.WAIT_KIND, ctx.agent.ask_timeout, event=event)
        if wake.kind == "timeout":
            raise ToolFailed(
                f"the client did not return function {tool.name} within {ctx.agent.ask_timeout:g}s"
            )
        if wake.kind == "cancelled":
            raise ToolFailed(f"cancelled while waiting for the client to return {tool.name}")
        return wake.content

    return Tool(ToolSpec(tool.name, tool.description, tool.parameters), run)


def of_run(agent: AgentConfig, record: Mapping[str, str]) -> dict[str, Tool]:
    """The client tools of run ``record`` as tools, by name (none the agent owns)."""
    return {name: client_tool(t) for name, t in client_tools.of_run(agent, record).items()}
