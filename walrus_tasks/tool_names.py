"""The names of the built-in tools, known without loading any tool.

An agent's ``tools`` may list only these: ``config.load_config`` refuses another name, so a
config file with one does not load and the API answers 422 (``agent_files`` validates every
change with ``load_config``). The gateway checks agents without importing tool code (the
import contract in ``pyproject.toml``), so the names live here; ``tests/test_config.py`` holds
them equal to the worker's registry (``worker.tools.TOOLS``).
"""

from __future__ import annotations

BUILTIN_TOOLS = frozenset(
    {
        "ask_user",
        "bash",
        "clock",
        "delegate",
        "edit",
        "forget",
        "read",
        "recall",
        "remember",
        "skill",
        "sleep",
        "write",
    }
)
"""Every tool ``worker.tools`` registers (``delegate`` and ``skill`` come with ``members`` and
``skills`` too)."""

MCP_SEPARATOR = "__"
"""Between an MCP server's name and its tool's in the name offered (``<server>__<tool>``;
server names cannot contain ``_``)."""
