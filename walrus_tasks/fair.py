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
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from walrus_tasks import script_args as S
from walrus_tasks import scripts
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


def reap(r: redis.Redis, conversations: list[str]) -> list[str]:
    """Of ``conversations`` (inboxes waiting ``STALE_MS``), those that want a drain message.

    Each that could start is marked ready again if the dispatcher lost it; it wants a message
    if it was missing, or if no drain picked for ``STALE_MS`` (reap_ready.lua).
    """
    if not conversations:
        return []
    return scripts.call(
        r,
        S.REAP_READY,
        [],
        {"now_ms": now_ms(), "stale_ms": STALE_MS, "conversations": conversations},
    )
