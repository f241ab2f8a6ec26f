"""A tiny real MCP server for the tests (the SDK's MCPServer, formerly FastMCP).

Run as ``python tests/mcp_server.py stdio`` or ``python tests/mcp_server.py http --port N``
(streamable HTTP at ``http://127.0.0.1:N/mcp``).
"""

from __future__ import annotations

import argparse
import os

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("walrus-test", log_level="WARNING")


@server.tool()
def add(a: int | float, b: int | float) -> int | float:
    """Add two numbers."""
    return a + b


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def pid() -> int:
    """This server's process id (the tests kill it to prove reconnection)."""
    return os.getpid()


@server.tool()
def fail(message: str) -> str:
    """Always fail with ``message`` (an ``isError`` result)."""
    raise ToolError(message)


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer (for timeouts and cancellation)."""
    await anyio.sleep(seconds)
    return f"slept {seconds}"


@server.tool(name="dotted.name")
def dotted() -> str:
    """A name LLM APIs refuse (the client maps the dot)."""
    return "dotted"


def main() -> None:
    """Serve on stdio or on streamable HTTP."""
    parser = argparse.ArgumentParser()
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
