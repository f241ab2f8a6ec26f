"""The conversations part of ``walrus export`` / ``walrus import`` (layout in ``export``).

A conversation's durable state is its index entry, its message counter, its history and the
history that compaction moved out of it (``walrus:conv:<cid>:archive``, a list of JSON chunks
``{archived_at, run_id, messages}``). History and archive are copied line for line, exactly as
stored; the archive file exists only for a conversation that has an archive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from walrus_tasks import indexes, keys, tenancy, topology
from walrus_tasks.errors import InvalidInput, WalrusError
from walrus_tasks.export_files import (
    load_toml,
    read_jsonl,
    toml_tables,
    toml_text,
    without_none,
    write_jsonl,
)
from walrus_tasks.names import agent_name

FORMAT = 1
"""Version of the layout, written to ``sessions/index.toml``."""
INDEX = "sessions/index.toml"
PARTS: tuple[keys.ConvPart, ...] = ("history", "seq", "archive")
"""The keys of a conversation that an export covers."""
_CHUNK = 1000
"""Lines per RPUSH: one command per message would be slow, one for all too large."""

Advance = Callable[[int, int], None]
"""Told ``(done, total)`` after each conversation's files are written or read."""


def _nothing(done: int, total: int) -> None:
    """The default :data:`Advance`: tells no one."""


@dataclass
class Session:
    """One conversation's durable state."""

    agent: str
    sender: str
    last_active: int | float | None = None
    """Its score in the conversation index (ms); None when it is not in the index."""
    seq: int | None = None
    """Messages accepted so far (``walrus:conv:<cid>:seq``); None when unset."""
    history: list[str] = field(default_factory=list)
    """The history list's raw entries (JSON objects), in order."""
    archive: list[str] = field(default_factory=list)
    """The compaction archive's raw entries (JSON objects), in order."""

    @property
    def path(self) -> str:
        """Its history file, relative to the export directory."""
        return f"sessions/{self.agent}/{self.sender}.jsonl"

    @property
    def archive_path(self) -> str:
        """Its compaction archive file, relative to the export directory."""
        return f"sessions/{self.agent}/{self.sender}.archive.jsonl"


# --- Redis side ------------------------------------------------------------------------------


def read_sessions(r: redis.Redis) -> list[Session]:
    """Every conversation with an index entry or a key of ``PARTS``, sorted by (agent, sender)."""
    cids = set(indexes.members(r, "conversations"))
    for part in PARTS:
        for key in r.scan_iter(match=keys.conv_pattern(part), count=1000):
            cids.add(keys.conv_cid(key, part))
    ordered = sorted(cids, key=keys.split_cid)
    pipe = topology.pipeline(r)  # one consistent snapshot of what the scan found (one Redis)
    for key in keys.every("conversations"):
        pipe.zrange(key, 0, -1, withscores=True)
    for c in ordered:
        pipe.lrange(keys.conv(c, "history"), 0, -1)
        pipe.get(keys.conv(c, "seq"))
        pipe.lrange(keys.conv(c, "archive"), 0, -1)
    replies = pipe.execute()
    scores: dict[str, float] = {c: s for found in replies[: keys.BUCKETS] for c, s in found}
    replies = replies[keys.BUCKETS - 1 :]  # the conversations' own replies start at 1
    sessions = []
    for i, c in enumerate(ordered):
        agent, sender = keys.split_cid(c)
        try:
            agent_name(agent)
            tenancy.stored_sender(sender)  # a tenant's: sessions/<agent>/<tenant>/<sender>
        except InvalidInput as e:
            raise WalrusError(f"conversation {c!r} in Redis cannot be exported: {e}") from e
        history, seq, archive = replies[1 + 3 * i : 4 + 3 * i]
        score = scores.get(c)
        sessions.append(
            Session(
                agent=agent,
                sender=sender,
                last_active=int(score) if score is not None and score.is_integer() else score,
                seq=None if seq is None else int(seq),
                history=history,
                archive=archive,
            )
        )
    return sessions


def write_sessions(r: redis.Redis, sessions: list[Session], replace: list[Session]) -> None:
    """In one transaction: delete the conversations of ``replace``, then store ``sessions``."""
    pipe = topology.pipeline(r)
    if replace:
        for index in keys.every("conversations"):
            pipe.delete(index)
        for old in replace:
            c = keys.cid(old.agent, old.sender)
            pipe.delete(*(keys.conv(c, part) for part in PARTS))
    for s in sessions:
        c = keys.cid(s.agent, s.sender)
        stored: tuple[tuple[keys.ConvPart, list[str]], ...] = (
            ("history", s.history),
            ("archive", s.archive),
        )
        for part, lines in stored:
            pipe.delete(keys.conv(c, part))
            for start in range(0, len(lines), _CHUNK):
                pipe.rpush(keys.conv(c, part), *lines[start : start + _CHUNK])
        pipe.incr(keys.conv(c, "epoch"))  # history rewritten: workers read it again
        if s.seq is not None:
            pipe.set(keys.conv(c, "seq"), s.seq)
        if s.last_active is not None:
            pipe.zadd(keys.conv_index("conversations", c), {c: s.last_active})
    pipe.execute()


# --- files -----------------------------------------------------------------------------------


def write_session_files(root: Path, sessions: list[Session], advance: Advance = _nothing) -> None:
    """Write the index, every history and every non-empty archive under ``root/sessions``."""
    histories = {s.path for s in sessions}
    for s in sessions:
        if s.archive and s.archive_path in histories:  # sender "x" archived, "x.archive" exists
            raise WalrusError(f"{s.archive_path}: both a history and an archive; cannot export")
    index = [
        without_none(
            {"agent": s.agent, "sender": s.sender, "last_active": s.last_active, "seq": s.seq},
            INDEX,
        )
        for s in sessions
    ]
    (root / "sessions").mkdir(parents=True)
    (root / INDEX).write_text(
        toml_text(
            "walrus export: the conversation index. last_active = its score in\n"
            "walrus:conversations (ms), seq = messages accepted; absent = none.\n"
            "History: sessions/<agent>/<sender>.jsonl, one stored message per line;\n"
            "compacted history: <sender>.archive.jsonl, one archived chunk per line.",
            {"format": FORMAT, "conversations": index},
        ),
        encoding="utf-8",
    )
    for n, s in enumerate(sessions, 1):
        # parents: a tenant's conversation is a level down, sessions/<agent>/<tenant>/<sender>
        (root / s.path).parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(root / s.path, s.history)
        if s.archive:
            write_jsonl(root / s.archive_path, s.archive)
        advance(n, len(sessions))


def _index_row(row: dict[str, Any], where: str) -> Session:
    extra = set(row) - {"agent", "sender", "last_active", "seq"}
    if extra:
        raise InvalidInput(f"{where}: unknown keys {sorted(extra)}")
    agent, sender = row.get("agent"), row.get("sender")
    seq, last_active = row.get("seq"), row.get("last_active")
    if not isinstance(agent, str) or not isinstance(sender, str):
        raise InvalidInput(f"{where}: agent and sender must be strings")
    if not (seq is None or (type(seq) is int and seq >= 0)):
        raise InvalidInput(f"{where}: seq must be a non-negative integer")
    if not (last_active is None or type(last_active) in (int, float)):
        raise InvalidInput(f"{where}: last_active must be a number (ms)")
    if not sender:  # sender_name("") would mean "user": a row must name its sender
        raise InvalidInput(f"{where}: sender is empty")
    try:
        return Session(agent_name(agent), tenancy.stored_sender(sender), last_active, seq)
    except InvalidInput as e:
        raise InvalidInput(f"{where}: {e.message}") from e


def _read_index(root: Path) -> list[Session]:
    data = load_toml(root, INDEX)
    extra = set(data) - {"format", "conversations"}
    if data.get("format") != FORMAT or extra:
        problem = f"unknown keys {sorted(extra)}" if extra else f"format is not {FORMAT}"
        raise InvalidInput(f"{root / INDEX}: {problem}")
    sessions: dict[tuple[str, str], Session] = {}
    for n, row in enumerate(toml_tables(root, INDEX, "conversations", data), 1):
        session = _index_row(row, f"{root / INDEX}: conversation {n}")
        if (session.agent, session.sender) in sessions:
            raise InvalidInput(f"{root / INDEX}: conversation {n} is listed twice")
        sessions[(session.agent, session.sender)] = session
    return list(sessions.values())


def read_session_files(root: Path, advance: Advance = _nothing) -> list[Session]:
    """Parse and validate ``root/sessions``; InvalidInput names the first bad file."""
    sessions = _read_index(root)
    histories = {s.path for s in sessions}
    # A history path wins over an archive path: the export refused to write both.
    archives = {s.archive_path: s for s in sessions if s.archive_path not in histories}
    for path in sorted((root / "sessions").glob("**/*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != INDEX and rel not in histories and rel not in archives:
            raise InvalidInput(f"{path}: not a conversation listed in {INDEX}")
    for n, s in enumerate(sessions, 1):
        s.history = read_jsonl(root / s.path)
        if s.archive_path in archives and (root / s.archive_path).is_file():
            s.archive = read_jsonl(root / s.archive_path)
        advance(n, len(sessions))
    return sessions
