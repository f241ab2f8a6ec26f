"""What a run costs: Redis commands, Celery messages and worker CPU, counted per phase.

Counts come from the bench's private Redis: ``INFO commandstats`` before and after a phase
(every process's commands, the bench client's own subtracted by the caller). A command that a
Lua script calls is counted there under its own name as well as the ``EVALSHA`` that ran it.
What the clients sent (a pipeline's commands one by one) is read from the slow log, which for
the phase logs every command (``slowlog-log-slower-than 0``): a script's own calls are logged
from client address ``?:0`` (Redis 7) and left out, and each ``EVALSHA`` names its script by
SHA-1. The bench client's own connection is named ``bench`` and left out too.

Celery messages on a Redis broker are list pushes and pub/sub publishes: a task is an
``LPUSH``, kombu's or walrus's own (``walrus_tasks.task_push``, which uses ``LPUSH`` for nothing
else), and an event (``task-sent``,
``task-received``, ``task-started``, ``task-succeeded``, the workers' heartbeats) or a result
notification with ``PUBLISH``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

TOP = 12
"""Commands listed one by one (the most called); the rest are summed."""
OWN_NAME = "bench"
"""``CLIENT SETNAME`` of the bench's own connections: their commands are not the product's."""
SCRIPT_CLIENT = "?:0"
"""The slow log's client address of the commands a Lua script calls."""
LOG_LEN = 500_000
"""Slow log entries kept during a phase (a run sends a few dozen commands)."""


@dataclass
class Snapshot:
    """Redis's command counters at one moment."""

    commands: Counter[str]


def snapshot(r: redis.Redis) -> Snapshot:
    """The command counters now (the ``INFO`` calls themselves are left out of the deltas)."""
    stats: dict[str, Any] = r.info("commandstats")
    commands: Counter[str] = Counter()
    for name, value in stats.items():
        if name.startswith("cmdstat_") and isinstance(value, dict):
            commands[name.removeprefix("cmdstat_").upper()] = int(value["calls"])
    return Snapshot(commands)


def script_names() -> dict[str, str]:
    """SHA-1 -> name of every walrus Lua script, as ``walrus_tasks.scripts`` loads them."""
    from importlib.resources import files

    from walrus_tasks import scripts

    out = {}
    for entry in (files("walrus_tasks") / "lua").iterdir():
        if entry.name.endswith(".lua"):
            name = entry.name.removesuffix(".lua")
            out[hashlib.sha1(scripts.source(name).encode()).hexdigest()] = name
    return out


def start_log(r: redis.Redis) -> dict[str, str]:
    """Log every command clients send from now on; the settings to restore (``read_log``)."""
    saved: dict[str, str] = {}
    for key in ("slowlog-log-slower-than", "slowlog-max-len"):
        saved.update(r.config_get(key))
    r.config_set("slowlog-max-len", LOG_LEN)
    r.slowlog_reset()
    r.config_set("slowlog-log-slower-than", 0)
    return saved


def read_log(r: redis.Redis, saved: dict[str, str]) -> tuple[Counter[str], Counter[str], bool]:
    """Stop logging: the commands clients sent since ``start_log`` (the bench's own left out),
    the ``EVALSHA`` calls by script name, and whether the log filled up (counts too low)."""
    r.config_set("slowlog-log-slower-than", saved["slowlog-log-slower-than"])
    entries = r.slowlog_get(-1)
    r.config_set("slowlog-max-len", saved["slowlog-max-len"])
    r.slowlog_reset()
    names = script_names()
    sent: Counter[str] = Counter()
    by_script: Counter[str] = Counter()
    for e in entries:
        command, client, address = (
            v.decode(errors="replace") if isinstance(v, bytes) else str(v)
            for v in (e["command"], e.get("client_name", ""), e.get("client_address", ""))
        )
        if client == OWN_NAME or address == SCRIPT_CLIENT:
            continue
        words = command.split(" ", 2)
        name = words[0].upper()
        if name in ("CONFIG", "SLOWLOG"):
            continue
        sent[name] += 1
        if name == "EVALSHA" and len(words) > 1:
            by_script[names.get(words[1], words[1][:8])] += 1
    return sent, by_script, len(entries) >= LOG_LEN


@dataclass
class Cost:
    """The commands of one phase, per unit of work (a run, a task)."""

    units: int
    commands: Counter[str] = field(default_factory=Counter)
    sent: Counter[str] = field(default_factory=Counter)
    """What clients sent, by command (from the slow log)."""
    scripts: Counter[str] = field(default_factory=Counter)
    """``EVALSHA`` calls by script name."""
    worker_cpu_s: float = 0.0
    log_full: bool = False

    @classmethod
    def between(
        cls,
        before: Snapshot,
        after: Snapshot,
        units: int,
        worker_cpu_s: float,
        own: Counter[str] | None = None,
        log: tuple[Counter[str], Counter[str], bool] | None = None,
    ) -> Cost:
        """The delta of two snapshots, less ``own`` (the bench client's commands), with what
        ``read_log`` found."""
        delta = after.commands.copy()
        delta.subtract(before.commands)
        delta.subtract(own or Counter())
        for name in ("INFO", "CONFIG", "SLOWLOG", "CLIENT"):
            delta.pop(name, None)
        delta = +delta  # drop zero and negative counts
        sent, by_script, full = log or (Counter(), Counter(), False)
        return cls(units, delta, sent, by_script, worker_cpu_s, full)

    def summary(self) -> dict[str, Any]:
        """Per unit: all commands, client commands, Celery messages, CPU-ms; top commands."""
        n = self.units or 1
        total = sum(self.commands.values())
        return {
            "units": self.units,
            "redis_commands": total / n,
            "client_commands": sum(self.sent.values()) / n,
            "evalsha": self.commands["EVALSHA"] / n,
            "celery_task_messages": self.commands["LPUSH"] / n,
            "celery_event_messages": self.commands["PUBLISH"] / n,
            "worker_cpu_ms": self.worker_cpu_s * 1000 / n,
            "top_commands": {k: v / n for k, v in self.commands.most_common(TOP)},
            "other_commands": (total - sum(c for _, c in self.commands.most_common(TOP))) / n,
            "sent_commands": {k: v / n for k, v in self.sent.most_common()},
            "scripts": {k: v / n for k, v in self.scripts.most_common()},
            "log_full": self.log_full,
        }
