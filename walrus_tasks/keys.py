"""The Redis key schema: every key walrus_tasks writes is named here and nowhere else.

A conversation is the pair ``(agent, sender)``; its id ``cid`` is ``agent:sender`` (agent names
contain no ``:``, so the split is unambiguous).
"""

from __future__ import annotations

PREFIX = "walrus:"

CONVERSATIONS = PREFIX + "conversations"
"""ZSET cid -> last activity (ms): the conversation index."""
LEASES = PREFIX + "leases"
"""ZSET cid -> lease expiry (ms): what the reaper sweeps."""
INBOXES = PREFIX + "inboxes"
"""ZSET cid -> time (ms) its inbox became non-empty: the reaper re-drains stale ones."""
ACTIVE_RUNS = PREFIX + "runs:active"
"""SET of run ids in ``running`` (or ``waiting``) state."""
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


def conv(conversation: str, part: str) -> str:
    """A conversation key: ``inbox``, ``lease``, ``fence``, ``active``, ``history``, ``seq``.

    ``read``: SET of the resolved file paths its tools read or wrote (what ``edit`` may change).
    """
    return f"{PREFIX}conv:{conversation}:{part}"


def conv_pattern(part: str) -> str:
    """A SCAN pattern matching ``part`` of every conversation (``conv_cid`` reads the cid back)."""
    return f"{PREFIX}conv:*:{part}"


def conv_cid(key: str, part: str) -> str:
    """The conversation id of a key named by ``conv(cid, part)``."""
    return key[len(f"{PREFIX}conv:") : -len(f":{part}")]


def memory(agent: str) -> str:
    """HASH entry name -> JSON entry: an agent's memory (``walrus_tasks.memory``).

    ``memory("*")`` is the SCAN pattern of every agent's memory.
    """
    return f"{PREFIX}memory:{agent}"


def run(run_id: str) -> str:
    """HASH: the run record (status, step, phase, timestamps, usage)."""
    return f"{PREFIX}run:{run_id}"


def run_part(run_id: str, part: str) -> str:
    """A key of one run: ``events``, ``cancel``, ``claim``, ``results``."""
    return f"{PREFIX}run:{run_id}:{part}"


def run_keys(run_id: str) -> list[str]:
    """Every key of one run, for tests and cleanup."""
    return [run(run_id)] + [run_part(run_id, p) for p in ("events", "cancel", "claim", "results")]


# --- the event bus: subscriptions and the live feed (walrus_tasks.subscriptions, .feed) ---------

SUBSCRIPTIONS = PREFIX + "subs"
"""HASH subscription id -> the subscription as JSON (``{id, source, target_agent, once, …}``)."""
FEED = PREFIX + "feed"
"""STREAM of every run event of every run (``run_id``, ``agent``, ``sender``, ``data``), capped
at about 10 000 entries; appended by ``emit()`` in ``lua/prelude.lua``, atomically with the run's
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


def fired(timer: str, due_ms: int) -> str:
    """STRING (NX, short TTL): the per-tick dedup guard of one timer's fire at ``due_ms``."""
    return f"{PREFIX}fired:{timer}:{due_ms}"
