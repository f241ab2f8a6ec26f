"""Which tools an agent may call (its scope), under which permission, and running one call."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import Any

from walrus_tasks import event_types
from walrus_tasks.config import AgentConfig, Config, Permission
from worker.providers.base import ToolSpec
from worker.tools.base import TOOLS, Tool, ToolContext, ToolFailed, WaitFor

ToolSource = Callable[[AgentConfig, Config], dict[str, Tool]]
SOURCES: list[ToolSource] = []
"""Tools that are not built in (MCP servers' tools): each source gives an agent's share."""

SCOPED = {"delegate": "members", "skill": "skills"}
"""Built-in tools an agent gets from a list other than ``tools``: ``delegate`` from ``members``."""

APPROVALS = frozenset({"allow", "approve", "approved", "yes", "y", "ok"})
"""Replies (case-insensitive) that grant an ``ask`` permission; anything else denies."""


def scope(
    agent: AgentConfig, config: Config, limit: Collection[str] | None = None
) -> dict[str, Tool]:
    """The tools ``agent`` may call, without the denied ones.

    Its ``tools`` (built-ins), ``delegate`` if it has ``members``, ``skill`` if it has
    ``skills``, and the tools of its ``mcps``; ``limit`` narrows it (a skill's allowed-tools).
    """
    tools = {n: TOOLS[n] for n in agent.tools if n in TOOLS and n not in SCOPED}
    for name, field in SCOPED.items():
        if getattr(agent, field) and name in TOOLS:
            tools[name] = TOOLS[name]
    for source in SOURCES:
        tools.update(source(agent, config))
    if limit is not None:
        tools = {n: t for n, t in tools.items() if n in limit}
    return {n: t for n, t in tools.items() if permission(agent, n) != "deny"}


def specs_for(
    agent: AgentConfig, config: Config, limit: Collection[str] | None = None
) -> list[ToolSpec]:
    """The specs offered to the model (denied tools are not offered at all)."""
    return [t.spec for t in scope(agent, config, limit).values()]


def permission(agent: AgentConfig, name: str) -> Permission:
    """``agent.permissions[name]``, else ``permissions["*"]``, else ``allow``."""
    return agent.permissions.get(name, agent.permissions.get("*", "allow"))


def approval_question(name: str, arguments: dict[str, Any]) -> event_types.AskUser:
    """The ``ask_user`` event asking the client to approve one call."""
    return event_types.ask_user(
        "approval",
        [
            {
                "question": f"Allow the tool call {name}?",
                "header": "Approval",
                "options": [
                    {"label": "allow", "description": f"run {name} with {arguments}"},
                    {"label": "deny", "description": "refuse; the model is told"},
                ],
                "multi_select": False,
            }
        ],
        tool={"name": name, "arguments": arguments},
    )


def call_tool(
    name: str,
    arguments: dict[str, Any],
    ctx: ToolContext,
    limit: Collection[str] | None = None,
    client: Mapping[str, Tool] | None = None,
) -> tuple[str, bool]:
    """Run one call: ``(output, is_error)``. Raises WaitFor when the run must wait.

    Outside the agent's scope the model gets "tool not available"; ``deny`` refuses;
    ``ask`` waits for the client's approval first (the call runs again when it arrives).
    ``client``: the run's client tools (``worker.tools.client``), none of them the agent's: the
    client runs them, so the agent's permissions do not apply.
    """
    if client and name in client:
        return _run(client[name], arguments, ctx)
    tool = scope(ctx.agent, ctx.config, limit).get(name)
    if permission(ctx.agent, name) == "deny":
        return f"tool {name} is denied by this agent's permissions", True
    if tool is None:
        return f"tool not available: {name}", True
    if permission(ctx.agent, name) == "ask":
        wake = ctx.wake
        if wake is None:
            raise WaitFor(
                "approval", ctx.agent.ask_timeout, event=approval_question(name, arguments)
            )
        if wake.wait == "approval":
            if wake.kind == "timeout":
                return f"no approval for {name} within {ctx.agent.ask_timeout:g}s", True
            if wake.kind != "reply" or wake.content.strip().lower() not in APPROVALS:
                return f"the user denied the call to {name}", True
            ctx = replace(ctx, wake=None)
        # else: approved before; this wake ends a wait of the tool's own
    return _run(tool, arguments, ctx)


def _run(tool: Tool, arguments: dict[str, Any], ctx: ToolContext) -> tuple[str, bool]:
    try:
        return tool.run(arguments, ctx), False
    except ToolFailed as e:
        return str(e), True
