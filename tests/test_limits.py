"""Cluster-wide limits in Redis: the semaphore, the GCRA rates, all-or-none, what usage shows."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.conftest import drains_off
from walrus_tasks import keys, limits
from walrus_tasks.config import Config, ProviderConfig, TenantConfig
from walrus_tasks.limits import Limit, acquire, release


def test_a_full_semaphore_defers_and_a_released_slot_admits(r: redis.Redis) -> None:
    cap = [Limit("p", max_concurrency=2)]
    assert acquire(r, cap, "h1", "run1", 10, hold=30) is None
    assert acquire(r, cap, "h2", "run2", 10, hold=30) is None
    assert acquire(r, cap, "h3", "run3", 10, hold=30) == (limits.CONCURRENCY_POLL, "p")
    assert r.zscore(keys.limit("p", "waiting"), "run3"), "the deferred step counts as waiting"
    release(r, cap, "h1")
    assert acquire(r, cap, "h3", "run3", 10, hold=30) is None
    assert r.zscore(keys.limit("p", "waiting"), "run3") is None


def test_a_dead_holders_slot_comes_back_when_it_expires(r: redis.Redis) -> None:
    cap = [Limit("p", max_concurrency=1)]
    assert acquire(r, cap, "dead", "run1", 10, hold=0.2) is None
    assert acquire(r, cap, "h2", "run2", 10, hold=30) is not None
    r.zadd(keys.limit("p", "slots"), {"dead": 0})  # its expiry passed, never renewed
    assert acquire(r, cap, "h2", "run2", 10, hold=30) is None


def test_a_call_takes_every_limit_or_none(r: redis.Redis) -> None:
    both = [Limit("p", max_concurrency=5), Limit("p/m", max_concurrency=1)]
    assert acquire(r, both, "h1", "run1", 10, hold=30) is None
    assert acquire(r, both, "h2", "run2", 10, hold=30) == (limits.CONCURRENCY_POLL, "p/m")
    assert r.zcard(keys.limit("p", "slots")) == 1, "the provider slot was not taken"


def test_requests_per_minute_spaces_calls_evenly(r: redis.Redis) -> None:
    rate = [Limit("p", requests_per_minute=60)]  # one a second, a burst of one
    assert acquire(r, rate, "h1", "run1", 0, hold=30) is None
    wait = acquire(r, rate, "h2", "run2", 0, hold=30)
    assert wait is not None and 0.9 < wait[0] <= 1.0


def test_tokens_per_minute_charges_the_estimate_then_the_rest(r: redis.Redis) -> None:
    rate = [Limit("p", tokens_per_minute=600)]  # ten tokens a second, a minute's worth at once
    assert acquire(r, rate, "h1", "run1", 590, hold=30) is None
    assert acquire(r, rate, "h2", "run2", 10, hold=30) is None
    wait = acquire(r, rate, "h3", "run3", 50, hold=30)
    assert wait is not None and 4.5 < wait[0] <= 5.0
    release(r, rate, "h1", extra_tokens=100)  # the call used 100 more than estimated
    wait = acquire(r, rate, "h3", "run3", 50, hold=30)
    assert wait is not None and 14.5 < wait[0] <= 15.0


def test_limits_for_a_call_come_from_provider_model_and_tenant(tmp_path: Path) -> None:
    provider = ProviderConfig(
        kind="openai", max_concurrency=4, models={"m1": {"requests_per_minute": 30}}
    )
    config = Config(
        home=tmp_path,
        providers={"p": provider},
        tenants={"acme": TenantConfig(max_concurrency=2), "*": TenantConfig(max_concurrency=1)},
    )
    assert limits.limits_for(config, "p/m1", "acme") == [
        Limit("p", max_concurrency=4),
        Limit("p/m1", requests_per_minute=30),
        Limit("tenant:acme", max_concurrency=2),
    ]
    assert limits.limits_for(config, "p/m2", "") == [Limit("p", max_concurrency=4)]
    assert limits.limits_for(config, "mock", "other") == [Limit("tenant:other", max_concurrency=1)]


@pytest.mark.parametrize("tenant", ["acme", "other"])
def test_usage_shows_each_limit_in_flight_recent_and_waiting(
    r: redis.Redis, tmp_path: Path, tenant: str
) -> None:
    provider = ProviderConfig(kind="openai", max_concurrency=1, requests_per_minute=600)
    config = Config(
        home=tmp_path, providers={"p": provider}, tenants={"*": TenantConfig(max_concurrency=3)}
    )
    applied = limits.limits_for(config, "p/m", tenant)
    assert acquire(r, applied, "h1", "run1", 40, hold=30) is None
    assert acquire(r, applied, "h2", "run2", 40, hold=30) is not None
    uses = {u.name: u for u in limits.usage(r, config)}
    assert uses["p"].in_flight == 1 and uses["p"].max_concurrency == 1
    assert uses["p"].requests_last_minute == 1 and uses["p"].tokens_last_minute == 40
    assert uses["p"].waiting == 1
    assert uses[f"tenant:{tenant}"].in_flight == 1
    assert uses[f"tenant:{tenant}"].max_concurrency == 3


def test_a_released_slot_wakes_the_deferred_step_whose_countdown_message_then_goes_stale(
    r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from walrus_tasks import runs, submit
    from walrus_tasks.lease import Fence

    drains_off(monkeypatch)
    submit.submit(r, "echo", "waiter", "hello")
    started = runs.acquire(r, "echo", "waiter")
    assert started is not None and started.run_id is not None
    fence = Fence("echo", "waiter", started.run_id, started.token)
    cap = [Limit("p", max_concurrency=1)]
    assert acquire(r, cap, "h1", "other-run", 10, hold=30) is None
    assert runs.begin(r, fence, 0, "llm", "claim-1") == "ok"
    assert acquire(r, cap, "h2", fence.run_id, 10, hold=30) is not None, "full: the step waits"
    assert runs.defer(r, fence, 0, "claim-1", 5.0, "countdown-message") == "ok"

    woken = release(r, cap, "h1")
    assert woken is not None
    assert (woken.agent, woken.sender, woken.run_id, woken.token, woken.step) == (
        "echo", "waiter", fence.run_id, fence.token, 0
    )  # fmt: skip
    assert release(r, cap, "h1") is None, "one slot freed, one step woken"
    assert runs.begin(r, fence, 0, "llm", "claim-2", task_id="countdown-message") == "stale"
    assert runs.begin(r, fence, 0, "llm", "claim-3", task_id=woken.task_id) == "ok"


def test_a_release_wakes_no_step_that_is_executing(r: redis.Redis) -> None:
    cap = [Limit("p", max_concurrency=1)]
    run2 = keys.run_id_in("echo:s", "0" * 32)  # a run of echo:s, in its slot on a cluster
    assert acquire(r, cap, "h1", "run1", 10, hold=30) is None
    assert acquire(r, cap, "h2", run2, 10, hold=30) is not None
    r.hset(keys.run(run2), mapping={"status": "running", "phase": "llm", "step": 0,
                                    "agent": "echo", "sender": "s"})  # fmt: skip
    r.set(keys.conv("echo:s", "lease"), "7")
    r.set(keys.run_part(run2, "claim"), "a delivery polling right now")
    assert release(r, cap, "h1") is None
