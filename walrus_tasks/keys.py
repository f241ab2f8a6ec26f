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
    """A conversation key: ``inbox``, ``lease``, ``fence``, ``active``, ``history``, ``seq``."""
    return f"{PREFIX}conv:{conversation}:{part}"


def run(run_id: str) -> str:
    """HASH: the run record (status, step, phase, timestamps, usage)."""
    return f"{PREFIX}run:{run_id}"


def run_part(run_id: str, part: str) -> str:
    """A key of one run: ``events``, ``cancel``, ``claim``, ``results``."""
    return f"{PREFIX}run:{run_id}:{part}"


def run_keys(run_id: str) -> list[str]:
    """Every key of one run, for tests and cleanup."""
    return [run(run_id)] + [run_part(run_id, p) for p in ("events", "cancel", "claim", "results")]
