"""``walrus export`` / ``walrus import``: the durable state in Redis, in the daemon's disk layout.

::

    DIR/
    ├── sessions/index.toml               the conversation index (walrus:conversations) and
    │                                     each conversation's message counter (``seq``)
    ├── sessions/<agent>/<sender>.jsonl   its history: one message per line, exactly as stored
    ├── sessions/<agent>/<sender>.archive.jsonl
    │                                     history compaction moved out: one archived chunk
    │                                     (``{archived_at, run_id, messages}``) per line, in
    │                                     order, exactly as stored; only if there is one
    ├── cron/crons.toml                   [[crons]], as ``walrus_tasks.crons.dump`` gives them
    ├── events/subscriptions.toml         [[subscriptions]], from ``walrus_tasks.subscriptions``
    ├── memory/<agent>.jsonl              an agent's memory: one entry per line, sorted by name
    │                                     (``{name, content, aliases, created_at, updated_at}``,
    │                                     times in Unix seconds); only agents with entries
    └── memory/<tenant>/<agent>.jsonl     the same, of a named tenant (``walrus_tasks.tenancy``)

Only what is durable is written: history and its compaction archive, the conversation index, crons,
subscriptions and memory. Runs in flight (inboxes, leases, run records, event streams) are not:
an import never starts or resumes a run. TOML has no null, so ``None`` values are left out on
write and an absent field means ``None``.

Both tell a :data:`Progress` how far they are (``walrus export`` draws bars from it). Import
validates the whole directory before it writes anything, refuses while runs are in
flight, and refuses to overwrite non-empty state (conversations, crons, subscriptions or
memory) unless ``replace`` is set; then all of it is replaced by the export's. Every function
here takes a client made with ``decode_responses=True``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from walrus_tasks import crons, indexes, memory, subscriptions, tenancy
from walrus_tasks.errors import Conflict, InvalidInput
from walrus_tasks.export_files import (
    load_toml,
    read_jsonl,
    toml_tables,
    toml_text,
    without_none,
    write_jsonl,
)
from walrus_tasks.export_sessions import (
    Session,
    read_session_files,
    read_sessions,
    write_session_files,
    write_sessions,
)
from walrus_tasks.names import AGENT_RE

MEMORY = "memory"
"""The memory directory: ``memory/<agent>.jsonl``, a named tenant's ``memory/<tenant>/``."""
TenantMemory = dict[str, dict[str, list[dict[str, Any]]]]
"""A named tenant's memory by tenant, then agent (``walrus_tasks.memory.dump_tenants``)."""
Progress = Callable[[str, int, int], None]
"""Told ``(phase, done, total)`` as an export or import goes on, phase after phase."""


def _silent(phase: str, done: int, total: int) -> None:
    """The default :data:`Progress`: tells no one."""


def _step(progress: Progress, phase: str) -> Callable[[int, int], None]:
    """The ``advance`` of a phase (``export_sessions.Advance``), told to ``progress``."""
    return lambda done, total: progress(phase, done, total)


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
    archived: int = 0
    """Compaction archive chunks (lines of the ``.archive.jsonl`` files)."""
    crons: int = 0
    subscriptions: int = 0
    memories: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by section name."""
        return asdict(self)


@dataclass
class Snapshot:
    """Everything an export directory holds, parsed and validated."""

    sessions: list[Session]
    tables: dict[str, list[dict[str, Any]]]
    memory: dict[str, list[dict[str, Any]]]
    """Entries by agent, as ``walrus_tasks.memory.dump`` gives them."""
    tenant_memory: TenantMemory
    """The named tenants' memory, as ``walrus_tasks.memory.dump_tenants`` gives it."""


def in_flight(r: redis.Redis) -> int:
    """Conversations with a lease held or messages waiting: runs an import must not race."""
    return max(indexes.sizes(r, "leases", "inboxes"))


# --- memory files ----------------------------------------------------------------------------


def write_memory(
    root: Path, data: dict[str, list[dict[str, Any]]], tenants: TenantMemory | None = None
) -> None:
    """Write ``memory/<agent>.jsonl`` for each agent (``data`` as ``memory.dump`` gives it).

    And ``memory/<tenant>/<agent>.jsonl`` for each named tenant's (``memory.dump_tenants``).
    """
    (root / MEMORY).mkdir()
    _write_agents(root / MEMORY, data)
    for tenant, agents in (tenants or {}).items():
        (root / MEMORY / tenant).mkdir()
        _write_agents(root / MEMORY / tenant, agents)


def _write_agents(where: Path, data: dict[str, list[dict[str, Any]]]) -> None:
    for agent, items in data.items():
        lines = [json.dumps(item, ensure_ascii=False) for item in items]
        write_jsonl(where / f"{agent}.jsonl", lines)


def read_memory(root: Path) -> tuple[dict[str, list[dict[str, Any]]], TenantMemory]:
    """Parse and validate ``memory/``: ``(default tenant's, named tenants')``.

    InvalidInput names the first bad file.
    """
    where = root / MEMORY
    if not where.is_dir():
        raise InvalidInput(f"{where} is missing: not a walrus export directory?")
    tenants: TenantMemory = {}
    for path in sorted(where.iterdir()):
        if path.is_dir():
            if not tenancy.TENANT_RE.fullmatch(path.name):
                raise InvalidInput(f"{path}: not the memory of a tenant (memory/<tenant>/)")
            tenants[path.name] = _read_agents(path)
    return _read_agents(where, tenant_dirs=True), tenants


def _read_agents(where: Path, tenant_dirs: bool = False) -> dict[str, list[dict[str, Any]]]:
    """The ``<agent>.jsonl`` files of ``where`` (and, with ``tenant_dirs``, directories)."""
    data: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(where.iterdir()):
        if tenant_dirs and path.is_dir():
            continue  # a tenant's, read by read_memory
        agent = path.name.removesuffix(".jsonl")
        if not path.is_file() or agent == path.name or not AGENT_RE.fullmatch(agent):
            raise InvalidInput(f"{path}: not the memory of an agent (memory/<agent>.jsonl)")
        items = [json.loads(line) for line in read_jsonl(path)]
        try:
            memory.validate({agent: items})
        except InvalidInput as e:
            raise InvalidInput(f"{path}: {' '.join(e.message.split())}") from e
        data[agent] = items
    return data


# --- the whole directory ---------------------------------------------------------------------


def _check_export_target(root: Path) -> None:
    if root.exists() and not root.is_dir():
        raise InvalidInput(f"{root} is not a directory")
    taken = [p for p in ("sessions", *(t.path for t in TABLES)) if (root / p).exists()]
    if (root / MEMORY).is_file() or any((root / MEMORY).glob("*")):
        taken.append(MEMORY)
    if taken:
        raise InvalidInput(f"{root} already holds an export ({', '.join(taken)}); use a new dir")


def write_snapshot(root: Path, snapshot: Snapshot, progress: Progress = _silent) -> None:
    """Write ``snapshot`` under ``root`` (which holds no export yet)."""
    write_session_files(root, snapshot.sessions, _step(progress, "writing conversations"))
    progress("writing crons, subscriptions, memory", 0, 1)
    for table in TABLES:
        items = without_none(snapshot.tables[table.name], table.path)
        (root / table.path).parent.mkdir(exist_ok=True)
        (root / table.path).write_text(
            toml_text(f"walrus export: {table.name}; an absent field = none.", {table.name: items}),
            encoding="utf-8",
        )
    write_memory(root, snapshot.memory, snapshot.tenant_memory)
    progress("writing crons, subscriptions, memory", 1, 1)


def read_snapshot(root: Path, progress: Progress = _silent) -> Snapshot:
    """Parse and validate an export directory; InvalidInput names the first bad file."""
    if not root.is_dir():
        raise InvalidInput(f"{root} is not a directory")
    sessions = read_session_files(root, _step(progress, "reading conversations"))
    progress("reading crons, subscriptions, memory", 0, 1)
    tables = {}
    for table in TABLES:
        data = load_toml(root, table.path)
        if set(data) - {table.name}:
            raise InvalidInput(
                f"{root / table.path}: unknown keys {sorted(set(data) - {table.name})}"
            )
        tables[table.name] = toml_tables(root, table.path, table.name, data)
    snapshot = Snapshot(sessions, tables, *read_memory(root))
    progress("reading crons, subscriptions, memory", 1, 1)
    return snapshot


# --- the two operations ----------------------------------------------------------------------


def _summary(snapshot: Snapshot) -> Summary:
    return Summary(
        conversations=len(snapshot.sessions),
        messages=sum(len(s.history) for s in snapshot.sessions),
        archived=sum(len(s.archive) for s in snapshot.sessions),
        memories=sum(len(items) for items in snapshot.memory.values())
        + sum(
            len(items) for agents in snapshot.tenant_memory.values() for items in agents.values()
        ),
        **{name: len(items) for name, items in snapshot.tables.items()},
    )


def export_state(r: redis.Redis, root: Path, progress: Progress = _silent) -> Summary:
    """Write the durable state of ``r`` under ``root`` (created; must not hold an export yet)."""
    _check_export_target(root)
    progress("reading Redis", 0, 1)
    snapshot = Snapshot(
        read_sessions(r),
        {t.name: t.dump(r) for t in TABLES},
        memory.dump(r),
        memory.dump_tenants(r),
    )
    progress("reading Redis", 1, 1)
    root.mkdir(parents=True, exist_ok=True)
    write_snapshot(root, snapshot, progress)
    return _summary(snapshot)


def import_state(
    r: redis.Redis, root: Path, replace: bool, progress: Progress = _silent
) -> Summary:
    """Restore the export under ``root`` into ``r``; nothing is written if a check fails.

    Raises InvalidInput for a bad directory or file, Conflict while runs are in flight or when
    ``r`` already holds state and ``replace`` is false.
    """
    snapshot = read_snapshot(root, progress)
    busy = in_flight(r)
    if busy:
        raise Conflict(f"{busy} conversation(s) have runs in flight; stop the workers first")
    old_sessions = read_sessions(r)
    old_tables = {t.name: t.dump(r) for t in TABLES}
    old_memory = memory.dump(r)
    old_tenant_memory = memory.dump_tenants(r)
    held = (
        {"conversations": len(old_sessions)}
        | {k: len(v) for k, v in old_tables.items()}
        | {
            "memories": sum(len(v) for v in old_memory.values())
            + sum(len(v) for agents in old_tenant_memory.values() for v in agents.values())
        }
    )
    if any(held.values()) and not replace:
        counts = ", ".join(f"{n} {name}" for name, n in held.items() if n)
        raise Conflict(f"Redis already holds state ({counts}); use --replace to overwrite it")
    progress("writing Redis", 0, 1)
    done: list[Table] = []
    try:  # a section's load validates its items: if one refuses, put back the ones before it
        for table in TABLES:
            try:
                table.load(r, snapshot.tables[table.name])
            except InvalidInput as e:  # one line, naming the file
                raise InvalidInput(f"{root / table.path}: {' '.join(e.message.split())}") from e
            done.append(table)
        # One transaction, the named tenants' too; validated by read_snapshot already.
        memory.load(r, snapshot.memory, snapshot.tenant_memory)
    except Exception:
        for table in done:
            table.load(r, old_tables[table.name])
        raise
    write_sessions(r, snapshot.sessions, old_sessions)
    progress("writing Redis", 1, 1)
    return _summary(snapshot)
