"""A conversation outside its runs: seeded with a history, or deleted while no run uses it.

Each in a synchronous and an asyncio form (the gateway's event loop), the same script with the
same keys and the same reading of its reply.
"""

from __future__ import annotations

import json
from typing import Any

import redis
import redis.asyncio as aioredis

from walrus_tasks import keys, scripts
from walrus_tasks import script_args as S
from walrus_tasks.errors import Conflict, NotFound

DATA_PARTS: tuple[keys.ConvPart, ...] = ("history", "archive", "read", "seq", "cwd", "epoch")
"""The conversation keys a delete removes: messages, compacted-away history, the files its runs
read, the run counter, the working directory and the history's epoch. The lease and fence stay
(see the script)."""


def _seed_call(
    agent: str, sender: str, messages: list[dict[str, Any]]
) -> tuple[list[str], dict[str, str]]:
    conversation = keys.cid(agent, sender)
    keys_ = [keys.conv(conversation, p) for p in ("lease", "inbox", "active", "history")]
    return keys_, {"messages_json": json.dumps(messages, ensure_ascii=False)}


def seed(r: redis.Redis, agent: str, sender: str, messages: list[dict[str, Any]]) -> bool:
    """Write ``messages`` as the history of a new conversation (seed.lua); False if not new."""
    return scripts.call(r, S.SEED, *_seed_call(agent, sender, messages)) >= 0


async def seed_async(
    aredis: aioredis.Redis, agent: str, sender: str, messages: list[dict[str, Any]]
) -> bool:
    """:func:`seed` on an asyncio client."""
    return await scripts.call_async(aredis, S.SEED, *_seed_call(agent, sender, messages)) >= 0


def delete(r: redis.Redis, agent: str, sender: str) -> None:
    """Delete the conversation ``(agent, sender)`` and its index entry, atomically.

    Names must already be validated. Raises Conflict while a run is active, waiting or queued
    (nothing is deleted), NotFound if there is no such conversation.
    """
    _deleted(scripts.call(r, S.DELETE_CONVERSATION, *_delete_call(agent, sender)), agent, sender)


async def delete_async(aredis: aioredis.Redis, agent: str, sender: str) -> None:
    """:func:`delete` on an asyncio client."""
    state = await scripts.call_async(aredis, S.DELETE_CONVERSATION, *_delete_call(agent, sender))
    _deleted(state, agent, sender)


def _delete_call(agent: str, sender: str) -> tuple[list[str], dict[str, str]]:
    conversation = keys.cid(agent, sender)
    keys_ = [
        keys.conv(conversation, "lease"),
        keys.conv(conversation, "fence"),
        keys.conv(conversation, "active"),
        keys.conv(conversation, "inbox"),
        keys.conv_index("conversations", conversation),
        *(keys.conv(conversation, part) for part in DATA_PARTS),
    ]
    return keys_, {"cid": conversation}


def _deleted(state: S.Deleted, agent: str, sender: str) -> None:
    """What delete_conversation.lua answered, as :func:`delete` raises it."""
    if state == "busy":
        raise Conflict(
            f"conversation {agent}/{sender} has an active or queued run; kill it or wait for it "
            "to end, then delete"
        )
    if state == "missing":
        raise NotFound(f"no conversation {agent}/{sender}")
