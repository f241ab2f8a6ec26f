"""``walrus export`` / ``walrus import``: the durable state in Redis, in the SPEC.md layout.

::

    DIR/
    ├── sessions/index.toml               the conversation index (walrus:conversations) and
    │                                     each conversation's message counter (``seq``)
    ├── sessions/<agent>/<sender>.jsonl   its history: one message per line, exactly as stored
    ├── cron/crons.toml                   [[crons]], as ``walrus_tasks.crons.dump`` gives them
    ├── events/subscriptions.toml         [[subscriptions]], from ``walrus_tasks.subscriptions``
    └── memory/                           agent memory (no memory store yet: left empty)

Only what is durable is written: history, the conversation index, crons, subscriptions (and,
once it exists, memory). Runs in flight (inboxes, leases, run records, event streams) are not:
an import never starts or resumes a run. TOML has no null, so ``None`` values are left out on
write and an absent field means ``None``.

Import validates the whole directory before it writes anything, refuses while runs are in
flight, and refuses to overwrite non-empty state unless ``replace`` is set. Every function
here takes a client made with ``decode_responses=True``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
import tomli_w

from walrus_tasks import crons, keys, subscriptions
from walrus_tasks.errors import Conflict, InvalidInput, WalrusError
from walrus_tasks.names import agent_name, sender_name

FORMAT = 1
"""Version of the layout, written to ``sessions/index.toml``."""
INDEX = "sessions/index.toml"
MEMORY = "memory"
_CHUNK = 1000
"""History lines per RPUSH: one command per message would be slow, one for all too large."""


@dataclass(frozen=True)
class Table:
    """A section stored as one TOML array of tables, owned by a core module's dump/load."""

    name: str
    """The array's key in the file, and the field of ``Summary`` that counts it."""
    path: str
    dump: Callable[[redis.Redis], list[dict[str, Any]]]
    """Every entry as a JSON-able dict."""
    load: Callable[[redis.Redis, list[dict[str, Any]]], None]
    """Replace every entry (InvalidInput, and nothing changed, if one is bad)."""


TABLES = (
    Table("crons", "cron/crons.toml", crons.dump, crons.load),
    Table("subscriptions", "events/subscriptions.toml", subscriptions.dump, subscriptions.load),
)


@dataclass
class Summary:
    """How many entries of each section an export wrote or an import restored."""

    conversations: int = 0
    messages: int = 0
    crons: int = 0
    subscriptions: int = 0
    memories: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by section name."""
        return asdict(self)


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

    @property
    def path(self) -> str:
        """Its history file, relative to the export directory."""
        return f"sessions/{self.agent}/{self.sender}.jsonl"


@dataclass
class Archive:
    """Everything an export directory holds, parsed and validated."""

    sessions: list[Session]
    tables: dict[str, list[dict[str, Any]]]


# --- Redis side ------------------------------------------------------------------------------


def read_sessions(r: redis.Redis) -> list[Session]:
    """Every conversation with an index entry, a history or a counter, sorted by (agent, sender)."""
    cids: set[str] = set(r.zrange(keys.CONVERSATIONS, 0, -1))  # type: ignore[arg-type]
    for part in ("history", "seq"):
        for key in r.scan_iter(match=keys.conv_pattern(part), count=1000):
            cids.add(keys.conv_cid(key, part))
    ordered = sorted(cids, key=keys.split_cid)
    pipe = r.pipeline(transaction=True)  # one consistent snapshot of what the scan found
    pipe.zrange(keys.CONVERSATIONS, 0, -1, withscores=True)
    for c in ordered:
        pipe.lrange(keys.conv(c, "history"), 0, -1)
        pipe.get(keys.conv(c, "seq"))
    replies = pipe.execute()
    scores: dict[str, float] = dict(replies[0])
    sessions = []
    for i, c in enumerate(ordered):
        agent, sender = keys.split_cid(c)
        try:
            agent_name(agent)
            sender_name(sender)
        except InvalidInput as e:
            raise WalrusError(f"conversation {c!r} in Redis cannot be exported: {e}") from e
        score, seq = scores.get(c), replies[2 + 2 * i]
        sessions.append(
            Session(
                agent=agent,
                sender=sender,
                last_active=int(score) if score is not None and score.is_integer() else score,
                seq=None if seq is None else int(seq),
                history=replies[1 + 2 * i],
            )
        )
    return sessions


def write_sessions(r: redis.Redis, sessions: list[Session], replace: list[Session]) -> None:
    """In one transaction: delete the conversations of ``replace``, then store ``sessions``."""
    pipe = r.pipeline(transaction=True)
    if replace:
        pipe.delete(keys.CONVERSATIONS)
        for old in replace:
            c = keys.cid(old.agent, old.sender)
            pipe.delete(keys.conv(c, "history"), keys.conv(c, "seq"))
    for s in sessions:
        c = keys.cid(s.agent, s.sender)
        pipe.delete(keys.conv(c, "history"))
        for start in range(0, len(s.history), _CHUNK):
            pipe.rpush(keys.conv(c, "history"), *s.history[start : start + _CHUNK])
        if s.seq is not None:
            pipe.set(keys.conv(c, "seq"), s.seq)
        if s.last_active is not None:
            pipe.zadd(keys.CONVERSATIONS, {c: s.last_active})
    pipe.execute()


def in_flight(r: redis.Redis) -> int:
    """Conversations with a lease held or messages waiting: runs an import must not race."""
    pipe = r.pipeline(transaction=False)
    pipe.zcard(keys.LEASES)
    pipe.zcard(keys.INBOXES)
    return max(pipe.execute())  # type: ignore[no-any-return]


# --- files -----------------------------------------------------------------------------------


def _without_none(value: Any, where: str) -> Any:
    """``value`` with every None dict value left out (TOML has no null; absent means None)."""
    if isinstance(value, dict):
        return {k: _without_none(v, where) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        if any(v is None for v in value):
            raise WalrusError(f"{where}: a list holds null, which TOML cannot store")
        return [_without_none(v, where) for v in value]
    return value


def _toml(header: str, data: dict[str, Any]) -> str:
    return "".join(f"# {line}\n" for line in header.splitlines()) + "\n" + tomli_w.dumps(data)


def write_archive(root: Path, archive: Archive) -> None:
    """Write ``archive`` under ``root`` (which holds no export yet)."""
    for s in archive.sessions:
        if any("\n" in line for line in s.history):  # JSON never does, but a line is a message
            raise WalrusError(f"{s.path}: a stored message spans lines")
    index = [
        _without_none(
            {"agent": s.agent, "sender": s.sender, "last_active": s.last_active, "seq": s.seq},
            INDEX,
        )
        for s in archive.sessions
    ]
    (root / "sessions").mkdir(parents=True)
    (root / INDEX).write_text(
        _toml(
            "walrus export: the conversation index. last_active = its score in\n"
            "walrus:conversations (ms), seq = messages accepted; absent = none.\n"
            "History: sessions/<agent>/<sender>.jsonl, one stored message per line.",
            {"format": FORMAT, "conversations": index},
        ),
        encoding="utf-8",
    )
    for s in archive.sessions:
        path = root / s.path
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(line + "\n" for line in s.history), encoding="utf-8")
    for table in TABLES:
        items = _without_none(archive.tables[table.name], table.path)
        (root / table.path).parent.mkdir(exist_ok=True)
        (root / table.path).write_text(
            _toml(f"walrus export: {table.name}; an absent field = none.", {table.name: items}),
            encoding="utf-8",
        )
    export_memory(root)


def export_memory(root: Path) -> int:
    """Write agent memory under ``root/memory``; how many entries were written.

    The hook for agent memory, a later issue: no memory store exists yet, so the directory is
    made empty and ``check_memory`` refuses a non-empty one on import. When the store exists,
    dump it here (``memory/<agent>/...``), restore it in ``import_state`` and count it in
    ``Summary.memories``.
    """
    (root / MEMORY).mkdir()
    return 0


def check_memory(root: Path) -> None:
    """Refuse an export whose ``memory/`` holds anything: there is no store to put it in yet."""
    memory = root / MEMORY
    if memory.is_file() or any(memory.glob("*")):
        raise InvalidInput(f"{memory}: this version has no agent memory store to import it into")


def _check_export_target(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise InvalidInput(f"{root} is not a directory")
    taken = [p for p in ("sessions", *(t.path for t in TABLES)) if (root / p).exists()]
    if (root / MEMORY).is_file() or any((root / MEMORY).glob("*")):
        taken.append(MEMORY)
    if taken:
        raise InvalidInput(f"{root} already holds an export ({', '.join(taken)}); use a new dir")


def _load_toml(root: Path, rel: str) -> dict[str, Any]:
    path = root / rel
    if not path.is_file():
        raise InvalidInput(f"{path} is missing: not a walrus export directory?")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: not valid TOML ({e})") from e


def _tables(root: Path, rel: str, name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    items = data.get(name, [])
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise InvalidInput(f"{root / rel}: {name} must be an array of tables ([[{name}]])")
    return items


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
        return Session(agent_name(agent), sender_name(sender), last_active, seq)
    except InvalidInput as e:
        raise InvalidInput(f"{where}: {e.message}") from e


def _read_index(root: Path) -> list[Session]:
    data = _load_toml(root, INDEX)
    extra = set(data) - {"format", "conversations"}
    if data.get("format") != FORMAT or extra:
        problem = f"unknown keys {sorted(extra)}" if extra else f"format is not {FORMAT}"
        raise InvalidInput(f"{root / INDEX}: {problem}")
    sessions: dict[tuple[str, str], Session] = {}
    for n, row in enumerate(_tables(root, INDEX, "conversations", data), 1):
        session = _index_row(row, f"{root / INDEX}: conversation {n}")
        if (session.agent, session.sender) in sessions:
            raise InvalidInput(f"{root / INDEX}: conversation {n} is listed twice")
        sessions[(session.agent, session.sender)] = session
    return list(sessions.values())


def _read_history(root: Path, session: Session) -> None:
    path = root / session.path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: cannot read the history of {session.path} ({e})") from e
    lines = text.split("\n")  # not splitlines(): U+2028 and friends may sit inside a message
    if lines.pop() != "":
        raise InvalidInput(f"{path}: the last line has no newline (truncated file?)")
    for n, line in enumerate(lines, 1):
        try:
            ok = isinstance(json.loads(line), dict)
        except ValueError:
            ok = False
        if not ok:
            raise InvalidInput(f"{path} line {n}: not a JSON object")
    session.history = lines


def read_archive(root: Path) -> Archive:
    """Parse and validate an export directory; InvalidInput names the first bad file."""
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory")
    sessions = _read_index(root)
    listed = {s.path for s in sessions}
    for path in sorted((root / "sessions").glob("**/*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel != INDEX and rel not in listed:
            raise InvalidInput(f"{path}: not a conversation listed in {INDEX}")
    for s in sessions:
        _read_history(root, s)
    tables = {}
    for table in TABLES:
        data = _load_toml(root, table.path)
        if set(data) - {table.name}:
            raise InvalidInput(
                f"{root / table.path}: unknown keys {sorted(set(data) - {table.name})}"
            )
        tables[table.name] = _tables(root, table.path, table.name, data)
    check_memory(root)
    return Archive(sessions, tables)


# --- the two operations ----------------------------------------------------------------------


def _summary(archive: Archive) -> Summary:
    return Summary(
        conversations=len(archive.sessions),
        messages=sum(len(s.history) for s in archive.sessions),
        **{name: len(items) for name, items in archive.tables.items()},
    )


def export_state(r: redis.Redis, root: Path) -> Summary:
    """Write the durable state of ``r`` under ``root`` (created; must not hold an export yet)."""
    _check_export_target(root)
    archive = Archive(read_sessions(r), {t.name: t.dump(r) for t in TABLES})
    root.mkdir(parents=True, exist_ok=True)
    write_archive(root, archive)
    return _summary(archive)


def import_state(r: redis.Redis, root: Path, replace: bool) -> Summary:
    """Restore the export under ``root`` into ``r``; nothing is written if a check fails.

    Raises InvalidInput for a bad directory or file, Conflict while runs are in flight or when
    ``r`` already holds state and ``replace`` is false.
    """
    archive = read_archive(root)
    busy = in_flight(r)
    if busy:
        raise Conflict(f"{busy} conversation(s) have runs in flight; stop the workers first")
    old_sessions = read_sessions(r)
    old_tables = {t.name: t.dump(r) for t in TABLES}
    held = {"conversations": len(old_sessions)} | {k: len(v) for k, v in old_tables.items()}
    if any(held.values()) and not replace:
        counts = ", ".join(f"{n} {name}" for name, n in held.items() if n)
        raise Conflict(f"Redis already holds state ({counts}); use --replace to overwrite it")
    done: list[Table] = []
    try:  # a section's load validates its items: if one refuses, put back the ones before it
        for table in TABLES:
            try:
                table.load(r, archive.tables[table.name])
            except InvalidInput as e:  # one line, naming the file
                raise InvalidInput(f"{root / table.path}: {' '.join(e.message.split())}") from e
            done.append(table)
    except Exception:
        for table in done:
            table.load(r, old_tables[table.name])
        raise
    write_sessions(r, archive.sessions, old_sessions)
    return _summary(archive)
