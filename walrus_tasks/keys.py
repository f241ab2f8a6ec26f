"""The Redis key schema: every key walrus_tasks writes is named here and nowhere else.

A conversation is the pair ``(agent, sender)``; its id ``cid`` is ``agent:sender`` (agent names
contain no ``:``, so the split is unambiguous).

The Lua scripts get the same schema from ``lua_library()``, generated from this module and put in
front of every script: Lua never spells a key name (``tests/test_keys.py`` checks).
"""

from __future__ import annotations

from typing import Literal, get_args

PREFIX = "walrus:"

CONVERSATIONS = PREFIX + "conversations"
"""ZSET cid -> last activity (ms): the conversation index."""
LEASES = PREFIX + "leases"
"""ZSET cid -> lease expiry (ms): what the reaper sweeps."""
INBOXES = PREFIX + "inboxes"
"""ZSET cid -> time (ms) its inbox became non-empty: the reaper re-drains stale ones."""
ACTIVE_RUNS = PREFIX + "runs:active"
"""SET of run ids in ``running`` (or ``waiting``) state."""
RUNS = PREFIX + "runs"
"""ZSET run id -> created_at (ms): every submitted run, newest last (``GET /v1/runs``). Capped at
``RUNS_MAXLEN``; a member whose record has expired is skipped, and removed, when listed."""
RUNS_MAXLEN = 100_000
"""How many run ids ``RUNS`` keeps (the oldest go first)."""
FEED_MAXLEN = 10_000
"""About how many entries the live feed (``FEED``) keeps."""
WEBHOOKS = PREFIX + "webhooks"
"""ZSET run id -> until when (ms) its webhook is held: the outbox of run webhooks
(``walrus_tasks.webhooks``). ``lua/finish.lua`` adds a run with a webhook as it ends; the
delivery removes it; the reaper sends again whatever is still here past its hold."""
METRICS_RUNS = PREFIX + "metrics:runs"
"""HASH of cluster-wide run figures (``walrus_tasks.metrics``): ``n:{agent}:{status}`` runs ended,
``sum:{agent}`` their seconds, ``le:{agent}:{bound}`` runs per duration bucket (not cumulative)."""


def cid(agent: str, sender: str) -> str:
    """The conversation id of ``(agent, sender)``."""
    return f"{agent}:{sender}"


def split_cid(conversation: str) -> tuple[str, str]:
    """``(agent, sender)`` of a conversation id."""
    agent, sender = conversation.split(":", 1)
    return agent, sender


ConvPart = Literal[
    "inbox", "lease", "fence", "active", "history", "seq", "cwd", "archive", "read", "epoch"
]  # fmt: skip
CONV_PARTS: dict[ConvPart, str] = {
    "inbox": "LIST of the run ids of queued messages, in acceptance order",
    "lease": "STRING (PX): the fencing token of the run holding the conversation",
    "fence": "STRING: the last fencing token handed out, max(last + 1, master clock ms): it "
    "never goes back, across a failover too (``lua/lib/fence.lua``)",
    "active": "STRING: the run id of the conversation's active (running or waiting) run",
    "history": "LIST of JSON messages, in conversation order",
    "seq": "STRING counter: messages accepted so far (a run's ``seq``)",
    "cwd": "STRING: the working directory given on send, for its runs from then on",
    "archive": "LIST of JSON ``{archived_at, run_id, messages}``: compacted-away history",
    "read": "SET of the resolved file paths its tools read or wrote (what ``edit`` may change)",
    "epoch": "STRING counter: bumped whenever history is rewritten rather than appended to "
    "(compaction, rollback, import), so a worker's copy of it is read again "
    "(``worker/history_cache.py``)",
}
"""Every key of one conversation, ``conv(cid, part)``."""


def conv(conversation: str, part: ConvPart) -> str:
    """A key of one conversation (``CONV_PARTS`` says what each holds)."""
    return f"{PREFIX}conv:{conversation}:{part}"


def conv_pattern(part: ConvPart) -> str:
    """A SCAN pattern matching ``part`` of every conversation (``conv_cid`` reads the cid back)."""
    return f"{PREFIX}conv:*:{part}"


def conv_cid(key: str, part: ConvPart) -> str:
    """The conversation id of a key named by ``conv(cid, part)``."""
    return key[len(f"{PREFIX}conv:") : -len(f":{part}")]


def memory(agent: str, tenant: str | None = None) -> str:
    """HASH entry name -> JSON entry: an agent's memory (``walrus_tasks.memory``) in ``tenant``.

    ``memory("*")`` is the SCAN pattern of every agent's memory in the default tenant; a named
    tenant's live under ``tenant:<tenant>:`` (``walrus_tasks.tenancy``), apart from those.
    """
    if tenant:
        return f"{PREFIX}tenant:{tenant}:memory:{agent}"
    return f"{PREFIX}memory:{agent}"


def memory_owner(key: str) -> tuple[str, str] | None:
    """``(tenant, agent)`` of a named tenant's memory key, else None (another of its keys)."""
    head = f"{PREFIX}tenant:"
    tenant, sep, rest = key.removeprefix(head).partition(":")
    if not key.startswith(head) or not sep or not rest.startswith("memory:"):
        return None
    agent = rest.removeprefix("memory:")
    return (tenant, agent) if agent and ":" not in agent else None


def run(run_id: str) -> str:
    """HASH: the run record (status, phase, step, timestamps, usage, what it was sent)."""
    return f"{PREFIX}run:{run_id}"


RunPart = Literal["events", "cancel", "claim", "results", "waits", "wakes", "replies", "steer"]
RUN_PARTS: dict[RunPart, str] = {
    "events": "STREAM of the run's events; lives ``events_ttl`` after the run ends",
    "cancel": "STRING: the kill flag, polled between chunks and during tools",
    "claim": "STRING (PX): the delivery executing the current LLM step",
    "results": "HASH call id -> tool message: the current step's finished tool calls",
    "waits": "HASH call id -> JSON ``{kind, deadline, data}``: the calls parked waiting",
    "wakes": "HASH call id -> JSON wake: what ended each call's wait",
    "replies": "LIST of client replies that came before the question they answer",
    "steer": "LIST of steering messages for the next LLM step",
}
"""Every key of one run besides its record, ``run_part(run_id, part)``."""

RUN_ENDED_PARTS: tuple[RunPart, ...] = (
    "cancel", "claim", "results", "waits", "wakes", "replies", "steer"
)  # fmt: skip
"""What ``lua/finish.lua`` deletes as the run ends: all but its record and event stream, which
live ``events_ttl`` more for late readers."""

CallPart = Literal["claim", "children", "spawned"]
CALL_PARTS: dict[CallPart, str] = {
    "claim": "STRING (PX): the delivery executing this tool call",
    "children": "HASH child run id -> its JSON result ('' while it runs): a delegate's children",
    "spawned": "STRING: JSON list of the run ids a delegate call submitted (once)",
}
"""Keys of one tool call of a run, ``run_call(run_id, part, call_id)``; each has a TTL."""


def run_part(run_id: str, part: RunPart) -> str:
    """A key of one run (``RUN_PARTS`` says what each holds)."""
    return f"{PREFIX}run:{run_id}:{part}"


def run_call(run_id: str, part: CallPart, call_id: str) -> str:
    """A key of one tool call of a run (``CALL_PARTS`` says what each holds)."""
    return f"{PREFIX}run:{run_id}:{part}:{call_id}"


def run_keys(run_id: str) -> list[str]:
    """The run's record and every run-wide key (not the per-call ones), for tests and cleanup."""
    return [run(run_id)] + [run_part(run_id, p) for p in RUN_PARTS]


# --- the event bus: subscriptions and the live feed (walrus_tasks.subscriptions, .feed) ---------

SUBSCRIPTIONS = PREFIX + "subs"
"""HASH subscription id -> the subscription as JSON (``{id, source, target_agent, once, …}``)."""
FEED = PREFIX + "feed"
"""STREAM of every run event of every run (``run_id``, ``agent``, ``sender``, ``data``), capped
at about 10 000 entries; appended by ``emit()`` in ``lua/lib/runs.lua``, atomically with the run's
own stream."""


def subs_source(source: str) -> str:
    """SET of the ids of the subscriptions to ``source`` (``subs_source("")`` is the prefix)."""
    return f"{PREFIX}subs:source:{source}"


# --- beat: cron, heartbeats, the beat lock (walrus_tasks.crons, beat.scheduler) -----------------

CRONS = PREFIX + "crons"
"""HASH cron id -> the entry as JSON (:class:`walrus_tasks.models.CronEntry`)."""
CRONS_DUE = PREFIX + "crons:due"
"""ZSET cron id -> next fire time (ms): what beat polls."""
HEARTBEATS = PREFIX + "heartbeats"
"""HASH agent -> JSON ``{interval, next}`` (seconds; next fire ms), synced from the config."""
BEAT_LOCK = PREFIX + "beat:lock"
"""STRING: the id of the one beat that fires timers (PX lease, renewed every tick)."""
CONFIG_GENERATION = PREFIX + "config:generation"
"""STRING counter: bumped by a reload; every process re-reads its config when it moves."""
REPLICA_PROBE = PREFIX + "replica:probe"
"""STRING counter: written by ``submit()`` right before ``WAIT``, so the wait always covers the
message (``walrus_tasks.durable``)."""


def fired(timer: str, due_ms: int) -> str:
    """STRING (NX, short TTL): the per-tick dedup guard of one timer's fire at ``due_ms``."""
    return f"{PREFIX}fired:{timer}:{due_ms}"


# --- cluster-wide limits of providers, models and tenants (walrus_tasks.limits) ----------------

LIMITS_SEEN = PREFIX + "limits"
"""SET of the names of the limits that admitted or deferred a step (what ``usage`` reports)."""

LimitPart = Literal["slots", "requests", "tokens", "recent", "waiting"]
LIMIT_PARTS: dict[LimitPart, str] = {
    "slots": "ZSET holder id -> expiry (ms): the calls in flight (a dead worker's slot expires)",
    "requests": "STRING: the GCRA theoretical arrival time (ms) of the requests-per-minute limit",
    "tokens": "STRING: the GCRA theoretical arrival time (ms) of the tokens-per-minute limit",
    "recent": "ZSET '<holder>/<tokens>' -> time (ms): the calls admitted in the last minute",
    "waiting": "ZSET run id -> until when (ms) it waits: the steps deferred for capacity",
}
"""Every key of one limit (``provider``, ``provider/model``, ``tenant:<name>``)."""


def limit(name: str, part: LimitPart) -> str:
    """A key of the limit called ``name`` (``LIMIT_PARTS`` says what each holds)."""
    return f"{PREFIX}limit:{name}:{part}"


# --- the fair dispatcher: which conversation a drain starts next (walrus_tasks.fair) ------------

FAIR_TENANTS = PREFIX + "fair:tenants"
"""ZSET tenant -> the virtual time of its next pick: the tenants with a conversation ready to
start (lease free, a message queued). A drain starts a conversation of the lowest."""
FAIR_AHEAD = PREFIX + "fair:ahead"
"""ZSET tenant -> its virtual time, for tenants with nothing ready that were served ahead of the
clock: coming back, they start there, not at the clock (no credit banked by going idle)."""
FAIR_CLOCK = PREFIX + "fair:clock"
"""HASH ``v``: the virtual time of the last pick; ``picked_at``: when it was (ms)."""


def fair_agents(tenant: str) -> str:
    """SET of the agents of ``tenant`` with a conversation ready to start."""
    return f"{PREFIX}fair:agents:{tenant}"


def fair_ready(tenant: str, agent: str) -> str:
    """ZSET cid -> when it became ready (ms): ``agent``'s conversations ready to start.

    Of ``tenant`` (tenant names have no ``:``), first come, first served.
    """
    return f"{PREFIX}fair:ready:{tenant}:{agent}"


# --- the Agent Protocol (gateway.agent_protocol): threads, their runs, the store --------------

AP_THREADS = PREFIX + "ap:threads"
"""ZSET thread id -> creation time (ms): every Agent Protocol thread of the default tenant."""
AP_STORE_NAMESPACES = PREFIX + "ap:store:namespaces"
"""SET of the store's namespaces, each its labels joined by ``.`` (labels contain none)."""


def _ap(tenant: str | None) -> str:
    """The prefix of a tenant's Agent Protocol keys (the default tenant keeps today's)."""
    return f"{PREFIX}tenant:{tenant}:ap:" if tenant else f"{PREFIX}ap:"


def ap_threads(tenant: str | None = None) -> str:
    """ZSET thread id -> creation time (ms): the Agent Protocol threads of ``tenant``."""
    return _ap(tenant) + "threads"


def ap_thread(thread_id: str, tenant: str | None = None) -> str:
    """HASH: a thread of ``tenant`` (``created_at``, ``updated_at`` ms, ``metadata``, ``agent``)."""
    return f"{_ap(tenant)}thread:{thread_id}"


def ap_thread_runs(thread_id: str, tenant: str | None = None) -> str:
    """LIST of the run ids of a thread of ``tenant``, oldest first."""
    return f"{_ap(tenant)}thread:{thread_id}:runs"


def ap_run(run_id: str) -> str:
    """HASH: what the Agent Protocol knows of a run (thread, assistant, metadata, modes).

    One for every tenant: run ids are random, and the walrus run's sender names its tenant.
    """
    return f"{PREFIX}ap:run:{run_id}"


def ap_store_namespaces(tenant: str | None = None) -> str:
    """SET of the store namespaces of ``tenant`` (``AP_STORE_NAMESPACES`` for the default)."""
    return _ap(tenant) + "store:namespaces"


def ap_store(namespace: str, tenant: str | None = None) -> str:
    """HASH key -> JSON ``{value, created_at, updated_at}``: one namespace of ``tenant``'s store."""
    return f"{_ap(tenant)}store:ns:{namespace}"


# --- the OpenAI Responses face (gateway.responses): its response records -----------------------


def response(response_id: str) -> str:
    """HASH: one response of the Responses face (``gateway/response_operations.py``).

    Its walrus run and where in the run's events it starts, the conversation, what the request
    asked (instructions, metadata, tools, input items, store, background), and once it has
    ended its final object. One for every tenant: the id names a random run id, and the record
    names its tenant. Lives ``events_ttl`` from its creation, and again from its end.
    """
    return f"{PREFIX}response:{response_id}"


# --- the same schema for the Lua scripts ---------------------------------------------------------

_LUA_CONSTANTS = (
    "CONVERSATIONS", "LEASES", "INBOXES", "ACTIVE_RUNS", "RUNS", "RUNS_MAXLEN", "FEED",
    "FEED_MAXLEN", "LIMITS_SEEN", "WEBHOOKS", "FAIR_TENANTS", "FAIR_AHEAD", "FAIR_CLOCK",
)  # fmt: skip


def _lua_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def lua_library() -> str:
    """The key schema as a Lua table ``K`` (put in front of every script by ``scripts.py``).

    ``K.conv_<part>(cid)``, ``K.run(run_id)``, ``K.run_<part>(run_id)``,
    ``K.call_<part>(run_id, call_id)``, ``K.cid(agent, sender)``, ``K.run_ended(run_id)`` (the
    keys ``finish.lua`` deletes), ``K.limit_<part>(name)``, ``K.fair_agents(tenant)``,
    ``K.fair_ready(tenant, agent)`` and the constants named in upper case.
    """
    lines = [
        "-- The key schema, generated by walrus_tasks/keys.py:lua_library(). Do not edit; do not",
        "-- spell a key name anywhere else in Lua.",
        "local K = {}",
    ]
    for name in _LUA_CONSTANTS:
        value = globals()[name]
        lines.append(f"K.{name} = {_lua_str(value) if isinstance(value, str) else value}")
    conv_root, run_root = _lua_str(f"{PREFIX}conv:"), _lua_str(f"{PREFIX}run:")
    lines.append("function K.cid(agent, sender) return agent .. ':' .. sender end")
    lines.append(f"function K.run(run_id) return {run_root} .. run_id end")
    for part in get_args(ConvPart):
        lines.append(
            f"function K.conv_{part}(cid) return {conv_root} .. cid .. {_lua_str(':' + part)} end"
        )
    for part in get_args(RunPart):
        lines.append(
            f"function K.run_{part}(run_id) return K.run(run_id) .. {_lua_str(':' + part)} end"
        )
    for part in get_args(CallPart):
        lines.append(
            f"function K.call_{part}(run_id, call_id) "
            f"return K.run(run_id) .. {_lua_str(':' + part + ':')} .. call_id end"
        )
    limit_root = _lua_str(f"{PREFIX}limit:")
    for part in get_args(LimitPart):
        tail = _lua_str(":" + part)
        lines.append(f"function K.limit_{part}(name) return {limit_root} .. name .. {tail} end")
    fair_root = _lua_str(f"{PREFIX}fair:")
    lines.append(f"function K.fair_agents(tenant) return {fair_root} .. 'agents:' .. tenant end")
    lines.append(
        f"function K.fair_ready(tenant, agent) "
        f"return {fair_root} .. 'ready:' .. tenant .. ':' .. agent end"
    )
    subs_root = _lua_str(subs_source(""))
    lines.append(f"function K.subs_source(source) return {subs_root} .. source end")
    ended = ", ".join(f"K.run_{p}(run_id)" for p in RUN_ENDED_PARTS)
    lines.append(f"function K.run_ended(run_id) return {{{ended}}} end")
    return "\n".join(lines) + "\n"
