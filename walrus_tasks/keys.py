"""The Redis key schema: every key walrus_tasks writes is named here and nowhere else.

A conversation is the pair ``(agent, sender)``; its id ``cid`` is ``agent:sender`` (agent names
contain no ``:``, so the split is unambiguous).

The Lua scripts get the same schema from ``lua_library()``, generated from this module and put in
front of every script: Lua never spells a key name (``tests/test_keys.py`` checks).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal, get_args

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

PREFIX = "walrus:"

# --- hash-tag buckets: what puts every key one Lua step touches in one Redis Cluster slot ------

BUCKETS = 16
"""How many hash-tag buckets the state is split into (docs/design.md, "Keys and slots").

Every key of a conversation, of its runs and of the indexes its scripts write carries its
bucket's hash tag, so on Redis Cluster each script touches one slot. The number is fixed (not
per node): resharding moves a bucket like any key, and a cluster can use up to this many
masters. On one Redis the buckets cost a few more index keys, nothing else."""


def _bucket_tags() -> tuple[str, ...]:
    """Bucket ``i``'s tag: the first ``i.j`` whose slot lies in the ``i``-th part of the slots.

    So the buckets are spread evenly over the slot range, and any even split of the slots
    between masters (what ``redis-cli --cluster create`` makes) gives each its share.
    """
    tags = []
    for i in range(BUCKETS):
        j = 0
        while key_slot(f"{i}.{j}".encode()) * BUCKETS // REDIS_CLUSTER_HASH_SLOTS != i:
            j += 1
        tags.append(f"{i}.{j}")
    return tuple(tags)


TAGS = _bucket_tags()
"""The hash tag of each bucket (without the braces)."""
_TAG_BUCKET = {tag: b for b, tag in enumerate(TAGS)}


@lru_cache(maxsize=65_536)
def bucket_of(conversation: str) -> int:
    """The bucket of a conversation id: a small hash Lua computes alike (``K.bucket_of``)."""
    h = 0
    for byte in conversation.encode():
        h = (h * 31 + byte) % 65_521
    return h % BUCKETS


def run_bucket(run_id: str) -> int:
    """The bucket of a run: its id's first hex digit (``run_id_in``), else a hash of the id."""
    head = run_id[:1]
    if head and head in "0123456789abcdef":
        return int(head, 16)
    return bucket_of(run_id)


def run_id_in(conversation: str, random_hex: str) -> str:
    """A run id of ``conversation``, made of 32 random (or hashed) hex digits.

    Its first digit names the conversation's bucket, so the run's keys live in its
    conversation's slot and the id alone finds them.
    """
    return f"{bucket_of(conversation):x}{random_hex[1:32]}"


def _tagged(bucket: int) -> str:
    return f"{PREFIX}{{{TAGS[bucket]}}}:"


Index = Literal[
    "conversations", "leases", "inboxes", "runs:active", "runs", "webhooks", "parents"
]  # fmt: skip
INDEXES: dict[Index, str] = {
    "conversations": "ZSET cid -> last activity (ms): the conversation index",
    "leases": "ZSET cid -> lease expiry (ms): what the reaper sweeps",
    "inboxes": "ZSET cid -> time (ms) its inbox became non-empty: the reaper re-drains stale ones",
    "runs:active": "SET of run ids in ``running`` (or ``waiting``) state",
    "runs": "ZSET run id -> created_at (ms): every submitted run, newest last (``GET "
    "/v1/runs``), capped at ``RUNS_MAXLEN`` a bucket; a member whose record has expired is "
    "skipped, and removed, when listed",
    "webhooks": "ZSET run id -> until when (ms) its webhook is held: the outbox of run webhooks "
    "(``walrus_tasks.webhooks``); ``lua/finish.lua`` adds a run with a webhook as it ends, the "
    "delivery removes it, the reaper sends again whatever is still here past its hold",
    "parents": "ZSET child run id -> until when (ms) its ender tells the parent: on a cluster, "
    "delegated runs that ended before their parent (in another slot) heard of it "
    "(``runs.tell_parent``); the reaper tells the parent again past that",
}
"""The global indexes, one key per bucket: the ``CONV_INDEXES`` hold conversations (each in its
conversation's bucket), the others runs (each in its run's)."""
CONV_INDEXES: tuple[Index, ...] = ("conversations", "leases", "inboxes")
SET_INDEXES: tuple[Index, ...] = ("runs:active",)
"""The indexes that are SETs (the others are ZSETs)."""


def index(name: Index, bucket: int) -> str:
    """The index ``name`` of bucket ``bucket`` (``INDEXES`` says what each holds)."""
    return _tagged(bucket) + name


def every(name: Index) -> list[str]:
    """The keys of index ``name`` in every bucket (what a sweep or a listing reads)."""
    return [index(name, b) for b in range(BUCKETS)]


def conv_index(name: Index, conversation: str) -> str:
    """The index ``name`` of a conversation's bucket."""
    return index(name, bucket_of(conversation))


def run_index(name: Index, run_id: str) -> str:
    """The index ``name`` of a run's bucket."""
    return index(name, run_bucket(run_id))


RUNS_MAXLEN = 100_000 // BUCKETS
"""How many run ids each bucket's ``runs`` index keeps (the oldest go first)."""
FEED_MAXLEN = 2_000
"""About how many entries each bucket's live feed (``feed``) keeps."""


def metrics_runs(bucket: int) -> str:
    """HASH of the run figures of a bucket's runs (``walrus_tasks.metrics``).

    ``n:{agent}:{status}`` runs ended, ``sum:{agent}`` their seconds, ``le:{agent}:{bound}``
    runs per duration bucket (not cumulative). Written by ``lua/finish.lua`` as a run of the
    bucket ends; the cluster-wide figures are the sum over the buckets.
    """
    return _tagged(bucket) + "metrics:runs"


def usage_totals(bucket: int) -> str:
    """HASH ``tenant|agent|model|kind`` -> count: the usage of a bucket's runs, ever.

    The LLM usage of every committed step (``walrus_tasks.usage``; kind ``in``, ``out``,
    ``calls``, ``runs``) since the hash was created, never expired: summed over the buckets,
    what the gateway's ``GET /metrics`` exports as counters.
    """
    return _tagged(bucket) + "usage:totals"


def usage_hour(hour: str, bucket: int) -> str:
    """HASH ``tenant|agent|model|kind`` -> count: the usage of a bucket's steps in ``hour``.

    ``hour`` is the UTC hour ``YYYYMMDDHH`` (``walrus_tasks.usage.hour_of``). Written by
    ``lua/commit.lua`` with the step; expires ``WALRUS_USAGE_RETENTION_DAYS`` after the hour.
    """
    return f"{_tagged(bucket)}usage:hour:{hour}"


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
    """A key of one conversation (``CONV_PARTS`` says what each holds), in its bucket."""
    return f"{_tagged(bucket_of(conversation))}conv:{conversation}:{part}"


def conv_pattern(part: ConvPart) -> str:
    """A SCAN pattern matching ``part`` of every conversation (``conv_cid`` reads the cid back)."""
    return f"{PREFIX}{{*}}:conv:*:{part}"


def conv_cid(key: str, part: ConvPart) -> str:
    """The conversation id of a key named by ``conv(cid, part)``."""
    return key[key.index("}:conv:") + len("}:conv:") : -len(f":{part}")]


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
    """HASH: the run record (status, phase, step, timestamps, usage, what it was sent).

    In the run's bucket (``run_bucket``), its conversation's for every run id ``run_id_in``
    made.
    """
    return f"{_tagged(run_bucket(run_id))}run:{run_id}"


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
    return f"{run(run_id)}:{part}"


def run_call(run_id: str, part: CallPart, call_id: str) -> str:
    """A key of one tool call of a run (``CALL_PARTS`` says what each holds)."""
    return f"{run(run_id)}:{part}:{call_id}"


def run_keys(run_id: str) -> list[str]:
    """The run's record and every run-wide key (not the per-call ones), for tests and cleanup."""
    return [run(run_id)] + [run_part(run_id, p) for p in RUN_PARTS]


# --- the event bus: subscriptions and the live feed (walrus_tasks.subscriptions, .feed) ---------

# Keys that one script touches together and that belong to no conversation share a group tag
# of their own (docs/design.md, "Keys and slots"): one slot for the subscriptions, one for
# beat's timers, one for the fair dispatcher, one for the limits.
SUBS_GROUP = PREFIX + "{subs}:"
SUBSCRIPTIONS = SUBS_GROUP + "subs"
"""HASH subscription id -> the subscription as JSON (``{id, source, target_agent, once, …}``)."""


def feed(bucket: int) -> str:
    """STREAM of every run event of the bucket's runs: the bucket's part of the live feed.

    Entries ``run_id``, ``agent``, ``sender``, ``data``, capped at about ``FEED_MAXLEN``;
    appended by ``emit()`` in ``lua/lib/runs.lua``, atomically with the run's own stream. The
    live feed is every bucket's, merged (``walrus_tasks.feed``).
    """
    return _tagged(bucket) + "feed"


def subs_source(source: str) -> str:
    """SET of the ids of the subscriptions to ``source`` (``subs_source("")`` is the prefix)."""
    return f"{SUBS_GROUP}source:{source}"


# --- beat: cron, heartbeats, the beat lock (walrus_tasks.crons, beat.scheduler) -----------------

BEAT_GROUP = PREFIX + "{beat}:"
CRONS = BEAT_GROUP + "crons"
"""HASH cron id -> the entry as JSON (:class:`walrus_tasks.models.CronEntry`)."""
CRONS_DUE = BEAT_GROUP + "crons:due"
"""ZSET cron id -> next fire time (ms): what beat polls."""
HEARTBEATS = BEAT_GROUP + "heartbeats"
"""HASH agent -> JSON ``{interval, next}`` (seconds; next fire ms), synced from the config."""
BEAT_LOCK = BEAT_GROUP + "lock"
"""STRING: the id of the one beat that fires timers (PX lease, renewed every tick)."""
CONFIG_GENERATION = PREFIX + "config:generation"
"""STRING counter: bumped by a reload; every process re-reads its config when it moves."""


def replica_probe(key: str) -> str:
    """STRING counter in the slot of ``key`` (a script's first key).

    Written by ``submit()`` right before ``WAIT``, so the wait always covers the message
    (``walrus_tasks.durable``).
    """
    return f"{PREFIX}{{{_hash_tag(key)}}}:replica:probe"


def key_bucket(key: str) -> int:
    """The bucket of a bucketed key (one ``keys.conv``, ``keys.run``… named)."""
    return _TAG_BUCKET[_hash_tag(key)]


def _hash_tag(key: str) -> str:
    """What Redis Cluster hashes of ``key``: its first non-empty ``{…}``, else all of it."""
    start = key.find("{")
    end = key.find("}", start + 1) if start >= 0 else -1
    return key[start + 1 : end] if end > start + 1 else key


def fired(timer: str, due_ms: int) -> str:
    """STRING (NX, short TTL): the per-tick dedup guard of one timer's fire at ``due_ms``."""
    return f"{BEAT_GROUP}fired:{timer}:{due_ms}"


# --- cluster-wide limits of providers, models and tenants (walrus_tasks.limits) ----------------

LIMITS_GROUP = PREFIX + "{limits}:"
LIMITS_SEEN = LIMITS_GROUP + "seen"
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
    return f"{LIMITS_GROUP}limit:{name}:{part}"


# --- the fair dispatcher: which conversation a drain starts next (walrus_tasks.fair) ------------

FAIR_GROUP = PREFIX + "{fair}:"
FAIR_TENANTS = FAIR_GROUP + "tenants"
"""ZSET tenant -> the virtual time of its next pick: the tenants with a conversation ready to
start (lease free, a message queued). A drain starts a conversation of the lowest."""
FAIR_AHEAD = FAIR_GROUP + "ahead"
"""ZSET tenant -> its virtual time, for tenants with nothing ready that were served ahead of the
clock: coming back, they start there, not at the clock (no credit banked by going idle)."""
FAIR_CLOCK = FAIR_GROUP + "clock"
"""HASH ``v``: the virtual time of the last pick; ``picked_at``: when it was (ms)."""
FAIR_CLAIMS = FAIR_GROUP + "claims"
"""ZSET cid -> until when (ms) a drain holds it: on Redis Cluster, the conversations a drain
picked and is starting in a second step (``runs.acquire``); the reaper looks again at a
conversation whose claim ran out (its drain died between the two steps)."""


def fair_agents(tenant: str) -> str:
    """SET of the agents of ``tenant`` with a conversation ready to start."""
    return f"{FAIR_GROUP}agents:{tenant}"


def fair_ready(tenant: str, agent: str) -> str:
    """ZSET cid -> when it became ready (ms): ``agent``'s conversations ready to start.

    Of ``tenant`` (tenant names have no ``:``), first come, first served.
    """
    return f"{FAIR_GROUP}ready:{tenant}:{agent}"


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
    "BUCKETS", "RUNS_MAXLEN", "FEED_MAXLEN", "LIMITS_SEEN", "FAIR_TENANTS", "FAIR_AHEAD",
    "FAIR_CLOCK", "FAIR_CLAIMS",
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
    tags = ", ".join(_lua_str(f"{PREFIX}{{{t}}}:") for t in TAGS)
    lines += [
        f"K.TAGGED = {{{tags}}}",
        "local _buckets = {}",
        "-- keys.bucket_of: the bucket (0-based) of a conversation id, memoised for the script",
        "function K.bucket_of(cid)",
        "  local b = _buckets[cid]",
        "  if not b then",
        "    local h = 0",
        "    for i = 1, #cid do h = (h * 31 + string.byte(cid, i)) % 65521 end",
        "    b = h % K.BUCKETS",
        "    _buckets[cid] = b",
        "  end",
        "  return b",
        "end",
        "-- keys.run_bucket: a run id's first hex digit, else a hash of the id",
        "function K.run_bucket(run_id)",
        "  local head = run_id:sub(1, 1)",
        "  if head:match('^[0-9a-f]$') then return tonumber(head, 16) end",
        "  return K.bucket_of(run_id)",
        "end",
        "function K.cid(agent, sender) return agent .. ':' .. sender end",
        "function K.run(run_id) return K.TAGGED[K.run_bucket(run_id) + 1] .. 'run:' .. run_id end",
    ]
    lines.append("function K.feed(run_id) return K.TAGGED[K.run_bucket(run_id) + 1] .. 'feed' end")
    for name in get_args(Index):  # K.leases(cid), K.runs_active(run_id), …
        of = (
            "cid) return K.TAGGED[K.bucket_of(cid)"
            if name in CONV_INDEXES
            else ("run_id) return K.TAGGED[K.run_bucket(run_id)")
        )
        lines.append(f"function K.{name.replace(':', '_')}({of} + 1] .. {_lua_str(name)} end")
    for part in get_args(ConvPart):
        tail = _lua_str(":" + part)
        lines.append(
            f"function K.conv_{part}(cid) "
            f"return K.TAGGED[K.bucket_of(cid) + 1] .. 'conv:' .. cid .. {tail} end"
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
    limit_root = _lua_str(f"{LIMITS_GROUP}limit:")
    for part in get_args(LimitPart):
        tail = _lua_str(":" + part)
        lines.append(f"function K.limit_{part}(name) return {limit_root} .. name .. {tail} end")
    fair_root = _lua_str(FAIR_GROUP)
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
