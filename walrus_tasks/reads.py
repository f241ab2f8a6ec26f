"""Reads of what the run transitions wrote: run records, history, archives, conversations.

The writes are the transitions of ``walrus_tasks.runs``.
"""

from __future__ import annotations

import json
from typing import Any

import redis
import redis.asyncio as aioredis

from walrus_tasks import indexes, keys, scripts, tenancy
from walrus_tasks import script_args as S
from walrus_tasks.errors import NotFound
from walrus_tasks.models import Conversation, RunInfo


def archives(r: redis.Redis, agent: str, sender: str) -> list[dict[str, Any]]:
    """The conversation's compacted-away histories, oldest first."""
    raw: list[str] = r.lrange(keys.conv(keys.cid(agent, sender), "archive"), 0, -1)  # type: ignore[assignment]
    return [json.loads(a) for a in raw]


def run_record(r: redis.Redis, run_id: str) -> dict[str, str]:
    """The run's raw hash, or NotFound."""
    h: dict[str, str] = r.hgetall(keys.run(run_id))  # type: ignore[assignment]
    if not h:
        raise NotFound(f"unknown run {run_id!r}")
    return h


def get_run(r: redis.Redis, run_id: str) -> RunInfo:
    """The public view of a run."""
    return RunInfo.from_hash(run_record(r, run_id))


def history(r: redis.Redis, agent: str, sender: str) -> list[dict[str, Any]]:
    """The conversation's messages, in order (read as one JSON array: ``lua/history_json.lua``)."""
    raw = scripts.call(r, S.HISTORY_JSON, [history_key(agent, sender)], {})
    messages: list[dict[str, Any]] = json.loads(raw)
    return messages


async def history_async(aredis: aioredis.Redis, agent: str, sender: str) -> list[dict[str, Any]]:
    """:func:`history`, read on an asyncio client."""
    raw = await scripts.call_async(aredis, S.HISTORY_JSON, [history_key(agent, sender)], {})
    messages: list[dict[str, Any]] = json.loads(raw)
    return messages


def history_key(agent: str, sender: str) -> str:
    """The key of the conversation's history (``lua/history_json.lua`` reads it)."""
    return keys.conv(keys.cid(agent, sender), "history")


def conversations(r: redis.Redis, agent: str | None = None) -> list[Conversation]:
    """Every conversation (optionally of one agent), most recently active first."""
    rows = indexes.newest(r, "conversations")
    if agent is not None:
        rows = [(c, s) for c, s in rows if c.startswith(agent + ":")]
    pipe = r.pipeline(transaction=False)
    for c, _ in rows:
        pipe.get(keys.conv(c, "active"))
        pipe.llen(keys.conv(c, "inbox"))
    replies = pipe.execute()
    out = []
    for i, (c, score) in enumerate(rows):
        a, s = keys.split_cid(c)
        out.append(
            Conversation(
                agent=a,
                sender=tenancy.bare(s),
                tenant=tenancy.tenant_of(s),
                last_active=score / 1000,
                active_run=replies[2 * i],
                queued=replies[2 * i + 1],
            )
        )
    return out
