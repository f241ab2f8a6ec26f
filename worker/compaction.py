"""Compaction: an LLM summary replaces a conversation's history, which is archived.

``reads.compact`` archives the old history and emits ``compacted {content: "[context
compacted]"}``. It runs inside a run, under the conversation lease: as its own run
(``kind=compact``, requested over the API) or before the first LLM call of a run past
``compact_threshold``.
"""

from __future__ import annotations

import json
from typing import Any

import redis

from walrus_tasks import event_types, reads, runs
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.errors import LeaseLost
from walrus_tasks.lease import Fence, LeaseKeeper
from worker.providers import provider_for
from worker.providers.base import LLMRequest, TextDelta

TOOL_OUTPUT_CAP = 1024
"""Characters of each tool output the summariser sees (~1 KiB, as the original daemon cuts it)."""

MARKER = "[context compacted]"

INSTRUCTIONS = (
    "Summarise the conversation below so that it can continue from the summary alone. Keep "
    "facts, decisions, names, file paths, open tasks and the user's preferences; drop "
    "small talk. Write the summary only."
)


def message_chars(m: dict[str, Any]) -> int:
    """The characters of one message that the estimate counts: content and tool calls."""
    calls = m.get("tool_calls", "")
    # json.dumps of "" and [] is 2 characters: skip the call for the messages without calls.
    return len(str(m.get("content", ""))) + (2 if calls in ("", []) else len(json.dumps(calls)))


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """Estimated context size: characters / 4, as the original daemon estimates it."""
    return sum(message_chars(m) for m in messages) // 4


def transcript(messages: list[dict[str, Any]]) -> str:
    """The history as plain text for the summariser (tool outputs truncated)."""
    lines = []
    for m in messages:
        role, content = m.get("role", "?"), str(m.get("content", ""))
        if role == "tool":
            if len(content) > TOOL_OUTPUT_CAP:
                content = content[:TOOL_OUTPUT_CAP] + f"… [{len(content) - TOOL_OUTPUT_CAP} more]"
            lines.append(f"[tool {m.get('name', '')}] {content}")
            continue
        calls = "".join(
            f"\n[calls {c['name']}({json.dumps(c['arguments'], ensure_ascii=False)})]"
            for c in m.get("tool_calls", [])
        )
        lines.append(f"[{role}] {content}{calls}")
    return "\n".join(lines)


def compact(
    r: redis.Redis,
    fence: Fence,
    agent: AgentConfig,
    config: Config,
    keeper: LeaseKeeper,
    keep: int = 0,
) -> int:
    """Summarise and replace all but the last ``keep`` messages; how many were archived."""
    history = reads.history(r, fence.agent, fence.sender)
    old = history[: len(history) - keep]
    if not old:
        return 0
    request = LLMRequest(
        agent=agent,
        model=agent.model_name,
        system=INSTRUCTIONS,
        messages=[{"role": "user", "content": transcript(old)}],
        tools=[],
    )
    text = []
    for item in provider_for(agent, config).stream(request, keeper.wait):
        keeper.check()
        if isinstance(item, TextDelta):
            text.append(item.text)
    summary = {
        "role": "user",
        "content": f"[Summary of the conversation so far]\n{''.join(text).strip()}",
        "run_id": fence.run_id,
        "summary": True,
    }
    event = event_types.compacted(MARKER, len(old))
    state, archived = runs.compact(r, fence, summary, keep, len(history), event)
    if state == "fenced":
        raise LeaseLost(f"run {fence.run_id}: lease lost while compacting")
    return archived
