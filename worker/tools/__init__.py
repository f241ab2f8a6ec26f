"""The tools agents call: the registry, the scope and permission rules, and every built-in.

Importing this package registers every built-in tool (each module adds its own).
"""

from worker.tools import ask, client, clock, delegate, files, mcp, memory, shell, skill
from worker.tools.base import TOOLS, Tool, ToolContext, ToolFailed, WaitFor, Wake
from worker.tools.scope import call_tool, permission, scope, specs_for

__all__ = [
    "TOOLS",
    "Tool",
    "ToolContext",
    "ToolFailed",
    "WaitFor",
    "Wake",
    "ask",
    "call_tool",
    "client",
    "clock",
    "delegate",
    "files",
    "mcp",
    "memory",
    "permission",
    "scope",
    "shell",
    "skill",
    "specs_for",
]
