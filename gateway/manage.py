"""Management: conversations and agents deleted or written, config listings, cluster figures.

Delete a conversation; create, replace and delete agents; list the providers, skills and MCP
servers of the config; count what Redis holds.

An agent change writes ``agents/<name>.toml`` (:mod:`walrus_tasks.agent_files`: validated on a
copy first, so a bad body is a 422 and nothing changes), then reloads like ``POST
/v1/admin/reload``, so every gateway, worker and beat follows. Each operation is a plain function
here, served over HTTP and the WebSocket through :mod:`gateway.registry`. All of them act
across agents and need a full-access token (``gateway.auth``), except deleting a conversation,
which a token limited to that conversation's agent may do.
"""

from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import redis
from fastapi import FastAPI
from pydantic import BaseModel, Field

from gateway.admin import reload_config
from gateway.operations import info_of
from walrus_tasks import agent_files, conversations, indexes, keys, limits
from walrus_tasks.celery_app import ALL_QUEUES
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.errors import InvalidInput
from walrus_tasks.limits import LimitUse
from walrus_tasks.metrics import read_figures
from walrus_tasks.models import AgentInfo
from walrus_tasks.names import agent_name, sender_name
from walrus_tasks.settings import Settings
from walrus_tasks.tenancy import scoped


class AgentFields(AgentConfig):
    """``PUT /v1/agents/{agent}``: the agent's whole config; ``name`` may be left out."""

    name: str = ""


class ProviderInfo(BaseModel):
    """A configured LLM endpoint (never its key)."""

    name: str
    kind: str
    base_url: str | None


class ModelsInfo(BaseModel):
    """``GET /v1/providers``: the providers, and the models the agents use."""

    providers: list[ProviderInfo]
    models: list[str]


class SkillInfo(BaseModel):
    """A skill of ``skills/<name>/SKILL.md`` (without its body)."""

    name: str
    description: str
    allowed_tools: list[str]


class McpInfo(BaseModel):
    """A configured MCP server and the agents that use it (never its args or env)."""

    name: str
    transport: Literal["stdio", "http"]
    command: str | None = None
    url: str | None = None
    agents: list[str]


class Stats(BaseModel):
    """``GET /v1/stats``: counts read from Redis (and the broker, when it is another server)."""

    agents: int
    conversations: int
    active_runs: int
    queued: int
    leases: int
    queues: dict[str, int]
    broker_up: bool = Field(
        default=True, description="false when a separate broker did not answer (queues unknown)"
    )
    unacked: int | None = Field(
        description="delivered, not acknowledged (None: the broker does not count them)"
    )
    runs: dict[str, dict[str, Any]]
    tenants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="runs ended (per status) and tokens used, by tenant ('(default)': the "
        "default tenant)",
    )
    limits: list[LimitUse] = []
    """Each cluster-wide limit (provider, model, tenant): its use and the steps waiting for it."""


def agent_config(name: str, fields: Mapping[str, Any]) -> AgentConfig:
    """Agent ``name`` with ``fields``; a ``name`` among them must be ``name`` (InvalidInput)."""
    given = fields.get("name") or name
    if given != name:
        raise InvalidInput(f"body name {given!r} differs from the agent {name!r}")
    return AgentConfig.model_validate({**fields, "name": agent_name(name)})


def save_agent(
    app: FastAPI, r: redis.Redis, settings: Settings, agent: AgentConfig, *, create: bool
) -> AgentInfo:
    """Create (Conflict if it exists) or replace (NotFound if not) an agent, then reload."""
    agent_files.save(settings.home, agent, create=create)
    reload_config(app, r, settings)
    return info_of(app.state.config.agent(agent.name))


def delete_agent(app: FastAPI, r: redis.Redis, settings: Settings, name: str) -> dict[str, str]:
    """Delete an agent (NotFound; Conflict while another lists it in members), then reload."""
    agent_files.delete(settings.home, name)
    reload_config(app, r, settings)
    return {"deleted": name}


def delete_conversation(
    r: redis.Redis, agent: Any, sender: Any, tenant: str | None = None
) -> dict[str, bool]:
    """Delete a conversation of ``tenant`` (NotFound; Conflict while a run is active or queued).

    The agent need not be configured any more: the conversations of a deleted agent can go too.
    """
    conversations.delete(r, agent_name(agent), scoped(tenant, sender_name(sender)))
    return {"deleted": True}


def _public_url(url: str | None) -> str | None:
    """``url`` without what may be a secret: ``user:password@`` and the query string."""
    if url is None:
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def models_info(config: Config) -> ModelsInfo:
    """The providers (name, kind, base URL) and the distinct models of the agents."""
    providers = [
        ProviderInfo(name=n, kind=p.kind, base_url=_public_url(p.base_url))
        for n, p in sorted(config.providers.items())
    ]
    return ModelsInfo(providers=providers, models=sorted({a.model for a in config.agents.values()}))


def skills_info(config: Config) -> dict[str, list[SkillInfo]]:
    """Every skill, by name."""
    skills = [
        SkillInfo(name=s.name, description=s.description, allowed_tools=s.allowed_tools)
        for _, s in sorted(config.skills.items())
    ]
    return {"skills": skills}


def mcps_info(config: Config) -> dict[str, list[McpInfo]]:
    """Every MCP server with its transport and the agents that list it (no connection made)."""
    out = []
    for name, m in sorted(config.mcps.items()):
        users = sorted(a.name for a in config.agents.values() if name in a.mcps)
        if m.command is not None:
            out.append(McpInfo(name=name, transport="stdio", command=m.command, agents=users))
        else:
            out.append(McpInfo(name=name, transport="http", url=_public_url(m.url), agents=users))
    return {"mcps": out}


def stats(r: redis.Redis, config: Config) -> Stats:
    """The figures ``GET /metrics`` exports, plus the runs waiting in conversation inboxes."""
    figures = read_figures(r, ALL_QUEUES)
    inboxes = indexes.members(r, "inboxes")
    pipe = r.pipeline(transaction=False)
    for conversation in inboxes:
        pipe.llen(keys.conv(conversation, "inbox"))
    return Stats(
        agents=len(config.agents),
        conversations=figures.conversations,
        active_runs=figures.active_runs,
        queued=sum(pipe.execute()),
        leases=figures.leases,
        queues=figures.queues,
        broker_up=figures.broker_up,
        unacked=figures.unacked,
        runs={agent: s.as_dict() for agent, s in figures.runs.items()},
        tenants={name: s.as_dict() for name, s in figures.tenants.items()},
        limits=limits.usage(r, config),
    )
