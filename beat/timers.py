"""What the beat fires: due cron entries and agent heartbeats.

Every fire is first *claimed* in Redis (one Lua script: still due at that time, and a per-fire
dedup key), then submitted as a message like any client's. Two beats that both believe they
hold the lock still fire a tick once. A fire later than ``deadline`` (the beat was down) is
skipped, and the next fire is the first schedule time after now: downtime never replays a
burst of missed ticks.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import redis

from walrus_tasks import crons, keys, schedule, scripts, tracing
from walrus_tasks import script_args as S
from walrus_tasks.config import Config
from walrus_tasks.errors import Conflict, WalrusError
from walrus_tasks.log import bound
from walrus_tasks.submit import submit
from walrus_tasks.tenancy import scoped

log = logging.getLogger("walrus.beat")

HEARTBEAT_SENDER = "heartbeat"
"""The conversation ``(agent, "heartbeat")`` that every heartbeat of an agent goes to."""


@dataclass(frozen=True)
class Fired:
    """One timer that came due: what it is, and the run it started (None if skipped)."""

    timer: str
    due_ms: int
    run_id: str | None
    why_not: str = ""


def fire_crons(r: redis.Redis, agents: Collection[str], now: float, deadline: float) -> list[Fired]:
    """Fire (or skip: quiet hours, too late, unknown agent) every cron entry due at ``now``."""
    out = []
    for cron_id, due_ms in crons.due(r, int(now * 1000)):
        try:
            entry = crons.get(r, cron_id)
        except WalrusError:
            continue  # deleted since we listed it
        due = due_ms / 1000
        local = datetime.fromtimestamp(due, schedule.zone(entry.timezone))
        why_not = ""
        if now - due > deadline:
            why_not = f"{now - due:.0f}s late (deadline {deadline:g}s)"
        elif schedule.in_quiet_hours(local, entry.quiet_start, entry.quiet_end):
            why_not = f"quiet hours {entry.quiet_start}-{entry.quiet_end}"
        elif entry.agent not in agents:
            why_not = f"unknown agent {entry.agent!r}"
        fire = not why_not
        next_ms: int | None = None
        if not (fire and entry.once):
            next_ms = crons.next_fire_ms(entry, max(int(now * 1000), due_ms), due_ms)
        if crons.claim(r, cron_id, due_ms, next_ms, fire, now) is None:
            continue  # another beat claimed it, or it was deleted
        run_id = None
        with bound(agent=entry.agent, sender=entry.sender):
            if fire:
                content = entry.message if entry.message is not None else f"/{entry.skill}"
                try:
                    meta = {"timer_due": str(due_ms)}
                    if entry.webhook:
                        meta["webhook"] = entry.webhook
                    # The entry's tenant's conversation (walrus_tasks.tenancy).
                    sender = scoped(entry.tenant, entry.sender)
                    with tracing.child_span(f"cron {cron_id}", {"gen_ai.agent.name": entry.agent}):
                        run_id = submit(r, entry.agent, sender, content, meta=meta).run_id
                    crons.record_run(r, cron_id, run_id)
                    log.info("cron %s fired: run %s", cron_id, run_id)
                except WalrusError as e:
                    why_not = e.message
            if why_not:
                log.info("cron %s skipped: %s", cron_id, why_not)
        out.append(Fired(f"cron:{cron_id}", due_ms, run_id, why_not))
    return out


def sync_heartbeats(r: redis.Redis, config: Config, now: float) -> None:
    """Make the heartbeat table match the config: add, retime or drop agents' entries."""
    want = {n: a.heartbeat.seconds for n, a in config.agents.items() if a.heartbeat.seconds > 0}
    current: dict[str, str] = r.hgetall(keys.HEARTBEATS)  # type: ignore[assignment]
    pipe = r.pipeline(transaction=True)
    for agent in current.keys() - want.keys():
        pipe.hdel(keys.HEARTBEATS, agent)
    for agent, seconds in want.items():
        raw = current.get(agent)
        if raw is None or json.loads(raw).get("interval") != seconds:
            entry = {"interval": seconds, "next": round((now + seconds) * 1000)}
            pipe.hset(keys.HEARTBEATS, agent, json.dumps(entry))
    pipe.execute()


def fire_heartbeats(r: redis.Redis, config: Config, now: float, deadline: float) -> list[Fired]:
    """Send each due agent's heartbeat prompt, unless its previous heartbeat run still goes."""
    out = []
    now_ms = int(now * 1000)
    table: dict[str, str] = r.hgetall(keys.HEARTBEATS)  # type: ignore[assignment]
    for agent, raw in table.items():
        entry = json.loads(raw)
        due_ms, interval_ms = int(entry["next"]), entry["interval"] * 1000
        if due_ms > now_ms or agent not in config.agents:
            continue
        next_ms = due_ms + math.floor((now_ms - due_ms) / interval_ms + 1) * interval_ms
        claimed = scripts.call(
            r, S.HEARTBEAT_CLAIM, [keys.HEARTBEATS, keys.fired(f"heartbeat:{agent}", due_ms)],
            {"agent": agent, "due_ms": due_ms, "next_ms": round(next_ms),
             "dedup_ttl_ms": crons.DEDUP_TTL_MS},
        )  # fmt: skip
        if not claimed:
            continue
        run_id, why_not = None, ""
        with bound(agent=agent, sender=HEARTBEAT_SENDER):
            if (now_ms - due_ms) / 1000 > deadline:
                why_not = f"{(now_ms - due_ms) / 1000:.0f}s late (deadline {deadline:g}s)"
            else:
                prompt = config.agents[agent].heartbeat.prompt
                try:
                    meta = {"timer_due": str(due_ms)}
                    with tracing.child_span(f"heartbeat {agent}", {"gen_ai.agent.name": agent}):
                        sent = submit(r, agent, HEARTBEAT_SENDER, prompt, "reject", meta=meta)
                    run_id = sent.run_id
                    log.info("heartbeat fired: run %s", run_id)
                except Conflict:
                    why_not = "the previous heartbeat run is still going"
                except WalrusError as e:
                    why_not = e.message
            if why_not:
                log.info("heartbeat skipped: %s", why_not)
        out.append(Fired(f"heartbeat:{agent}", due_ms, run_id, why_not))
    return out


def next_due(r: redis.Redis) -> float | None:
    """Seconds since the epoch of the earliest timer due (cron or heartbeat), or None."""
    times = [crons.next_due_ms(r)]
    table: dict[str, str] = r.hgetall(keys.HEARTBEATS)  # type: ignore[assignment]
    times += [int(json.loads(raw)["next"]) for raw in table.values()]
    known = [t for t in times if t is not None]
    return min(known) / 1000 if known else None
