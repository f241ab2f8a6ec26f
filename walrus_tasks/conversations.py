"""Deleting a conversation: its history and per-conversation state, while no run uses it."""

from __future__ import annotations

import redis

from walrus_tasks import keys, scripts
from walrus_tasks import script_args as S
from walrus_tasks.errors import Conflict, NotFound

DATA_PARTS: tuple[keys.ConvPart, ...] = ("history", "archive", "read", "seq", "cwd", "epoch")
"""The conversation keys a delete removes: messages, compacted-away history, the files its runs
read, the run counter, the working directory and the history's epoch. The lease and fence stay
(see the script)."""


def delete(r: redis.Redis, agent: str, sender: str) -> None:
    """Delete the conversation ``(agent, sender)`` and its index entry, atomically.

    Names must already be validated. Raises Conflict while a run is active, waiting or queued
    (nothing is deleted), NotFound if there is no such conversation.
    """
    conversation = keys.cid(agent, sender)
    state = scripts.call(
        r,
        S.DELETE_CONVERSATION,
        [
            keys.conv(conversation, "lease"),
            keys.conv(conversation, "fence"),
            keys.conv(conversation, "active"),
            keys.conv(conversation, "inbox"),
            keys.conv_index("conversations", conversation),
            *(keys.conv(conversation, part) for part in DATA_PARTS),
        ],
        {"cid": conversation},
    )
    if state == "busy":
        raise Conflict(
            f"conversation {agent}/{sender} has an active or queued run; kill it or wait for it "
            "to end, then delete"
        )
    if state == "missing":
        raise NotFound(f"no conversation {agent}/{sender}")
