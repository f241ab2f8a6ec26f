"""Cluster-wide limits of providers, models and tenants, enforced atomically in Redis.

Every LLM call is admitted by ``acquire`` under each limit that applies to it (its provider,
its ``provider/model``, its tenant), all or none, in one Lua script (``lua/limit_acquire.lua``):

- ``max_concurrency``: a semaphore of expiring slots, renewed while the call streams, so the
  slot of a worker that died comes back after ``hold`` seconds;
- ``requests_per_minute`` and ``tokens_per_minute``: GCRA (a token bucket kept as one
  timestamp per limit), the tokens estimated before the call and corrected after it.

A call that finds no capacity is not failed: the worker defers its step (re-queued with a
countdown, holding no pool slot) and tries again when ``acquire`` says, or as soon as a call
releases a slot it waits for (``release`` wakes the step that waited longest).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import redis
from pydantic import BaseModel

from walrus_tasks import ids, keys, scripts, tenancy, topology
from walrus_tasks import script_args as S
from walrus_tasks.config import Config
from walrus_tasks.lease import now_ms

CONCURRENCY_POLL = 0.25
"""Seconds a step waiting for a concurrency slot waits before it looks again (plus jitter),
while few steps wait."""
MAX_CONCURRENCY_POLL = 2.0
"""The longest such wait: with many steps waiting for few slots, each looks less often (the
polls would cost more than the calls). A slot a call releases does not wait for a poll: it
wakes the step that waited longest at once (``release``); the polls serve the slots that
expire (a dead worker's) and the waiters the wake-up missed."""


@dataclass(frozen=True)
class Limit:
    """One limit that applies to a call (0 = not limited in that dimension)."""

    name: str
    max_concurrency: int = 0
    requests_per_minute: int = 0
    tokens_per_minute: int = 0


def tenant_of(sender: str) -> str:
    """The tenant a sender's runs are counted under.

    The tenant of a tenant's conversation (``walrus_tasks.tenancy``), else the sender's prefix
    up to the first ``:`` (else the sender).
    """
    return tenancy.tenant_of(sender) or sender.split(":", 1)[0]


def tenant_limit_name(tenant: str) -> str:
    """The limit name of a tenant: ``tenant:<name>``."""
    return f"tenant:{tenant}"


def limits_for(config: Config, model: str, tenant: str = "") -> list[Limit]:
    """The limits a call of ``model`` (``provider/model`` or ``mock``) for ``tenant`` is under."""
    out: list[Limit] = []
    if model != "mock" and "/" in model:
        provider, name = model.split("/", 1)
        p = config.providers.get(provider)
        if p is not None:
            for limit_name, lim in ((provider, p), (model, p.models.get(name))):
                if lim is not None and lim.limited:
                    out.append(
                        Limit(
                            limit_name,
                            lim.max_concurrency or 0,
                            lim.requests_per_minute or 0,
                            lim.tokens_per_minute or 0,
                        )
                    )
    if tenant and (share := config.tenant(tenant).max_concurrency):
        out.append(Limit(tenant_limit_name(tenant), max_concurrency=share))
    return out


def acquire(
    r: redis.Redis, limits: list[Limit], holder: str, run_id: str, tokens: int, hold: float
) -> tuple[float, str] | None:
    """Take capacity for one call under every limit, or none.

    None when admitted (``holder`` holds a slot of each concurrency limit for ``hold`` seconds,
    until ``renew`` or ``release``); else ``(seconds to wait, the limit's name)``, the wait
    being a rate limit's exact one or ``CONCURRENCY_POLL`` for a full semaphore.
    """
    if not limits:
        return None
    wait_ms, name, waiting = scripts.call(
        r,
        S.LIMIT_ACQUIRE,
        [keys.LIMITS_SEEN],
        {
            "now_ms": now_ms(), "holder": holder, "hold_ms": int(hold * 1000), "run_id": run_id,
            "limits": [
                {"name": lim.name, "max_concurrency": lim.max_concurrency,
                 "requests_per_minute": lim.requests_per_minute,
                 "tokens_per_minute": lim.tokens_per_minute, "tokens": tokens}
                for lim in limits
            ],
        },
    )  # fmt: skip
    if int(wait_ms) == 0:
        return None
    if int(wait_ms) > 0:
        return int(wait_ms) / 1000, str(name)
    slots = next((lim.max_concurrency for lim in limits if lim.name == name), 1) or 1
    rounds = max(1.0, int(waiting) / (4 * slots))  # waiters per slot, a few per poll
    return min(CONCURRENCY_POLL * rounds, MAX_CONCURRENCY_POLL), str(name)


def renew(r: redis.Redis, limits: list[Limit], holder: str, hold: float) -> None:
    """Keep ``holder``'s slots ``hold`` seconds more (only slots it still holds)."""
    expiry = now_ms() + int(hold * 1000)
    pipe = r.pipeline(transaction=False)
    for lim in limits:
        if lim.max_concurrency:
            pipe.zadd(keys.limit(lim.name, "slots"), {holder: expiry}, xx=True)
    pipe.execute()


@dataclass(frozen=True)
class Woken:
    """A step waiting for a slot that a release gave one: send it now, as message ``task_id``."""

    agent: str
    sender: str
    run_id: str
    token: str
    step: int
    task_id: str


def release(
    r: redis.Redis, limits: list[Limit], holder: str, extra_tokens: int = 0
) -> Woken | None:
    """Free ``holder``'s slots; charge ``extra_tokens`` the estimate missed to the token limits.

    A slot freed wakes the step that waited longest for one (``lua/limit_release.lua``): the
    caller sends it at once (``Woken``), so a deferred step starts as soon as capacity frees,
    not when its countdown ends.
    """
    if not limits:
        return None
    task_id = ids.hex_id()
    on_cluster = topology.is_cluster(r)
    res = scripts.call(
        r,
        S.LIMIT_RELEASE,
        [keys.LIMITS_SEEN],
        {
            "now_ms": now_ms(), "holder": holder, "task_id": task_id,
            "extra_tokens": max(0, extra_tokens), "one_redis": topology.one_redis(r),
            "limits": [
                {"name": lim.name, "max_concurrency": lim.max_concurrency,
                 "tokens_per_minute": lim.tokens_per_minute}
                for lim in limits
            ],
        },
    )  # fmt: skip
    if on_cluster:
        res = _wake_next(r, [str(name) for name in res or []], task_id)
    if not res:
        return None
    agent, sender, run_id, token, step = res
    return Woken(agent, sender, run_id, token, int(step), task_id)


def _wake_next(r: redis.Redis, freed: list[str], task_id: str) -> list[Any] | None:
    """On a cluster: wake the step that waited longest for a slot of the ``freed`` limits.

    Two steps a try, the limits' slot then the run's: take the run off the waiting set, wake
    its step if it still waits (else the next run). A caller dying between them leaves the run's
    own countdown message, which sends the step when it comes.
    """
    while freed:
        taken = scripts.call(
            r, S.LIMIT_NEXT, [keys.LIMITS_SEEN], {"now_ms": now_ms(), "names": freed}
        )
        if not taken:
            return None
        run_id = str(taken[1])
        woken = scripts.call(
            r, S.LIMIT_WAKE, [keys.run(run_id)], {"run_id": run_id, "task_id": task_id}
        )
        if woken:
            return woken
    return None


class LimitUse(BaseModel):
    """One limit's configuration and current use (``walrus status``, ``/v1/stats``, metrics)."""

    name: str
    max_concurrency: int | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    in_flight: int
    requests_last_minute: int
    tokens_last_minute: int
    waiting: int


def configured(config: Config) -> dict[str, Limit]:
    """Every limit the config defines, by name (a ``[tenants."*"]`` one once per tenant seen)."""
    out: dict[str, Limit] = {}
    for provider, p in config.providers.items():
        for name, lim in ((provider, p), *((f"{provider}/{m}", x) for m, x in p.models.items())):
            if lim.limited:
                out[name] = Limit(
                    name,
                    lim.max_concurrency or 0,
                    lim.requests_per_minute or 0,
                    lim.tokens_per_minute or 0,
                )
    for tenant, t in config.tenants.items():
        if tenant != "*" and t.max_concurrency:
            out[tenant_limit_name(tenant)] = Limit(
                tenant_limit_name(tenant), max_concurrency=t.max_concurrency
            )
    return out


def usage(r: redis.Redis, config: Config) -> list[LimitUse]:
    """The use of every configured limit and of every limit seen, sorted by name."""
    limits = configured(config)
    seen: set[str] = r.smembers(keys.LIMITS_SEEN)  # type: ignore[assignment]
    for name in seen - limits.keys():
        # A tenant under [tenants."*"], or a limit a reload removed (its use still shows).
        share = config.tenant(name.removeprefix("tenant:")).max_concurrency
        limits[name] = Limit(name, max_concurrency=(share or 0) if "tenant:" in name else 0)
    now = now_ms()
    pipe = r.pipeline(transaction=False)
    names = sorted(limits)
    for name in names:
        pipe.zcount(keys.limit(name, "slots"), now, "+inf")
        pipe.zrangebyscore(keys.limit(name, "recent"), now - 60_000, "+inf")
        pipe.zcount(keys.limit(name, "waiting"), now, "+inf")
    rows = pipe.execute()
    out = []
    for i, name in enumerate(names):
        lim = limits[name]
        in_flight, recent, waiting = rows[3 * i : 3 * i + 3]
        out.append(
            LimitUse(
                name=name,
                max_concurrency=lim.max_concurrency or None,
                requests_per_minute=lim.requests_per_minute or None,
                tokens_per_minute=lim.tokens_per_minute or None,
                in_flight=int(in_flight),
                requests_last_minute=len(recent),
                tokens_last_minute=sum(int(m.rsplit("/", 1)[1]) for m in recent),
                waiting=int(waiting),
            )
        )
    return out


def jittered(seconds: float, spread: float = 0.2) -> float:
    """``seconds`` plus up to ``spread`` of it at random, so waiters do not come back together."""
    return seconds * (1 + spread * random.random())
