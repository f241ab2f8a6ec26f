"""Wire models: request and response bodies of the HTTP API, and run records."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from walrus_tasks import tenancy
from walrus_tasks.names import TOOL_NAME_RE

OnBusy = Literal["enqueue", "reject", "interrupt"]


class RunStatus(StrEnum):
    """The life of a run: ``queued → running ⇄ waiting → succeeded | failed | cancelled``."""

    queued = "queued"
    running = "running"
    waiting = "waiting"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        """True for the three end states."""
        return self in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)


MAX_CLIENT_TOOLS = 64
"""How many client tools one message may offer."""


class ClientTool(BaseModel):
    """A function the client runs itself: offered to the model beside the agent's own tools.

    A call to it parks the run (``ask_user {kind: "client_tool"}``) until the client answers
    with the function's output (``POST …/reply {call_id, content}``); see docs/waits.md.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        pattern=TOOL_NAME_RE.pattern,
        description="the function's name, unique among the agent's tools and the other client "
        "tools of the message",
    )
    description: str = Field(default="", description="what the function does, for the model")
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}},
        description="a JSON Schema of type object for the function's arguments",
    )

    @field_validator("parameters")
    @classmethod
    def _an_object_schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value.get("type") != "object":
            raise ValueError('parameters must be a JSON Schema with "type": "object"')
        # Some providers refuse an object schema without "properties" (no arguments).
        return value if "properties" in value else {**value, "properties": {}}


class SendMessage(BaseModel):
    """``POST /v1/agents/{agent}/messages``."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1)
    sender: str | None = None
    on_busy: OnBusy = "enqueue"
    stream: bool = False
    cwd: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        pattern=r"^[^\x00]+$",
        description="the conversation's working directory from now on: a directory inside the "
        "agent's (relative to it, or absolute); anything else is refused (422)",
    )
    tenant: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the tenant to act in, for an admin token (a tenant token acts in its own "
        "and is refused one here: 403): its conversation, and whose share of the cluster the "
        "run uses (default: the default tenant, and the sender's prefix up to its first ':')",
    )
    client_tools: list[ClientTool] | None = Field(
        default=None,
        max_length=MAX_CLIENT_TOOLS,
        description="functions the client runs itself, offered to the model for this run "
        'beside the agent\'s tools: a call to one emits `ask_user {kind: "client_tool", '
        "call_id, tool: {name, arguments}}` and the run waits (holding no worker) until the "
        "client replies with the output (`POST …/reply {call_id, content}`); a name that is "
        "one of the agent's tools, or given twice, is refused (422)",
    )


class Reply(BaseModel):
    """``POST …/reply``: answers a pending ``ask_user``, approval or client tool call.

    An approval's answer is ``allow`` (or anything else: deny); a client tool call's is the
    function's output (``SendMessage.client_tools``).
    """

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1)
    call_id: str | None = Field(
        default=None,
        max_length=128,
        description="the call_id of the `ask_user` event answered; default: the question, "
        "approval or client tool call that has waited longest",
    )


class Replied(BaseModel):
    """``200`` of a reply: the waiting call resumed, or the reply kept for the next question."""

    run_id: str
    status: Literal["resumed", "queued"]
    call_id: str | None = None


class Steer(BaseModel):
    """``POST …/steer``: a message for the active run's next LLM call."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1)


class Steered(BaseModel):
    """``202`` of a steer: the run that will see the message."""

    run_id: str


class Accepted(BaseModel):
    """``202`` for an accepted message."""

    run_id: str
    events_url: str


class Usage(BaseModel):
    """Token counts of a run, summed over its steps."""

    input_tokens: int = 0
    output_tokens: int = 0


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (32 hex digits) in a W3C ``traceparent``; None if it is not one."""
    parts = (traceparent or "").split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or parts[1] == "0" * 32:
        return None
    return parts[1]


class RunInfo(BaseModel):
    """``GET /v1/runs/{run_id}``."""

    run_id: str
    agent: str
    sender: str
    tenant: str | None = Field(
        default=None, description="the tenant the run is in (None: the default tenant)"
    )
    status: RunStatus
    seq: int = Field(description="position of the message in its conversation, in acceptance order")
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    usage: Usage | None = None
    model: str | None = None
    timer_due: float | None = Field(
        default=None, description="the schedule time of the cron or heartbeat fire that sent it"
    )
    face: str | None = Field(
        default=None,
        description="the protocol a client started it by (http, websocket, openai-chat, "
        "agent-protocol, openai-responses, anthropic-messages, mcp, a2a); null for a run the "
        "system started (cron, heartbeat, subscription, delegate)",
    )
    trace_id: str | None = Field(
        default=None,
        description="the OpenTelemetry trace of the message (32 hex digits), when the gateway "
        "that accepted it exports traces; null otherwise",
    )

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> RunInfo:
        """Build from the run's Redis hash (timestamps stored in ms)."""

        def ts(k: str) -> float | None:
            return int(h[k]) / 1000 if h.get(k) else None

        usage = None
        if "input_tokens" in h or "output_tokens" in h:
            usage = Usage(
                input_tokens=int(h.get("input_tokens", 0)),
                output_tokens=int(h.get("output_tokens", 0)),
            )
        return cls(
            run_id=h["run_id"],
            agent=h["agent"],
            sender=tenancy.bare(h["sender"]),
            tenant=tenancy.tenant_of(h["sender"]),
            status=RunStatus(h["status"]),
            seq=int(h.get("seq", 0)),
            created_at=ts("created_at") or 0.0,
            started_at=ts("started_at"),
            finished_at=ts("finished_at"),
            error=h.get("error") or None,
            usage=usage,
            model=h.get("model") or None,
            timer_due=ts("timer_due"),
            face=h.get("face") or None,
            trace_id=trace_id_of(h.get("traceparent")),
        )


class RunPage(BaseModel):
    """``GET /v1/runs``: one page of runs, newest first, and the cursor of the next page."""

    runs: list[RunInfo]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the next page; null on the last page"
    )


UsageGroup = Literal["tenant", "agent", "model", "hour", "day"]
"""What ``GET /v1/usage`` may group by (``hour`` and ``day`` are periods, in UTC)."""


class UsageRow(BaseModel):
    """The LLM usage of one group (a field not grouped by is null), or of all (the totals)."""

    tenant: str | None = Field(default=None, description="'(default)' for the default tenant")
    agent: str | None = None
    model: str | None = Field(default=None, description="the model that answered the calls")
    period: str | None = Field(
        default=None, description="UTC: 2025-06-01T13:00:00Z by hour, 2025-06-01 by day"
    )
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = Field(default=0, description="LLM calls committed (a step's call)")
    runs: int = Field(default=0, description="runs whose first LLM call was committed here")
    cost_usd: float | None = Field(
        default=None,
        description="from the [prices] of config.toml at read time; null when a model of "
        "the group has tokens but no price",
    )


class UsageReport(BaseModel):
    """``GET /v1/usage``: usage in ``[from, to)`` by hourly bucket, grouped, with the totals."""

    model_config = ConfigDict(populate_by_name=True)

    from_: float = Field(alias="from", description="unix seconds: the first hour counted")
    to: float = Field(description="unix seconds: the end of the last hour counted")
    group_by: list[UsageGroup]
    rows: list[UsageRow]
    totals: UsageRow
    unpriced_models: list[str] = Field(
        default_factory=list,
        description="models with tokens in the range and no price: their cost is left out",
    )


class Cancelled(BaseModel):
    """``200`` of cancelling a conversation's run: the run, or null when nothing was running."""

    run_id: str | None


KillResult = Cancelled
"""The older name of :class:`Cancelled`."""


class Conversation(BaseModel):
    """One row of ``GET /v1/conversations``."""

    agent: str
    sender: str
    tenant: str | None = Field(
        default=None, description="the tenant the conversation is in (None: the default tenant)"
    )
    last_active: float
    active_run: str | None = None
    queued: int = 0


class AgentInfo(BaseModel):
    """One row of ``GET /v1/agents``."""

    name: str
    model: str
    description: str
    tools: list[str]
    members: list[str]


class CronSpec(BaseModel):
    """``POST /v1/crons``: what to send, to whom, and when."""

    model_config = ConfigDict(extra="forbid")

    schedule: str = Field(
        description="5-field cron (minute hour day month weekday) or '@every <n>s|m|h'"
    )
    agent: str
    sender: str | None = Field(default=None, description="default: cron:<id>")
    message: str | None = Field(default=None, min_length=1)
    skill: str | None = Field(default=None, description="sends '/<skill>' instead of a message")
    quiet_start: str | None = Field(default=None, description="HH:MM local: skip fires from here")
    quiet_end: str | None = Field(default=None, description="HH:MM local: until here")
    timezone: str | None = Field(default=None, description="IANA name; default UTC")
    once: bool = Field(default=False, description="delete the entry after its first fire")
    webhook: str | None = Field(
        default=None,
        description="URL POSTed as each fired run ends (a host of [webhooks] allowed_hosts)",
    )
    tenant: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the tenant it belongs to: an admin token's choice (default: the default "
        "tenant); a tenant token's own, and naming one is a 403",
    )


class CronEntry(CronSpec):
    """A stored cron entry, with its fire history."""

    id: str
    sender: str  # always set once stored
    created_at: float
    next_fire_at: float
    last_fire_at: float | None = None
    last_run_id: str | None = None
    fires: int = 0
    skipped: int = 0


class SubscriptionSpec(BaseModel):
    """``POST /v1/subscriptions``: fire ``target_agent`` on every event published to ``source``."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="exact event source, e.g. 'agent:writer:done'")
    target_agent: str
    once: bool = Field(default=False, description="remove the subscription on its first fire")
    tenant: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the tenant it belongs to: an admin token's choice (default: the default "
        "tenant); a tenant token's own, and naming one is a 403",
    )


class Subscription(SubscriptionSpec):
    """A stored subscription."""

    id: str
    created_at: float


class PublishEvent(BaseModel):
    """``POST /v1/publish``: publish ``payload`` to every subscription of ``source``."""

    model_config = ConfigDict(extra="forbid")

    source: str
    payload: Any = Field(description="a string is sent as is, anything else as JSON text")
    tenant: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
        description="the tenant whose subscriptions it fires: an admin token's choice (default: "
        "the default tenant); a tenant token's own, and naming one is a 403",
    )


class Published(BaseModel):
    """``202`` of a publish: the runs it started, one per fired subscription."""

    fired: list[str]
