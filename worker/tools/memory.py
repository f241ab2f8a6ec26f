"""``remember``, ``recall`` and ``forget``: the agent's own memory (``walrus_tasks.memory``).

Each acts on the memory of the agent that calls it, whoever the sender is: a note kept in one
conversation is recalled in every other conversation of that agent.
"""

from __future__ import annotations

import json
from typing import Any

from walrus_tasks import memory, tenancy
from walrus_tasks.errors import InvalidInput
from worker.providers.base import ToolSpec
from worker.tools.base import ToolContext, ToolFailed, arg, register, schema

DEFAULT_HITS = 5
"""Hits ``recall`` returns when the model gives no limit."""
MAX_HITS = 20
"""Most hits one ``recall`` returns."""


@register(
    ToolSpec(
        name="remember",
        description=(
            "Save a note to your long-term memory under a short name, replacing any note of that "
            "name. Aliases are other words it should be found by. Notes are recalled in later "
            "conversations."
        ),
        parameters=schema(
            {
                "name": {"type": "string", "maxLength": memory.MAX_NAME},
                "content": {"type": "string"},
                "aliases": {"type": "array", "items": {"type": "string"}},
            },
            required=["name", "content"],
        ),
    )
)
def remember(args: dict[str, Any], ctx: ToolContext) -> str:
    """Upsert the note; the model sees why it was refused (empty, too large, memory full)."""
    aliases = arg(args, "aliases", list, [])
    try:
        entry = memory.remember(
            ctx.redis,
            ctx.agent.name,
            arg(args, "name", str),
            arg(args, "content", str),
            aliases,
            tenancy.tenant_of(ctx.sender),  # the run's tenant's memory, never another's
        )
    except InvalidInput as e:
        raise ToolFailed(e.message) from e
    return f"remembered {entry.name}" + (
        " (updated)" if entry.updated_at != entry.created_at else ""
    )


@register(
    ToolSpec(
        name="recall",
        description=(
            "Search your long-term memory (keyword match on names, aliases and content). Returns "
            "the best notes as a JSON list of {name, content, score}, best first."
        ),
        parameters=schema(
            {
                "query": {"type": "string"},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_HITS},
            },
            required=["query"],
        ),
    )
)
def recall(args: dict[str, Any], ctx: ToolContext) -> str:
    """The hits as JSON (``[]`` when nothing matches)."""
    query = arg(args, "query", str)
    limit = arg(args, "limit", int, DEFAULT_HITS)
    if not 1 <= limit <= MAX_HITS:
        raise ToolFailed(f"limit must be from 1 to {MAX_HITS}")
    hits = memory.recall(ctx.redis, ctx.agent.name, query, limit, tenancy.tenant_of(ctx.sender))
    return json.dumps(
        [{"name": h.name, "content": h.content, "score": round(h.score, 4)} for h in hits],
        ensure_ascii=False,
    )


@register(
    ToolSpec(
        name="forget",
        description="Delete the note of this name from your long-term memory.",
        parameters=schema({"name": {"type": "string"}}, required=["name"]),
    )
)
def forget(args: dict[str, Any], ctx: ToolContext) -> str:
    """Delete the note; an unknown name is an error the model sees (a typo, most likely)."""
    name = arg(args, "name", str)
    if not memory.forget(ctx.redis, ctx.agent.name, name, tenancy.tenant_of(ctx.sender)):
        raise ToolFailed(f"no memory named {name.strip()!r}")
    return f"forgot {name.strip()}"
