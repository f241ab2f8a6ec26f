"""The fair dispatcher: which conversation a drain task starts next.

Celery delivers ``walrus.session.drain`` messages in the order they were sent, so without help
one tenant's thousand waiting conversations would start before another tenant's one. Instead a
drain message is a turn, not an address: ``submit.lua`` marks a conversation that can start at
once (lease free, no live run, nothing queued before the message) *ready* in Redis (its
tenant's ready set, one per agent), and ``acquire.lua`` (one Lua call, the one that takes the
lease) starts whichever ready conversation is due, whatever conversation the message was sent
for:

- **tenants** are served by weighted fair queueing: each has a virtual time, a pick takes the
  tenant of the lowest and moves it on by ``1 / weight`` (``[tenants.<name>] weight``); a
  tenant that had nothing ready joins at the clock (the virtual time of the last pick), so a
  newcomer is served at the next pick but cannot bank credit by idling;
- **agents** of one tenant by ``priority`` (higher first), then by how long they waited;
- **conversations** of one agent first come, first served.

Only a message to an idle conversation sends a drain message (``submit.submit``): the one
``submit.lua`` marked ready, so every ready conversation came with one message, and Celery
(Flower) shows one task per message; the task's result names the run it started, maybe of
another conversation. A drain that finds nothing to start (a takeover, or a drain the reaper
sent, started it first) is a no-op. A message to a busy conversation sends none and takes no
turn: the conversation's running run starts it as it ends (``finish.lua``, ``start_next``),
so one conversation runs one run at a time whatever its backlog; what is fair is the start of
a conversation that was idle. A drain message the broker lost leaves a ready conversation
without its message; the reaper (``reap``) sends it again once no drain has picked for a
while, and marks ready (and sends a drain for) a conversation the dispatcher lost.
``WALRUS_FAIR_DISPATCH=0`` turns the picking off: a drain then starts its own conversation,
in arrival order, as before (the bench's comparison).

On Redis Cluster the dispatcher's keys share a slot of their own (``keys.FAIR_GROUP``), so the
steps that touched them together with a conversation's are split in two (docs/design.md,
"Keys and slots"): ``submit.lua`` accepts the message and the caller then marks the
conversation ready (``mark``); a drain picks a conversation (``pick``: out of the ready sets,
with a claim until ``CLAIM_MS``), starts it on its own slot if it still can (``runs.acquire``)
and drops the claim (``release``). A caller that dies between two steps leaves nothing stuck:
the reaper finds the conversation's inbox waiting (or its claim run out) and marks it ready
again (``reap``). The order of picks, so the shares, is the same as on one Redis; a pick that
can no longer start has moved its tenant's virtual time on (on one Redis it would not), which
happens only when a conversation was started by its own drain or a takeover first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from walrus_tasks import indexes, keys, scripts, topology
from walrus_tasks import script_args as S
from walrus_tasks.config import Config
from walrus_tasks.lease import now_ms


@dataclass(frozen=True)
class Shares:
    """The dispatcher's policy as the Lua pick takes it: tenant weights, agent priorities."""

    weights: str = "{}"
    """JSON ``{tenant: weight}`` of the tenants whose weight is not ``default_weight``."""
    default_weight: int = 1
    """``[tenants."*"] weight``, else 1."""
    priorities: str = "{}"
    """JSON ``{agent: priority}`` of the agents whose priority is not 0."""


EVEN = Shares()
"""Every tenant weight 1, every agent priority 0."""

_cached: tuple[Config, Shares] | None = None


def shares(config: Config) -> Shares:
    """The weights and priorities ``config`` gives (computed once per loaded config)."""
    global _cached
    if _cached is not None and _cached[0] is config:
        return _cached[1]
    default = config.tenants["*"].weight if "*" in config.tenants else 1
    weights = {n: t.weight for n, t in config.tenants.items() if n != "*" and t.weight != default}
    priorities = {n: a.priority for n, a in config.agents.items() if a.priority}
    out = Shares(json.dumps(weights), default, json.dumps(priorities))
    _cached = (config, out)
    return out


STALE_MS = 5_000
"""An inbox waiting this long with its lease free, while no drain picked anything for as long,
lost its drain message: the reaper sends another."""


CLAIM_MS = 10_000
"""On a cluster, how long a drain holds a conversation it picked before starting it."""


def reap(r: redis.Redis, conversations: list[str]) -> list[str]:
    """Of ``conversations`` (inboxes waiting ``STALE_MS``), those that want a drain message.

    Each that could start is marked ready again if the dispatcher lost it; it wants a message
    if it was missing, or if no drain picked for ``STALE_MS`` (reap_ready.lua).
    """
    if not conversations:
        return []
    now = now_ms()
    if not topology.is_cluster(r):
        return scripts.call(
            r,
            S.REAP_READY,
            [keys.conv_index("inboxes", conversations[0])],
            {"now_ms": now, "stale_ms": STALE_MS, "one_redis": "1", "conversations": conversations},
        )
    # A cluster: what can start, bucket by bucket; then the dispatcher's step; then the drains.
    groups = indexes.by_bucket("inboxes", conversations)
    startable: list[tuple[str, str, str]] = []
    for index_key, cids in groups.items():
        flat = scripts.call(
            r,
            S.REAP_READY,
            [index_key],
            {"now_ms": now, "stale_ms": STALE_MS, "one_redis": "0", "conversations": cids},
        )
        startable += zip(flat[::3], flat[1::3], flat[2::3], strict=True)
    picked_at, missing = mark(r, startable)
    flowing = now - picked_at < STALE_MS
    drain = [cid for cid, _, _ in startable if cid in missing or not flowing]
    if drain:
        pipe = r.pipeline(transaction=False)
        for index_key, cids in indexes.by_bucket("inboxes", drain).items():
            pipe.zadd(index_key, dict.fromkeys(cids, now), xx=True)
        pipe.execute()
    return drain


def mark(r: redis.Redis, ready: list[tuple[str, str, str]]) -> tuple[int, set[str]]:
    """On a cluster: mark ``(cid, agent, tenant)`` ready in the dispatcher's slot.

    ``(when a drain last picked (ms), the cids newly marked)``.
    """
    entries = [{"cid": c, "agent": a, "tenant": t} for c, a, t in ready]
    picked_at, *marked = scripts.call(
        r, S.FAIR_MARK, [keys.FAIR_TENANTS], {"now_ms": now_ms(), "entries": entries}
    )
    return int(picked_at), set(marked)


def unmark(r: redis.Redis, conversation: str, agent: str, tenant: str) -> None:
    """On a cluster: the dispatcher no longer holds ``conversation`` ready (it was started)."""
    scripts.call(
        r,
        S.FAIR_UNMARK,
        [keys.FAIR_TENANTS],
        {"cid": conversation, "agent": agent, "tenant": tenant},
    )


def pick(r: redis.Redis, shares: Shares) -> str | None:
    """On a cluster: the conversation due, taken out of the dispatcher with a claim; or None."""
    return scripts.call(
        r,
        S.FAIR_PICK,
        [keys.FAIR_TENANTS],
        {
            "now_ms": now_ms(), "weights_json": shares.weights,
            "default_weight": shares.default_weight, "priorities_json": shares.priorities,
            "claim_ms": CLAIM_MS,
        },
    )  # fmt: skip


def release(r: redis.Redis, conversation: str) -> None:
    """On a cluster: drop a drain's claim on ``conversation`` (it started it, or could not)."""
    r.zrem(keys.FAIR_CLAIMS, conversation)


def claims_due(r: redis.Redis) -> list[str]:
    """On a cluster: the conversations whose claim ran out, taken off the claims (for ``reap``)."""
    due: list[str] = r.zrangebyscore(keys.FAIR_CLAIMS, "-inf", now_ms())  # type: ignore[assignment]
    if due:
        r.zrem(keys.FAIR_CLAIMS, *due)
    return due
