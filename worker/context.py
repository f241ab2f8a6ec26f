"""What one LLM call is given: history as the model sees it, plus the per-run context.

The context (environment, members, memory recall hits, an invoked skill) is rebuilt for every
call and never persisted: history in Redis keeps exactly what was said.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from walrus_tasks import memory, skills
from walrus_tasks.config import AgentConfig, Config
from worker.providers.base import LLMRequest, ToolSpec
from worker.tools import specs_for


def last_user_message(messages: list[dict[str, Any]]) -> str:
    """The content of the newest user message ('' if none)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


def expand_skills(
    messages: list[dict[str, Any]], agent: AgentConfig, config: Config
) -> tuple[list[dict[str, Any]], Collection[str] | None]:
    """User messages ``/name rest`` expanded to the agent's skill, and a tool limit.

    The limit is the ``allowed-tools`` of the newest invoked skill that lists any (None: none).
    """
    available = {n: config.skills[n] for n in agent.skills if n in config.skills}
    if not available:
        return messages, None
    out, limit = [], None
    for m in messages:
        hit = (
            skills.invoked(str(m.get("content", "")), available)
            if m.get("role") == "user"
            else None
        )
        if hit is None:
            out.append(m)
            continue
        skill, rest = hit
        out.append({**m, "content": skills.expand(skill, rest)})
        limit = skill.allowed_tools or None
    return out, limit


def system_prompt(agent: AgentConfig, config: Config, cwd: Path, recalled: str) -> str:
    """The agent's prompt followed by this run's context."""
    parts = [agent.system_prompt.strip()] if agent.system_prompt.strip() else []
    env = f"Working directory: {cwd}\nDate: {datetime.now(UTC).date().isoformat()}"
    parts.append(f"<environment>\n{env}\n</environment>")
    described = {n: a.description for n, a in config.agents.items()}
    for tag, title, names, known in (
        ("members", "Agents you can delegate to (tool delegate)", agent.members, described),
        ("skills", "Skills (tool skill, or /name)", agent.skills,
         {n: s.description for n, s in config.skills.items()}),
    ):  # fmt: skip
        rows = [f"- {n}: {known[n] or '(no description)'}" for n in names if n in known]
        if rows:
            parts.append(f"<{tag}>\n{title}:\n" + "\n".join(rows) + f"\n</{tag}>")
    if recalled:
        parts.append(f"<memory>\n{recalled}\n</memory>")
    return "\n\n".join(parts)


def build_request(
    r: redis.Redis,
    agent: AgentConfig,
    config: Config,
    history: list[dict[str, Any]],
    cwd: Path,
    memories: bool = True,
    tenant: str | None = None,
    client: Sequence[ToolSpec] = (),
) -> LLMRequest:
    """The request of one LLM step (``memories`` False: the agent has none, skip the recall).

    Memories are recalled from the agent's memory in ``tenant``, the run's. ``client``: the
    run's client tools, offered after the agent's own (a skill's tool limit is the agent's).
    """
    messages, limit = expand_skills(history, agent, config)
    recalled = ""
    if agent.recall_limit and memories and (query := last_user_message(history)):
        hits = memory.recall(r, agent.name, query, agent.recall_limit, tenant)
        recalled = memory.recall_context(hits)
    return LLMRequest(
        agent=agent,
        model=agent.model_name,
        system=system_prompt(agent, config, cwd, recalled),
        messages=messages,
        tools=[*specs_for(agent, config, limit), *client],
    )
