"""MCP servers' tools, offered as ``<server>__<tool>`` to the agents that list the server.

The MCP SDK (and the session manager built on it) is imported on first use, so a worker whose
agents use no MCP server does not pay for it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from walrus_tasks.config import AgentConfig, Config, McpServerConfig
from walrus_tasks.names import TOOL_NAME_RE
from walrus_tasks.tool_names import MCP_SEPARATOR
from worker.providers.base import ToolSpec
from worker.tools.base import Tool, ToolContext, ToolFailed
from worker.tools.scope import SOURCES

if TYPE_CHECKING:
    from mcp_types import CallToolResult

log = logging.getLogger("walrus.mcp")

# LLM APIs accept tool names of TOOL_NAME_RE; MCP allows more (``.``, ``/``), so those are mapped.
SEPARATOR = MCP_SEPARATOR


def tool_name(server: str, tool: str) -> str | None:
    """``<server>__<tool>`` with characters LLM APIs refuse replaced by ``_``; None if too long."""
    name = f"{server}{SEPARATOR}{re.sub(r'[^a-zA-Z0-9_-]', '_', tool)}"
    return name if TOOL_NAME_RE.fullmatch(name) else None


def mcp_tools(agent: AgentConfig, config: Config) -> dict[str, Tool]:
    """The tools of the MCP servers ``agent`` lists; an unreachable server offers none."""
    out: dict[str, Tool] = {}
    if not agent.mcps:
        return out
    from worker.mcp_client import McpFailed, sessions

    for server in agent.mcps:
        server_config = config.mcps.get(server)
        if server_config is None:  # load_config refuses this; a stale agent record may not
            continue
        try:
            listed = sessions().tools(server, server_config, config.home)
        except McpFailed as e:
            log.warning("MCP server %s unavailable, its tools are not offered: %s", server, e)
            continue
        for tool in listed:
            name = tool_name(server, tool.name)
            if name is None or name in out:
                log.warning("MCP server %s: tool %r skipped (name unusable)", server, tool.name)
                continue
            out[name] = Tool(
                spec=ToolSpec(
                    name=name,
                    description=tool.description or tool.title or f"{tool.name} ({server})",
                    parameters=_parameters(tool.input_schema),
                ),
                run=_runner(server, server_config, config, tool.name),
            )
    return out


def _parameters(schema: dict[str, Any]) -> dict[str, Any]:
    # Some providers reject an object schema without "properties" (a tool without arguments).
    if schema.get("type") == "object" and "properties" not in schema:
        return {**schema, "properties": {}}
    return schema


def _runner(
    server: str, server_config: McpServerConfig, config: Config, tool: str
) -> Callable[[dict[str, Any], ToolContext], str]:
    def run(args: dict[str, Any], ctx: ToolContext) -> str:
        """Call ``tool`` on ``server``; its error results and failures are ToolFailed."""
        from worker.mcp_client import McpFailed, sessions

        try:
            result = sessions().call(
                server, server_config, config.home, tool, args, cancelled=ctx.cancelled
            )
        except McpFailed as e:
            raise ToolFailed(f"MCP server {server}: {tool} failed: {e}") from None
        output = render(result)
        if result.is_error:
            raise ToolFailed(output or f"MCP server {server}: {tool} failed")
        return output

    return run


def render(result: CallToolResult) -> str:
    """The result as the model sees it: its text contents, else its structured content as JSON.

    Servers are asked to mirror structured content in a text block, so the text wins when
    both are present; binary content is named, not inlined.
    """
    import mcp_types as types

    parts: list[str] = []
    for block in result.content:
        if isinstance(block, types.TextContent):
            parts.append(block.text)
        elif isinstance(block, types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[binary resource {resource.uri} ({resource.mime_type})]")
        elif isinstance(block, types.ResourceLink):
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{block.type} content ({block.mime_type})]")
    has_text = any(isinstance(b, types.TextContent) for b in result.content)
    if result.structured_content is not None and not has_text:
        parts.insert(0, json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


SOURCES.append(mcp_tools)
