"""A bash command dies with its run's lease: a call never runs in two places at once.

Real processes and a real lease in the test Redis, with a 2 s lease TTL: the "worker" is this
test process (lease lost) or a child process that the test freezes with SIGSTOP.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.cluster import wait_for
from tests.conftest import drains_off
from tests.test_os_tools import gone, marker, running
from walrus_tasks import keys
from walrus_tasks import submit as submit_module
from walrus_tasks.config import AgentConfig, Config
from walrus_tasks.errors import LeaseLost
from walrus_tasks.lease import Fence, LeaseKeeper, now_ms
from walrus_tasks.runs import acquire, takeover
from walrus_tasks.settings import get_settings
from worker.tools import TOOLS, ToolContext

TTL = 2.0


@pytest.fixture
def short_lease(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("WALRUS_LEASE_TTL", str(TTL))
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def hold_lease(r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> Fence:
    """A run of a conversation of ``coder`` holding its lease, as a drain would."""
    drains_off(monkeypatch)
    sender = uuid.uuid4().hex[:8]
    submit_module.submit(r, "coder", sender, "hello")
    acquired = acquire(r, "coder", sender)
    assert acquired is not None and acquired.token and acquired.run_id
    return Fence("coder", sender, acquired.run_id, acquired.token)


def take_over(r: redis.Redis, fence: Fence) -> None:
    """What the reaper does once the lease expired: a new token, the fence moves on."""
    r.delete(keys.conv(fence.cid, "lease"))
    assert takeover(r, fence.cid) is not None


def keeper_context(r: redis.Redis, keeper: LeaseKeeper, cwd: Path) -> ToolContext:
    """The context ``worker.runtime`` builds for a tool call under ``keeper``."""
    agent = AgentConfig(name="coder", tools=["bash"], workdir=str(cwd))
    return ToolContext(
        agent=agent,
        config=Config(home=cwd.parent / f"{cwd.name}.home", agents={"coder": agent}),
        sender=keeper.fence.sender,
        run_id=keeper.fence.run_id,
        call_id="call-1",
        redis=r,
        cwd=cwd,
        pause=keeper.wait,
        cancelled=lambda: keeper.cancelled.is_set() or keeper.lost.is_set(),
        lost=keeper.lost.is_set,
        lease_expires=lambda: keeper.expires_at,
    )


def test_a_lost_lease_kills_the_running_command_within_a_renewal(
    short_lease: None, r: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fence = hold_lease(r, monkeypatch)
    mark = marker()
    outcome: list[BaseException] = []

    def call() -> None:
        with LeaseKeeper(r, fence) as keeper:
            try:
                TOOLS["bash"].run({"command": f"sleep {mark}"}, keeper_context(r, keeper, tmp_path))
            except BaseException as e:
                outcome.append(e)

    thread = threading.Thread(target=call)
    thread.start()
    try:
        wait_for(lambda: running(mark), 10, what="the command to start")
        take_over(r, fence)
        moved = time.monotonic()
        wait_for(lambda: gone(mark), TTL, what="the command to be killed")
        killed_after = time.monotonic() - moved
    finally:
        thread.join(10)
    assert killed_after < TTL / 3 + 0.5, f"killed {killed_after:.2f}s after the fence moved"
    assert len(outcome) == 1 and isinstance(outcome[0], LeaseLost), outcome


WORKER = textwrap.dedent("""
    import sys
    from pathlib import Path
    import redis
    from tests.test_tool_lease import keeper_context
    from walrus_tasks.lease import Fence, LeaseKeeper
    from worker.tools import TOOLS

    url, agent, sender, run_id, token, cwd = sys.argv[1:]
    command = sys.stdin.readline()  # not in argv: the test finds the command's processes by it
    r = redis.Redis.from_url(url, decode_responses=True)
    with LeaseKeeper(r, Fence(agent, sender, run_id, token)) as keeper:
        try:
            out = TOOLS["bash"].run({"command": command}, keeper_context(r, keeper, Path(cwd)))
        except Exception as e:
            out = type(e).__name__
    print(out, flush=True)
""")


@pytest.mark.one_redis  # its worker is pointed at the `r` fixture's database by URL
def test_a_frozen_worker_s_command_is_killed_before_its_lease_can_be_taken_over(
    short_lease: None, r: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fence = hold_lease(r, monkeypatch)
    mark = marker()
    url = r.connection_pool.connection_kwargs
    redis_url = f"redis://{url['host']}:{url['port']}/{url['db']}"
    env = {**os.environ, "WALRUS_LEASE_TTL": str(TTL)}
    args = [redis_url, fence.agent, fence.sender, fence.run_id, fence.token, str(tmp_path)]
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, *args],
        env=env,
        stdin=subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdin is not None
    worker.stdin.write(f"sleep {mark}\n")
    worker.stdin.close()
    try:
        wait_for(lambda: running(mark), 20, what="the command to start")
        first = r.zscore(keys.conv_index("leases", fence.cid), fence.cid)
        # A renewal (heartbeat) while the command runs: the lease outlives its first TTL.
        wait_for(
            lambda: r.zscore(keys.conv_index("leases", fence.cid), fence.cid) != first,
            TTL,
            what="a renewal",
        )
        worker.send_signal(signal.SIGSTOP)  # frozen: no renewal, no heartbeat
        frozen = time.monotonic()
        wait_for(lambda: gone(mark), TTL + 1, interval=0.02, what="the command to be killed")
        killed_at, killed_after = now_ms(), time.monotonic() - frozen
        expiry = r.zscore(keys.conv_index("leases", fence.cid), fence.cid)
        assert expiry is not None and killed_at <= expiry + 50, (
            f"killed {killed_at - expiry:.0f} ms after the lease expired: a takeover could "
            "have run the call again meanwhile"
        )
        assert killed_after <= TTL + 0.2
        take_over(r, fence)  # the reaper's sweep, after the expiry
        worker.send_signal(signal.SIGCONT)
        assert worker.stdout is not None
        out = worker.stdout.read()
        worker.wait(20)
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.kill()
        worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
    assert out.strip() == "LeaseLost", "back from the freeze, the worker does not report a result"
    assert gone(mark)


def test_the_keeper_renews_while_its_task_works_and_never_after(
    short_lease: None, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    fence = hold_lease(r, monkeypatch)

    def expiry() -> float:
        return float(r.zscore(keys.conv_index("leases", fence.cid), fence.cid) or 0)

    with LeaseKeeper(r, fence) as keeper:
        entered = expiry()
        wait_for(lambda: expiry() > entered, TTL, 0.05, "a renewal within a third of the TTL")
        r.set(keys.run_part(fence.run_id, "cancel"), "1")
        wait_for(keeper.cancelled.is_set, 2, 0.02, "the cancel flag to be seen")
    left = expiry()
    time.sleep(TTL / 3 * 2)  # two renewal periods: a keeper still polling would renew
    assert expiry() == left, "renewed after the task ended"
