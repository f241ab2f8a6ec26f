"""The conversation histories this worker process read last, so a step reads only what is new.

History is append-only while a conversation's runs go on; compaction and rollback rewrite it.
A step tells ``runs.begin_step`` what it holds of the conversation (its length, the SHA-1 of
its first and last messages as stored); the script sends only the messages after that prefix
when it is still there, else the whole history. So a step of a long conversation that this
process served before costs what its new messages cost, not the whole history.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import redis

from walrus_tasks import keys
from walrus_tasks.runs import HeldHistory
from worker.compaction import message_chars

MAX_CONVERSATIONS = 256
"""Conversations held per process; the least recently used go first."""
MAX_CHARS = 16_000_000
"""Characters of messages held per process (about 4 M tokens, some tens of MB as Python
objects); past it too the least recently used conversations go, never the one just read."""


@dataclass
class _Held:
    messages: list[dict[str, Any]]
    chars: int
    """What ``compaction.estimate_tokens`` counts (characters of content and tool calls)."""
    first_sha: str
    last_sha: str
    epoch: str


_held: OrderedDict[str, _Held] = OrderedDict()
_chars = 0
"""The ``chars`` of everything in ``_held``, kept as it changes: summed at every step instead, it
cost ~0.1 ms of each step's start at 256 conversations held (docs/benchmarks.md, issue 25,
thirteenth round)."""


def sha1(raw: str) -> str:
    """The SHA-1 of a message as stored (what Lua's ``redis.sha1hex`` gives)."""
    return hashlib.sha1(raw.encode()).hexdigest()


def held(cid: str) -> HeldHistory:
    """What this process holds of conversation ``cid`` (nothing: length 0)."""
    h = _held.get(cid)
    if h is None or not h.messages:
        return HeldHistory()
    return HeldHistory(len(h.messages), h.first_sha, h.last_sha, h.epoch)


def history(
    cid: str, length: int, start: int, raw: list[str], epoch: str
) -> tuple[list[dict[str, Any]], int]:
    """The whole history of ``cid``, and its estimated tokens (chars / 4).

    From what ``begin_step`` sent: ``raw``, from index ``start`` (0, or the held prefix's
    length), read at ``epoch``.

    The list returned is the caller's own (a copy of what is held); its messages are shared and
    must not be changed.
    """
    global _chars
    tail = json.loads("[" + ",".join(raw) + "]") if raw else []
    h = _held.get(cid) if start else None
    if start and (h is None or len(h.messages) != start):
        forget(cid)
        raise ValueError(f"history of {cid}: sent from {start}, {len(h.messages) if h else 0} held")
    if h is None:
        forget(cid)  # read whole: what was held of it goes, and out of the total
        first = sha1(raw[0]) if raw else ""
        h = _held[cid] = _Held([], 0, first, "", epoch)
    h.messages.extend(tail)
    added = sum(message_chars(m) for m in tail)
    h.chars += added
    _chars += added
    if raw:
        h.last_sha = sha1(raw[-1])
    if len(h.messages) != length:
        forget(cid)
        raise ValueError(f"history of {cid}: {len(h.messages)} messages, {length} stored")
    _held.move_to_end(cid)
    while len(_held) > 1 and (len(_held) > MAX_CONVERSATIONS or _chars > MAX_CHARS):
        _chars -= _held.popitem(last=False)[1].chars
    return list(h.messages), h.chars // 4


def reread(r: redis.Redis, cid: str) -> tuple[list[dict[str, Any]], int]:
    """Read the whole history of ``cid`` again (after this step rewrote or added to it)."""
    pipe = r.pipeline(transaction=True)
    pipe.lrange(keys.conv(cid, "history"), 0, -1)
    pipe.get(keys.conv(cid, "epoch"))
    raw, epoch = pipe.execute()
    return history(cid, len(raw), 0, raw, epoch or "")


def forget(cid: str) -> None:
    """Drop what is held of ``cid`` (it was rewritten by this process, or a read failed)."""
    global _chars
    dropped = _held.pop(cid, None)
    if dropped is not None:
        _chars -= dropped.chars
