"""Every operation of the gateway, in one table: name, function, arguments, what a token needs.

No ``from __future__ import annotations``: FastAPI reads these signatures at runtime.

Each ``@operation`` below is built into an HTTP route (:func:`routers`) and a WebSocket op
(``gateway.ws``) by :mod:`gateway.operation`; its signature is its argument model for both.
``access="tenant"``: a tenant token may call it, and it keeps to the caller's tenant;
``"admin"``: it acts across tenants and needs an admin token. The functions here only adapt;
what an operation checks and does is in :mod:`gateway.operations` (and :mod:`gateway.manage`
for the config). The streaming operations (a run's events, the live feed, a message answered
with its stream) are in :data:`STREAMS`: each face writes them in its own framing.

The OpenAI and Agent Protocol faces call :mod:`gateway.operations` with their own shapes.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query

from gateway import manage
from gateway import operations as ops
from gateway.admin import Reloaded, reload_config
from gateway.operation import Access, Call, Http, Operation
from walrus_tasks.config import AgentConfig
from walrus_tasks.models import (
    Accepted,
    AgentInfo,
    Cancelled,
    Conversation,
    CronEntry,
    CronSpec,
    Published,
    PublishEvent,
    Replied,
    Reply,
    RunInfo,
    RunPage,
    RunStatus,
    SendMessage,
    Steer,
    Steered,
    Subscription,
    SubscriptionSpec,
)

OPERATIONS: dict[str, Operation] = {}
"""Every request-and-answer operation, by name."""
ALIASES: dict[str, str] = {}
"""Older WebSocket op names -> their operation's name."""

CONVERSATION = "/v1/agents/{agent}/conversations/{sender}"
Tenant = Annotated[
    str | None,
    Query(
        description="an admin token's tenant to act in (a tenant token acts in its own; naming "
        "one is a 403)"
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        description="the same key on a retry answers with the run the first attempt made "
        "(422 if it was used for another message to this conversation)",
    ),
]

NOT_FOUND = {404: "unknown agent", 422: "invalid input"}
TURN = {404: "unknown agent", 409: "no active run / nothing waits", 422: "invalid input"}
CRON = {404: "unknown agent or cron", 422: "invalid entry"}
BUS = {404: "unknown agent or subscription", 413: "body too large", 422: "invalid input"}
MANAGE = {
    404: "unknown agent or conversation",
    409: "in use",
    413: "body too large",
    422: "invalid input or config",
}


def operation(
    name: str,
    access: Access,
    http: Http | None = None,
    aliases: tuple[str, ...] = (),
    checks: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the function below as operation ``name`` (see the module docstring)."""

    def add(fn: Callable[..., Any]) -> Callable[..., Any]:
        assert name not in OPERATIONS and name not in ALIASES, name
        OPERATIONS[name] = Operation(name, fn, access, http, aliases, checks)
        for alias in aliases:
            ALIASES[alias] = name
        return fn

    return add


def find(name: str) -> Operation | None:
    """The operation called ``name`` (or by an older name), or None."""
    return OPERATIONS.get(ALIASES.get(name, name))


# --- agents ---------------------------------------------------------------------------------


@operation("list_agents", "tenant", Http("GET", "/v1/agents", tag="agents"))
def list_agents(call: Call) -> dict[str, list[AgentInfo]]:
    """The configured agents."""
    return {"agents": ops.list_agents(call.config)}


@operation("get_agent", "tenant", Http("GET", "/v1/agents/{agent}", errors=NOT_FOUND, tag="agents"))
def get_agent(call: Call, agent: str) -> AgentInfo:
    """One agent."""
    return ops.agent_info(call.config, agent)


@operation("send", "tenant", Http("POST", "/v1/agents/{agent}/messages", 202, stream=True))
def send(
    call: Call, agent: str, body: SendMessage, idempotency_key: IdempotencyKey = None
) -> Accepted:
    """Accept a message into the conversation: 202 with the run id (or, asked, its stream)."""
    return ops.accepted(
        ops.send(call.r, call.config, agent, body, idempotency_key, call.caller, call.face).run_id
    )


@operation(
    "create_agent", "admin", Http("POST", "/v1/agents", 201, MANAGE, "management"), checks=False
)
def create_agent(call: Call, body: AgentConfig) -> AgentInfo:
    """Write ``agents/<name>.toml`` and reload; 409 if the agent exists."""
    return manage.save_agent(call.app, call.r, call.settings, body, create=True)


@operation(
    "update_agent",
    "admin",
    Http("PUT", "/v1/agents/{agent}", 200, MANAGE, "management"),
    checks=False,
)
def update_agent(call: Call, agent: str, body: manage.AgentFields) -> AgentInfo:
    """Replace the agent's whole config (omitted fields take their defaults) and reload."""
    config = manage.agent_config(agent, body.model_dump(exclude_unset=True))
    return manage.save_agent(call.app, call.r, call.settings, config, create=False)


@operation(
    "delete_agent",
    "admin",
    Http("DELETE", "/v1/agents/{agent}", 200, MANAGE, "management"),
    checks=False,
)
def delete_agent(call: Call, agent: str) -> dict[str, str]:
    """Delete the agent's files and reload; 409 while another agent lists it in members."""
    return manage.delete_agent(call.app, call.r, call.settings, agent)


@operation(
    "list_providers",
    "admin",
    Http("GET", "/v1/providers", tag="management"),
    aliases=("list_models",),
)
def list_providers(call: Call) -> manage.ModelsInfo:
    """The configured providers and the models the agents use."""
    return manage.models_info(call.config)


@operation("list_skills", "admin", Http("GET", "/v1/skills", tag="management"))
def list_skills(call: Call) -> dict[str, list[manage.SkillInfo]]:
    """The skills of ``skills/<name>/SKILL.md``."""
    return manage.skills_info(call.config)


@operation("list_mcps", "admin", Http("GET", "/v1/mcps", tag="management"))
def list_mcps(call: Call) -> dict[str, list[manage.McpInfo]]:
    """The MCP servers and the agents that use them."""
    return manage.mcps_info(call.config)


@operation("stats", "admin", Http("GET", "/v1/stats", tag="management"))
def stats(call: Call) -> manage.Stats:
    """Counts of agents, conversations, active and queued runs, leases, queue depths."""
    return manage.stats(call.r, call.config)


@operation(
    "reload",
    "admin",
    Http("POST", "/v1/admin/reload", 200, {422: "invalid config"}, "crons and config"),
)
def reload(call: Call) -> Reloaded:
    """Re-read the config directory here, then make every process follow (422 if bad)."""
    return reload_config(call.app, call.r, call.settings)


# --- conversations --------------------------------------------------------------------------


@operation("list_conversations", "tenant", Http("GET", "/v1/conversations", tag="conversations"))
def list_conversations(
    call: Call, agent: str | None = None, tenant: Tenant = None
) -> dict[str, list[Conversation]]:
    """Every conversation the token sees, most recent first (``?agent=``, ``?tenant=``)."""
    return {"conversations": ops.conversations(call.r, agent, call.caller, tenant)}


@operation(
    "cancel_run",
    "tenant",
    Http(
        "POST",
        f"{CONVERSATION}/cancel",
        200,
        TURN,
        "conversations",
        aliases=(f"{CONVERSATION}/kill",),
    ),
    aliases=("kill",),
)
def cancel_run(call: Call, agent: str, sender: str, tenant: Tenant = None) -> Cancelled:
    """Cancel the conversation's active run (``run_id`` null if nothing was running)."""
    return ops.cancel(call.r, call.config, agent, sender, call.acting(tenant))


@operation(
    "get_history", "tenant", Http("GET", f"{CONVERSATION}/history", 200, NOT_FOUND, "conversations")
)
def get_history(
    call: Call, agent: str, sender: str, tenant: Tenant = None
) -> dict[str, list[dict[str, Any]]]:
    """The conversation's messages in order."""
    return {"messages": ops.history(call.r, call.config, agent, sender, call.acting(tenant))}


@operation(
    "reply_to_ask", "tenant", Http("POST", f"{CONVERSATION}/reply", 200, TURN, "conversations")
)
def reply_to_ask(
    call: Call, agent: str, sender: str, body: Reply, tenant: Tenant = None
) -> Replied:
    """Answer the pending ``ask_user`` (or approval); resumes the run on any worker."""
    acting = call.acting(tenant)
    return ops.reply(call.r, call.config, agent, sender, body.content, body.call_id or "", acting)


@operation("steer", "tenant", Http("POST", f"{CONVERSATION}/steer", 202, TURN, "conversations"))
def steer(call: Call, agent: str, sender: str, body: Steer, tenant: Tenant = None) -> Steered:
    """Inject a message before the active run's next LLM call; 409 when none is active."""
    return ops.steer(call.r, call.config, agent, sender, body.content, call.acting(tenant))


@operation("compact", "tenant", Http("POST", f"{CONVERSATION}/compact", 202, TURN, "conversations"))
def compact(call: Call, agent: str, sender: str, tenant: Tenant = None) -> Accepted:
    """Summarise the history into one message; the old history goes to the archive."""
    return ops.compact(call.r, call.config, agent, sender, call.acting(tenant))


@operation(
    "get_archive", "tenant", Http("GET", f"{CONVERSATION}/archive", 200, NOT_FOUND, "conversations")
)
def get_archive(
    call: Call, agent: str, sender: str, tenant: Tenant = None
) -> dict[str, list[dict[str, Any]]]:
    """The histories compaction replaced, oldest first (``{archived_at, run_id, messages}``)."""
    return {"archives": ops.archives(call.r, call.config, agent, sender, call.acting(tenant))}


@operation(
    "delete_conversation",
    "tenant",
    Http("DELETE", CONVERSATION, 200, MANAGE, "conversations"),
    checks=False,
)
def delete_conversation(
    call: Call, agent: str, sender: str, tenant: Tenant = None
) -> dict[str, bool]:
    """Delete the conversation's history and state: ``{"deleted": true}``; 409 while busy.

    The agent need not be configured any more: the conversations of a deleted agent can go too.
    """
    return manage.delete_conversation(call.r, agent, sender, call.acting(tenant))


# --- runs -----------------------------------------------------------------------------------


@operation("list_runs", "tenant", Http("GET", "/v1/runs", 200, NOT_FOUND, "runs"))
def list_runs(
    call: Call,
    agent: str | None = None,
    sender: str | None = None,
    status: Annotated[list[RunStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=ops.MAX_RUNS_PAGE)] = 50,
    cursor: str | None = None,
    tenant: Tenant = None,
) -> RunPage:
    """Runs the token sees, newest first, filtered; cursor pages.

    Filters: agent, sender, status (repeatable) and tenant (an admin token's ``?tenant=``).
    """
    return ops.list_runs(call.r, agent, sender, status or (), limit, cursor, call.acting(tenant))


@operation(
    "get_run",
    "tenant",
    Http("GET", "/v1/runs/{run_id}", 200, {404: "unknown run", 422: "invalid run id"}, "runs"),
)
def get_run(call: Call, run_id: str) -> RunInfo:
    """Status of one run."""
    return ops.run_info(call.r, run_id, call.caller)


@operation(
    "cancel_run_by_id",
    "tenant",
    Http(
        "POST", "/v1/runs/{run_id}/cancel", 200, {404: "unknown run", 422: "invalid run id"}, "runs"
    ),
)
def cancel_run_by_id(call: Call, run_id: str) -> Cancelled:
    """Cancel one run by its id, whatever face started it (``run_id`` null: it had ended)."""
    return ops.cancel_run_id(call.r, run_id, call.caller)


# --- crons ----------------------------------------------------------------------------------


@operation("create_cron", "tenant", Http("POST", "/v1/crons", 201, CRON, "crons and config"))
def create_cron(call: Call, body: CronSpec) -> CronEntry:
    """Add a cron entry; it fires from the next schedule time on, without a restart."""
    return ops.create_cron(call.r, call.config, body, call.caller)


@operation("list_crons", "tenant", Http("GET", "/v1/crons", tag="crons and config"))
def list_crons(call: Call) -> dict[str, list[CronEntry]]:
    """Every cron entry (of the token's tenant) with its last and next fire time and last run."""
    return {"crons": ops.list_crons(call.r, call.caller)}


@operation("get_cron", "tenant", Http("GET", "/v1/crons/{cron_id}", 200, CRON, "crons and config"))
def get_cron(call: Call, cron_id: str) -> CronEntry:
    """One cron entry."""
    return ops.get_cron(call.r, cron_id, call.caller)


@operation(
    "delete_cron", "tenant", Http("DELETE", "/v1/crons/{cron_id}", 200, CRON, "crons and config")
)
def delete_cron(call: Call, cron_id: str) -> dict[str, str]:
    """Delete a cron entry (it never fires again): ``{"deleted": id}``, or 404."""
    return ops.delete_cron(call.r, cron_id, call.caller)


# --- the event bus --------------------------------------------------------------------------


@operation("list_subscriptions", "tenant", Http("GET", "/v1/subscriptions", tag="event bus"))
def list_subscriptions(call: Call) -> dict[str, list[Subscription]]:
    """Every subscription (of the token's tenant), oldest first."""
    subs = ops.list_subscriptions(call.r, call.caller)
    return {"subscriptions": [Subscription.model_validate(s) for s in subs]}


@operation(
    "subscribe",
    "tenant",
    Http("POST", "/v1/subscriptions", 201, BUS, "event bus"),
    aliases=("subscribe_event",),
)
def subscribe(call: Call, body: SubscriptionSpec) -> Subscription:
    """Subscribe ``target_agent`` to every event published to exactly ``source``."""
    return Subscription.model_validate(ops.subscribe(call.r, call.config, body, call.caller))


@operation(
    "unsubscribe",
    "tenant",
    Http("DELETE", "/v1/subscriptions/{sub_id}", 200, BUS, "event bus"),
    aliases=("unsubscribe_event",),
)
def unsubscribe(call: Call, sub_id: str) -> dict[str, str]:
    """Remove a subscription: ``{"deleted": id}``, or 404 if there is none with this id."""
    return ops.unsubscribe(call.r, sub_id, call.caller)


@operation(
    "publish",
    "tenant",
    Http("POST", "/v1/publish", 202, BUS, "event bus", aliases=("/v1/events",)),
    aliases=("publish_event",),
)
def publish(call: Call, body: PublishEvent) -> Published:
    """Send ``payload`` to every subscription of ``source`` (in the token's tenant)."""
    return ops.publish(call.r, body.source, body.payload, call.caller, body.tenant)


# --- streams: written by each face in its own framing ---------------------------------------

STREAMS: dict[str, tuple[Access, str]] = {
    "stream": ("tenant", "POST /v1/agents/{agent}/messages with Accept: text/event-stream"),
    "run_events": ("tenant", "GET /v1/runs/{run_id}/events"),
    "feed": ("admin", "GET /v1/events"),
}
"""The streaming operations: name -> (what a token needs, the HTTP route that serves it).

``send`` answered with its stream and a run's events are in :mod:`gateway.native`, the live
feed in :mod:`gateway.bus`, their WebSocket ops (``stream``, ``feed``) in :mod:`gateway.ws`."""
STREAM_ALIASES = {"subscribe_events": "feed"}
"""Older WebSocket names of the streams."""


def routers() -> list[APIRouter]:
    """One router per tag, with the HTTP route of every operation that has one."""
    by_tag: dict[str, APIRouter] = {}
    for op in OPERATIONS.values():
        if op.http is not None and not op.http.stream:
            op.add_route(by_tag.setdefault(op.http.tag, APIRouter()))
    return list(by_tag.values())
