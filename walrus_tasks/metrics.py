"""Cluster-wide figures kept in Redis: run outcomes and durations by agent, queue depths.

Runs ended and tokens used are counted by tenant too (``tenant_figure``): the tenant of the
run's conversation (``walrus_tasks.tenancy``), named by a gateway token, so the set is bounded
by the config (the default tenant is ``DEFAULT_TENANT``).

No single process sees every run end, so the worker that ends a run adds it to one Redis hash,
in the script that ends it (``run_figure``; ``record_run`` for a run ended elsewhere), and
whoever reports reads the hash back: the gateway's ``GET /metrics`` on every scrape and
``walrus status``. Plain data only; the Prometheus objects live in ``gateway.metrics`` and
``worker.metrics``.

The figures are counters since the hash was created: they survive process restarts and are
reset only with Redis's data, which Prometheus treats as a counter reset.
"""

from __future__ import annotations

import logging
import math
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

import redis

from walrus_tasks import broker_depth, indexes, keys

log = logging.getLogger("walrus.metrics")

RUN_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
"""Upper bounds (seconds) of the run-duration histogram; longer runs count in ``+Inf`` only."""
RUN_STATUSES = ("succeeded", "failed", "cancelled")
"""The terminal statuses of a run."""
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
"""Kombu's Redis transport keeps a queue as one list per priority step: ``name``, ``name␆␖3``…"""
UNACKED = "unacked"
"""Kombu's hash of delivered, not yet acknowledged messages (in flight with acks_late)."""


def bound_label(bound: float) -> str:
    """How a bucket bound is written in the hash (and in Prometheus): ``0.5``, ``30``, ``+Inf``."""
    return "+Inf" if math.isinf(bound) else f"{bound:g}"


def run_figure(agent: str, status: str, seconds: float | None) -> list[str]:
    """The hash fields one ended run adds to: ``[n, sum, seconds, le]`` field names.

    ``seconds`` and the bucket are "" when it never started. ``lua/finish.lua`` adds them as it
    ends the run; ``record_run`` for a run ended elsewhere.
    """
    if seconds is None:
        return [f"n:{agent}:{status}", f"sum:{agent}", "", ""]
    seconds = max(seconds, 0.0)
    i = bisect_left(RUN_BUCKETS, seconds)
    bound = RUN_BUCKETS[i] if i < len(RUN_BUCKETS) else math.inf
    return [
        f"n:{agent}:{status}",
        f"sum:{agent}",
        repr(seconds),
        f"le:{agent}:{bound_label(bound)}",
    ]


FIGURES = [keys.metrics_runs(b) for b in range(keys.BUCKETS)]
"""The run-figure hash of every bucket: the cluster-wide figures are their sum."""


def record_run(r: redis.Redis, agent: str, status: str, seconds: float | None) -> None:
    """Count one ended run of ``agent``; ``seconds`` is None when it never started."""
    n, total, value, le = run_figure(agent, status, seconds)
    pipe = r.pipeline(transaction=True)  # a scrape never sees the count without its bucket
    figures = keys.metrics_runs(0)  # a run ended elsewhere: no bucket of its own
    pipe.hincrby(figures, n, 1)
    if value:
        pipe.hincrbyfloat(figures, total, float(value))
        pipe.hincrby(figures, le, 1)
    pipe.execute()


DEFAULT_TENANT = "(default)"
"""The label of the default tenant: no tenant name has parentheses (``tenancy.TENANT_RE``)."""


def tenant_figure(
    tenant: str | None, status: str, input_tokens: int, output_tokens: int
) -> list[str]:
    """The ``(field, increment)`` pairs one ended run of ``tenant`` adds (after ``run_figure``).

    ``tn:<tenant>:<status>`` counts the run, ``tin:<tenant>`` and ``tout:<tenant>`` its tokens;
    the default tenant's fields have an empty tenant (``tn::succeeded``).
    """
    t = tenant or ""
    return [
        f"tn:{t}:{status}", "1",
        f"tin:{t}", str(max(int(input_tokens), 0)),
        f"tout:{t}", str(max(int(output_tokens), 0)),
    ]  # fmt: skip


@dataclass
class TenantStats:
    """The ended runs of one tenant, per status, and the tokens they used."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_STATUSES, 0))
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, other: TenantStats) -> None:
        """Add ``other``'s figures to these (tenants folded into one label)."""
        for status, n in other.outcomes.items():
            self.outcomes[status] = self.outcomes.get(status, 0) + n
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``GET /v1/stats``."""
        return {**self.outcomes, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens}  # fmt: skip


def parse_tenants(fields: dict[str, str]) -> dict[str, TenantStats]:
    """The tenant figures of the ``walrus:metrics:runs`` hash: ``label -> TenantStats``.

    The default tenant's label is ``DEFAULT_TENANT``.
    """
    stats: dict[str, TenantStats] = {}
    for name, value in fields.items():
        kind, _, rest = name.partition(":")
        if kind not in ("tn", "tin", "tout"):
            continue
        tenant, _, detail = rest.partition(":")
        s = stats.setdefault(tenant or DEFAULT_TENANT, TenantStats())
        try:
            if kind == "tn" and detail:
                s.outcomes[detail] = s.outcomes.get(detail, 0) + int(value)
            elif kind == "tin":
                s.input_tokens += int(value)
            elif kind == "tout":
                s.output_tokens += int(value)
        except ValueError:
            continue
    return dict(sorted(stats.items()))


def run_seconds(started_at_ms: str | None, now: float | None = None) -> float | None:
    """Seconds since a run record's ``started_at`` (milliseconds), or None if it has none."""
    if not started_at_ms:
        return None
    return (now if now is not None else time.time()) - float(started_at_ms) / 1000


@dataclass
class RunStats:
    """The ended runs of one agent: how many per status, and how long they took."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RUN_STATUSES, 0))
    buckets: dict[float, int] = field(default_factory=lambda: dict.fromkeys(RUN_BUCKETS, 0))
    """Runs per duration bucket (upper bound → count), not cumulative."""
    seconds_sum: float = 0.0

    @property
    def timed(self) -> int:
        """How many runs have a duration (every run that started)."""
        return sum(self.buckets.values())

    @property
    def mean_seconds(self) -> float | None:
        """Mean run duration, or None before the first timed run."""
        return self.seconds_sum / self.timed if self.timed else None

    def cumulative(self) -> list[tuple[float, int]]:
        """``(upper bound, runs at most that long)``, ascending, ending with ``+Inf``."""
        total, out = 0, []
        for bound in sorted({*self.buckets, math.inf}):
            total += self.buckets.get(bound, 0)
            out.append((bound, total))
        return out

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``walrus status --json``."""
        mean = self.mean_seconds
        return {
            **self.outcomes,
            "timed": self.timed,
            "seconds_sum": round(self.seconds_sum, 3),
            "mean_seconds": None if mean is None else round(mean, 3),
        }


def parse_runs(fields: dict[str, str]) -> dict[str, RunStats]:
    """The ``walrus:metrics:runs`` hash as ``agent → RunStats`` (unknown fields are skipped)."""
    stats: dict[str, RunStats] = {}
    for name, value in fields.items():
        kind, _, rest = name.partition(":")
        agent, _, detail = rest.partition(":")
        try:
            if kind == "n" and detail:
                s = stats.setdefault(agent, RunStats())
                s.outcomes[detail] = s.outcomes.get(detail, 0) + int(value)
            elif kind == "sum":
                stats.setdefault(agent, RunStats()).seconds_sum += float(value)
            elif kind == "le" and detail:
                s = stats.setdefault(agent, RunStats())
                bound = float(detail)
                s.buckets[bound] = s.buckets.get(bound, 0) + int(value)
        except ValueError:
            continue  # a field this version does not write: ignore rather than fail a scrape
    return dict(sorted(stats.items()))


def read_runs(r: redis.Redis) -> dict[str, RunStats]:
    """Run outcomes and durations by agent, for every agent that has ended a run."""
    return parse_runs(indexes.read_summed(r, FIGURES))


@dataclass
class Figures:
    """The cluster's state at one moment, read in one round trip (two with a separate broker)."""

    queues: dict[str, int]
    unacked: int | None
    leases: int
    conversations: int
    inboxes: int
    active_runs: int
    runs: dict[str, RunStats]
    broker_up: bool = True
    tenants: dict[str, TenantStats] = field(default_factory=dict)
    """Runs ended and tokens used by tenant (``parse_tenants``)."""
    """False when a separate broker did not answer (its queues then show as ``{}``)."""


def read_figures(r: redis.Redis, queues: tuple[str, ...]) -> Figures:
    """Queue depths (all priority lists summed), counts of state, and run figures.

    The queues are read from the broker: in the same pipeline when it is the state Redis, else
    by ``broker_depth.read``; a separate broker that does not answer gives ``broker_up=False``.
    """
    own_broker = broker_depth.separate_broker()
    pipe = r.pipeline(transaction=False)
    if not own_broker:
        for q in queues:
            for suffix in PRIORITY_SUFFIXES:
                pipe.llen(q + suffix)
        pipe.hlen(UNACKED)
    indexes.queue_sizes(pipe, "leases", "conversations", "inboxes", "runs:active")
    for key in FIGURES:
        pipe.hgetall(key)
    res: list[Any] = pipe.execute()
    broker_up = True
    if own_broker:
        try:
            broker = broker_depth.read(queues)
            depths, unacked = broker.queues, broker.unacked
        except broker_depth.BROKER_DOWN as e:
            log.warning("broker unreachable, queue depths unknown: %s", e)
            depths, unacked, broker_up = {}, None, False
    else:
        n = len(PRIORITY_SUFFIXES)
        depths = {q: sum(res[i * n : (i + 1) * n]) for i, q in enumerate(queues)}
        unacked = res[len(queues) * n]
        res = res[len(queues) * n + 1 :]
    leases, conversations, inboxes, active = indexes.read_sizes(res, 4)
    runs = indexes.summed(res[4 * keys.BUCKETS :])
    return Figures(
        depths, unacked, leases, conversations, inboxes, active, parse_runs(runs), broker_up,
        parse_tenants(runs),
    )  # fmt: skip
