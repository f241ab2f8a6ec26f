"""``skill {name}``: the instructions of one of the agent's skills."""

from __future__ import annotations

from typing import Any

from worker.providers.base import ToolSpec
from worker.tools.base import ToolContext, ToolFailed, arg, register, schema


@register(
    ToolSpec(
        name="skill",
        description="Load the instructions of one of your skills by name, then follow them.",
        parameters=schema({"name": {"type": "string"}}, required=["name"]),
    )
)
def skill(args: dict[str, Any], ctx: ToolContext) -> str:
    """The skill's body (front matter removed)."""
    name = arg(args, "name", str)
    if name not in ctx.agent.skills or name not in ctx.config.skills:
        raise ToolFailed(f"unknown skill {name!r} (yours: {', '.join(ctx.agent.skills) or 'none'})")
    return ctx.config.skills[name].body
