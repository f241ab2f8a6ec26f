"""Cron entries in Redis: create (validated), list, delete, and the atomic claim of a fire.

An entry is JSON in the hash ``walrus:crons``; its next fire time is its score in the sorted set
``walrus:crons:due``, which the beat polls. A fire is claimed with one Lua script that checks the
entry is still due at that time and sets a per-fire dedup key, so two beats can never fire the
same tick, and a deleted entry never fires again.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from typing import Any

import redis
from pydantic import ValidationError

from walrus_tasks import ids, keys, schedule, scripts
from walrus_tasks import script_args as S
from walrus_tasks.config import Config
from walrus_tasks.errors import InvalidInput, NotFound
from walrus_tasks.models import CronEntry, CronSpec
from walrus_tasks.names import agent_name, sender_name

DEDUP_TTL_MS = 3_600_000
"""How long a fire's dedup key lives: far longer than any beat failover."""


def next_fire_ms(entry: CronSpec, after_ms: int, anchor_ms: int) -> int:
    """The first fire time (ms) strictly after ``after_ms``; ``anchor_ms`` phases ``@every``.

    The beat anchors each next fire on the due time it just fired (whole ms, on the grid),
    not on the entry's ``created_at``: ``cron_claim.lua`` rewrites the entry with cjson, which
    keeps 14 significant digits, so ``created_at`` comes back up to 0.05 ms off and its grid
    could move by 1 ms; a fire at its due time then found the same slot again 1 ms later.
    """
    parsed = schedule.parse(entry.schedule)
    return parsed.next_after(after_ms, anchor_ms, schedule.zone(entry.timezone))


def usable_skills(config: Config) -> dict[str, list[str]]:
    """Agent -> the skills ``/name`` invokes for it: those it lists that exist."""
    return {n: [s for s in a.skills if s in config.skills] for n, a in config.agents.items()}


def validate(
    spec: CronSpec, agents: Collection[str], skills: Mapping[str, Collection[str]] | None = None
) -> None:
    """Raise InvalidInput (422) or NotFound (404, unknown agent) for a spec that cannot run.

    ``skills`` (agent -> its usable skills, :func:`usable_skills`): a skill the agent does not
    have is refused, since it would fire as the plain text ``/name``.
    """
    agent_name(spec.agent)
    if spec.agent not in agents:
        raise NotFound(f"unknown agent {spec.agent!r}")
    if spec.sender is not None:
        sender_name(spec.sender)
    if (spec.message is None) == (spec.skill is None):
        raise InvalidInput("give exactly one of 'message' and 'skill'")
    if spec.skill is not None:
        agent_name(spec.skill)  # skill names follow the agent-name pattern
        if skills is not None and spec.skill not in skills.get(spec.agent, ()):
            have = ", ".join(skills.get(spec.agent, ())) or "none"
            raise InvalidInput(
                f"skill: agent {spec.agent!r} has no skill {spec.skill!r} (it has: {have})"
            )
    if (spec.quiet_start is None) != (spec.quiet_end is None):
        raise InvalidInput("give both quiet_start and quiet_end, or neither")
    if spec.quiet_start is not None and spec.quiet_end is not None:
        schedule.hhmm(spec.quiet_start, "quiet_start")
        schedule.hhmm(spec.quiet_end, "quiet_end")
    schedule.zone(spec.timezone)
    schedule.parse(spec.schedule)


def create(
    r: redis.Redis,
    spec: CronSpec,
    agents: Collection[str],
    now: float | None = None,
    skills: Mapping[str, Collection[str]] | None = None,
) -> CronEntry:
    """Validate and store a new entry; its first fire is the first schedule time after now."""
    validate(spec, agents, skills)
    now = time.time() if now is None else now
    cron_id = ids.hex_id()[:12]
    entry = CronEntry(
        **{**spec.model_dump(), "sender": spec.sender or f"cron:{cron_id}"},
        id=cron_id,
        created_at=now,
        next_fire_at=next_fire_ms(spec, round(now * 1000), round(now * 1000)) / 1000,
    )
    pipe = r.pipeline(transaction=True)
    _store(pipe, [entry])
    pipe.execute()
    return entry


def _store(pipe: redis.client.Pipeline, entries: list[CronEntry]) -> None:
    for e in entries:
        pipe.hset(keys.CRONS, e.id, e.model_dump_json())
        pipe.zadd(keys.CRONS_DUE, {e.id: round(e.next_fire_at * 1000)})


def _parse(raw: str | bytes) -> CronEntry:
    return CronEntry.model_validate_json(raw)


def list_all(r: redis.Redis) -> list[CronEntry]:
    """Every entry, oldest first."""
    raw: dict[str, str] = r.hgetall(keys.CRONS)  # type: ignore[assignment]
    return sorted((_parse(v) for v in raw.values()), key=lambda e: (e.created_at, e.id))


def get(r: redis.Redis, cron_id: str) -> CronEntry:
    """One entry; NotFound if there is none."""
    raw: str | None = r.hget(keys.CRONS, cron_id)  # type: ignore[assignment]
    if raw is None:
        raise NotFound(f"unknown cron {cron_id!r}")
    return _parse(raw)


def delete(r: redis.Redis, cron_id: str) -> None:
    """Delete an entry (it never fires again); NotFound if there is none."""
    pipe = r.pipeline(transaction=True)
    pipe.hdel(keys.CRONS, cron_id)
    pipe.zrem(keys.CRONS_DUE, cron_id)
    removed, _ = pipe.execute()
    if not removed:
        raise NotFound(f"unknown cron {cron_id!r}")


def due(r: redis.Redis, now_ms: int, limit: int = 100) -> list[tuple[str, int]]:
    """``(id, due_ms)`` of the entries due at ``now_ms``, earliest first."""
    rows: list[tuple[str, float]] = r.zrangebyscore(  # type: ignore[assignment]
        keys.CRONS_DUE, "-inf", now_ms, start=0, num=limit, withscores=True
    )
    return [(cron_id, int(score)) for cron_id, score in rows]


def next_due_ms(r: redis.Redis) -> int | None:
    """The earliest next fire time of any entry (ms), or None with no entries."""
    first: list[tuple[str, float]] = r.zrange(keys.CRONS_DUE, 0, 0, withscores=True)  # type: ignore[assignment]
    return int(first[0][1]) if first else None


def claim(
    r: redis.Redis, cron_id: str, due_ms: int, next_ms: int | None, fired: bool, now: float
) -> CronEntry | None:
    """Atomically move the entry past ``due_ms`` (delete it if ``next_ms`` is None).

    Returns the entry as it was, or None when another beat (or a delete) got there first.
    """
    raw = scripts.call(
        r,
        S.CRON_CLAIM,
        [keys.CRONS, keys.CRONS_DUE, keys.fired(f"cron:{cron_id}", due_ms)],
        {"id": cron_id, "due_ms": due_ms, "next_ms": "" if next_ms is None else next_ms,
         "fired": "1" if fired else "0", "now_s": now, "dedup_ttl_ms": DEDUP_TTL_MS},
    )  # fmt: skip
    return _parse(raw) if raw else None


def record_run(r: redis.Redis, cron_id: str, run_id: str) -> None:
    """Note the run a fire started (nothing if the entry is gone, e.g. a fired ``once``)."""
    scripts.call(r, S.CRON_RECORD, [keys.CRONS], {"id": cron_id, "run_id": run_id})


def dump(r: redis.Redis) -> list[dict[str, Any]]:
    """Every entry as a JSON-able dict, for ``walrus export`` (lossless with :func:`load`)."""
    return [e.model_dump() for e in list_all(r)]


def load(r: redis.Redis, items: list[dict[str, Any]]) -> None:
    """Replace every entry with ``items`` (as :func:`dump` wrote them); InvalidInput if bad."""
    try:
        entries = [CronEntry.model_validate(item) for item in items]
    except ValidationError as e:
        raise InvalidInput(f"bad cron entry: {e}") from e
    for entry in entries:
        schedule.parse(entry.schedule)
    pipe = r.pipeline(transaction=True)
    pipe.delete(keys.CRONS, keys.CRONS_DUE)
    _store(pipe, entries)
    pipe.execute()
