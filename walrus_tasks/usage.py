"""LLM usage by tenant, agent and model: hourly buckets in Redis, written with each step.

Where it is written: ``lua/commit.lua``, the script that commits a step's LLM call, adds the
call's tokens to two hashes in the same atomic step, so usage is counted exactly once per
committed step (a replayed step is ``stale`` and adds nothing, invariant 2 of docs/design.md):

- ``keys.usage_hour(YYYYMMDDHH, bucket)``: the hour's counts (UTC) of the run's hash-tag bucket
  (docs/design.md, "Keys and slots"; a read adds the buckets up), one field per
  ``tenant|agent|model|kind`` with kind ``in``, ``out`` (tokens), ``calls`` (LLM calls) and
  ``runs`` (runs whose first call this was). One HINCRBY per field; the bucket's expiry is set
  once, to ``WALRUS_USAGE_RETENTION_DAYS`` after its hour ends. A range is read with one
  HGETALL per hour and bucket, pipelined (``MAX_RANGE_DAYS`` bounds it).
- ``keys.usage_totals(bucket)``: the same fields since the hash was created, never expired: the
  counters the gateway's ``GET /metrics`` exports (every gateway answers the same).

The model is the one that answered the call: a fallback model's tokens count under the
fallback. The tenant is the run's (``tenancy.tenant_of`` its sender; ``""`` in the hash and
``DEFAULT_TENANT`` on the wire for the default one). Tenant and agent names hold no ``|``; a
model may, so a field is split from both ends.

Cost is computed when usage is read, from ``[prices]`` of config.toml (``Config.price``): the
tokens are the fact, and a corrected or late price then applies to what was counted already.
The price of a past hour is the price in the config now.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import get_args

import redis

from walrus_tasks import indexes, keys
from walrus_tasks.config import Config
from walrus_tasks.durations import duration_seconds
from walrus_tasks.errors import InvalidInput
from walrus_tasks.metrics import DEFAULT_TENANT
from walrus_tasks.models import UsageGroup, UsageReport, UsageRow
from walrus_tasks.settings import get_settings

SEP = "|"
"""Between the parts of a bucket's field: ``tenant|agent|model|kind``."""
KINDS = ("in", "out", "calls", "runs")
"""What each ``tenant|agent|model`` counts: input and output tokens, LLM calls, runs."""
HOUR = 3600
DAY = 24 * HOUR
DEFAULT_RANGE_DAYS = 7
"""``GET /v1/usage`` without ``from``: this many days before ``to``."""
MAX_RANGE_DAYS = 93
"""The longest range one answer covers (a quarter): at most 2 233 hourly buckets read."""
GROUPS: tuple[UsageGroup, ...] = get_args(UsageGroup)
PERIODS = ("hour", "day")


def hour_of(ts: float) -> str:
    """The UTC hour of unix time ``ts`` as a bucket names it: ``YYYYMMDDHH``."""
    return _hour_name(int(ts // HOUR))


@lru_cache(maxsize=8)
def _hour_name(hour: int) -> str:
    """Hour ``hour`` since the epoch as a bucket names it (every step's commit asks: cached)."""
    return datetime.fromtimestamp(hour * HOUR, UTC).strftime("%Y%m%d%H")


def field_prefix(tenant: str | None, agent: str, model: str) -> str:
    """``tenant|agent|model|``: the start of the fields of one tenant, agent and model."""
    return SEP.join((tenant or "", agent, model, ""))


@dataclass(frozen=True)
class Write:
    """What ``lua/commit.lua`` needs to count one step's usage: its two keys and arguments."""

    keys: tuple[str, str]
    field: str
    expire_at: int


def step_write(
    run_id: str, tenant: str | None, agent: str, model: str, counted: bool, now: float
) -> Write:
    """The usage write of a step of ``run_id`` committed at ``now`` (in the run's bucket).

    ``counted`` False: no call to count.

    The bucket expires ``WALRUS_USAGE_RETENTION_DAYS`` after the end of its hour.
    """
    hour_start = int(now) // HOUR * HOUR
    expire_at = hour_start + HOUR + get_settings().usage_retention_days * DAY
    field = field_prefix(tenant, agent, model) if counted else ""
    bucket = keys.run_bucket(run_id)
    return Write(
        (keys.usage_hour(hour_of(now), bucket), keys.usage_totals(bucket)), field, expire_at
    )


@dataclass
class Counts:
    """Tokens, calls and runs of one cell (or group), and its cost."""

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    runs: int = 0
    cost_usd: float = 0.0
    priced: bool = True
    """False once a model without a price added tokens: the cost is then unknown."""

    def add(self, other: Counts) -> None:
        """Add ``other``'s figures to these."""
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.calls += other.calls
        self.runs += other.runs
        self.cost_usd += other.cost_usd
        self.priced = self.priced and other.priced

    def row(self, **group: str | None) -> UsageRow:
        """The wire row of these figures for ``group``."""
        cost = round(self.cost_usd, 6) if self.priced else None
        return UsageRow(
            **group, input_tokens=self.input_tokens, output_tokens=self.output_tokens,
            calls=self.calls, runs=self.runs, cost_usd=cost,
        )  # fmt: skip


Cell = tuple[str, str, str]
"""``(tenant, agent, model)``; the tenant ``""`` for the default one."""


def parse(fields: dict[str, str]) -> dict[Cell, Counts]:
    """A usage hash (a bucket or the totals) as ``(tenant, agent, model) -> Counts``.

    A field this version does not write is skipped rather than failing a read.
    """
    out: dict[Cell, Counts] = {}
    for name, value in fields.items():
        tenant, _, rest = name.partition(SEP)
        agent, _, rest = rest.partition(SEP)
        model, _, kind = rest.rpartition(SEP)
        if not model or kind not in KINDS:
            continue
        try:
            n = int(value)
        except ValueError:
            continue
        c = out.setdefault((tenant, agent, model), Counts())
        if kind == "in":
            c.input_tokens += n
        elif kind == "out":
            c.output_tokens += n
        elif kind == "calls":
            c.calls += n
        else:
            c.runs += n
    return out


def read_totals(r: redis.Redis) -> dict[Cell, Counts]:
    """The usage counted since the totals hash was created (what ``/metrics`` exports)."""
    return parse(indexes.read_summed(r, (keys.usage_totals(b) for b in range(keys.BUCKETS))))


def cost(config: Config | None, model: str, c: Counts) -> Counts:
    """``c`` with its cost from ``model``'s price (unknown when it has tokens and no price)."""
    price = config.price(model) if config else None
    if price is None:
        c.priced = not (c.input_tokens or c.output_tokens)
        c.cost_usd = 0.0
    else:
        c.cost_usd = (
            c.input_tokens * price.input_per_mtok + c.output_tokens * price.output_per_mtok
        ) / 1_000_000
    return c


# --- reading a range --------------------------------------------------------------------------


def parse_time(value: float | str, name: str, now: float | None = None) -> float:
    """Unix seconds of ``value``: epoch seconds, ISO 8601 (UTC unless it says), or a duration.

    A duration (``7d``, ``12h``, ``30m``, ``2w``) is that long before now. InvalidInput names
    the argument ``name`` when ``value`` is none of these.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        ago = duration_seconds(text, "smhdw")
        try:
            if ago is not None:
                seconds = (time.time() if now is None else now) - ago
            elif re.fullmatch(r"-?\d+(?:\.\d+)?", text):
                seconds = float(text)
            else:
                stamp = datetime.fromisoformat(text)
                if stamp.tzinfo is None:
                    stamp = stamp.replace(tzinfo=UTC)
                seconds = stamp.timestamp()
        except ValueError:
            seconds = math.nan
    if not math.isfinite(seconds):
        raise InvalidInput(
            f"{name}: {value!r} is not a time: give unix seconds, ISO 8601 "
            "(2025-06-01 or 2025-06-01T12:00:00Z) or a duration before now (7d, 12h)"
        )
    return seconds


def parse_groups(group_by: str | Sequence[str] | None) -> list[UsageGroup]:
    """The dimensions of ``group_by`` (comma-separated or a list), in order, each once."""
    names = [group_by] if isinstance(group_by, str) else list(group_by or ())
    out: list[UsageGroup] = []
    for name in (p.strip() for n in names for p in n.split(",")):
        if not name:
            continue
        if name not in GROUPS:
            raise InvalidInput(f"group_by: unknown dimension {name!r} (known: {', '.join(GROUPS)})")
        if name not in out:
            out.append(name)
    if all(p in out for p in PERIODS):
        raise InvalidInput("group_by: choose one period, hour or day, not both")
    return out


def time_range(
    start: float | str | None, end: float | str | None, now: float | None = None
) -> tuple[int, int]:
    """The whole hours ``[from, to)`` that cover the asked range (default: the last 7 days).

    InvalidInput when ``from`` is not before ``to``, or the range is longer than
    ``MAX_RANGE_DAYS``.
    """
    now = time.time() if now is None else now
    to = parse_time(end, "to", now) if end is not None else now
    since = parse_time(start, "from", now) if start is not None else to - DEFAULT_RANGE_DAYS * DAY
    if since >= to:
        raise InvalidInput(f"from ({_iso(since)}) must be before to ({_iso(to)})")
    if to - since > MAX_RANGE_DAYS * DAY:
        days = (to - since) / DAY
        raise InvalidInput(
            f"the range from {_iso(since)} to {_iso(to)} is {days:.1f} days; one answer "
            f"covers at most {MAX_RANGE_DAYS} days (ask for the rest in another)"
        )
    first = int(since) // HOUR * HOUR
    last = -(-math.ceil(to) // HOUR) * HOUR
    return first, last


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def period_of(hour_start: int, group: str) -> str:
    """The ``period`` label of an hour: ``2025-06-01T13:00:00Z`` by hour, ``2025-06-01`` by day."""
    stamp = datetime.fromtimestamp(hour_start, UTC)
    return stamp.strftime("%Y-%m-%d") if group == "day" else _iso(hour_start)


def read_hours(r: redis.Redis, first: int, last: int) -> list[tuple[int, dict[Cell, Counts]]]:
    """Every hourly bucket of ``[first, last)`` (hour starts), read in one pipeline."""
    hours = list(range(first, last, HOUR))
    pipe = r.pipeline(transaction=False)
    for h in hours:
        for b in range(keys.BUCKETS):
            pipe.hgetall(keys.usage_hour(hour_of(h), b))
    replies = pipe.execute()
    n = keys.BUCKETS
    out = []
    for i, h in enumerate(hours):
        fields = indexes.summed(replies[i * n : (i + 1) * n])
        if fields:
            out.append((h, parse(fields)))
    return out


def report(
    r: redis.Redis,
    config: Config | None,
    group_by: str | Sequence[str] | None = None,
    start: float | str | None = None,
    end: float | str | None = None,
    tenant: str | None = None,
    agent: str | None = None,
    model: str | None = None,
    every_tenant: bool = True,
    now: float | None = None,
) -> UsageReport:
    """Usage of ``[start, end)``, grouped; of ``tenant`` only unless ``every_tenant``.

    ``tenant`` None with ``every_tenant`` False is the default tenant. ``agent`` and ``model``
    filter too. Bad input is InvalidInput, checked before Redis is read.
    """
    groups = parse_groups(group_by)
    first, last = time_range(start, end, now)
    want_tenant = None if every_tenant else (tenant or "")
    by_group: dict[tuple[str | None, ...], Counts] = {}
    totals = Counts()
    unpriced: set[str] = set()
    for hour, cells in read_hours(r, first, last):
        for (t, a, m), c in cells.items():
            if (want_tenant is not None and t != want_tenant) or (agent and a != agent):
                continue
            if model and m != model:
                continue
            cost(config, m, c)
            if not c.priced:
                unpriced.add(m)
            names = {"tenant": t or DEFAULT_TENANT, "agent": a, "model": m}
            key = tuple(period_of(hour, g) if g in PERIODS else names[g] for g in groups)
            by_group.setdefault(key, Counts()).add(c)
            totals.add(c)
    rows = [
        c.row(**{("period" if g in PERIODS else g): v for g, v in zip(groups, key, strict=True)})
        for key, c in sorted(by_group.items(), key=lambda kv: tuple(map(str, kv[0])))
    ]
    answer = {
        "from": first, "to": last, "group_by": groups, "rows": rows, "totals": totals.row(),
        "unpriced_models": sorted(unpriced),
    }  # fmt: skip
    return UsageReport.model_validate(answer)


OTHER = "(other)"
"""The label of a tenant, agent or model the config does not name (a removed agent, an admin
token's ad-hoc tenant): summed into one series, so a label never grows without bound."""


def labels(config: Config | None) -> tuple[set[str], set[str], set[str]]:
    """The tenants, agents and models ``/metrics`` labels as themselves: the config's.

    The rest are ``OTHER``, so the series stay as many as the config makes.
    """
    if config is None:
        return set(), set(), set()
    tenants = {g.tenant for g in config.gateway.tokens if g.tenant}
    models = {m for a in config.agents.values() for m in (a.model, *a.fallback_models)}
    return tenants, set(config.agents), models | set(config.prices)


def metric_cells(totals: dict[Cell, Counts], config: Config | None) -> dict[Cell, Counts]:
    """``totals`` by metric label, each with its cost (``cost``).

    Tenants, agents and models the config does not name are folded into ``OTHER``; the
    default tenant is ``DEFAULT_TENANT``.
    """
    tenants, agents, models = labels(config)
    out: dict[Cell, Counts] = {}
    for (t, a, m), c in totals.items():
        cost(config, m, c)
        label = (
            DEFAULT_TENANT if not t else t if t in tenants else OTHER,
            a if a in agents else OTHER,
            m if m in models else OTHER,
        )
        out.setdefault(label, Counts()).add(c)
    return out
