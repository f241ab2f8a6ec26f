"""The per-conversation lease: one run at a time, fenced by a monotonic token.

The lease belongs to the run, not the process: every task of the run carries the token it was
dispatched under, and every write checks it in Lua (see ``lua/lib/fence.lua``). A worker that
stops renewing loses the lease only when somebody else takes it over (the reaper, after the TTL).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from walrus_tasks import indexes, keys, scripts, timers
from walrus_tasks import script_args as S
from walrus_tasks.errors import Cancelled, LeaseLost
from walrus_tasks.settings import get_settings


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of every timestamp in Redis."""
    return int(time.time() * 1000)


def ttl_ms() -> int:
    """The lease TTL in milliseconds."""
    return int(get_settings().lease_ttl * 1000)


@dataclass(frozen=True)
class Fence:
    """What a task needs to write to a conversation: whose run, under which lease token."""

    agent: str
    sender: str
    run_id: str
    token: str

    @property
    def cid(self) -> str:
        """The conversation id."""
        return keys.cid(self.agent, self.sender)

    @property
    def lease_keys(self) -> list[str]:
        """``[lease, fence]``: the first two KEYS of every fenced script."""
        return [keys.conv(self.cid, "lease"), keys.conv(self.cid, "fence")]


def renew(
    r: redis.Redis,
    fence: Fence,
    claim_key: str = "",
    claim_id: str = "",
    ttl: float | None = None,
) -> bool:
    """Make the lease (and this task's claim) expire ``ttl`` seconds from now.

    ``ttl`` defaults to the lease TTL. Returns False once the lease is lost.
    """
    return scripts.call(
        r,
        S.RENEW,
        [*fence.lease_keys, claim_key or keys.run_part(fence.run_id, "claim")],
        {
            "token": fence.token,
            "ttl_ms": int(ttl * 1000) if ttl else ttl_ms(),
            "now_ms": now_ms(),
            "cid": fence.cid,
            "claim_id": claim_id,
        },
    )


def expired_conversations(r: redis.Redis, grace_ms: int = 0) -> list[str]:
    """Conversations whose lease expiry (as last renewed) is in the past."""
    return [c for c, _ in indexes.scored(r, "leases", "-inf", now_ms() - grace_ms)]


KEEPER_EXIT_WAIT = 5.0
"""Seconds a task's end waits for its keeper's poll in progress (one Redis call) to end."""


class LeaseKeeper:
    """Renews the lease and polls the run's cancel flag while a task works.

    Use as a context manager around the task's work; call ``check()`` at every safe point and
    ``wait(seconds)`` instead of ``time.sleep`` so a kill interrupts the pause. The polls run
    on the process's timer thread (``walrus_tasks.timers``), every ``cancel_poll`` seconds; once
    the context has exited, none runs any more (the exit waits for one in progress).
    """

    def __init__(
        self,
        r: redis.Redis,
        fence: Fence,
        claim_key: str = "",
        claim_id: str = "",
        *,
        renewed_at: float | None = None,
        cancelled: bool = False,
    ) -> None:
        self._r = r
        self.fence = fence
        self._claim_key = claim_key
        self._claim_id = claim_id
        self.cancelled = threading.Event()
        self.lost = threading.Event()
        self.expires_at = 0.0
        """When (``time.monotonic()``) the lease expires unless renewed again: a bash command's
        supervisor kills the command by then (see ``worker.tools.supervise``)."""
        self.on_renew: list[Callable[[], None]] = []
        """Called after each renewal, from the keeper's thread: what else the task keeps alive
        (a limit's concurrency slot)."""
        self._renewed_at = renewed_at
        """When (``time.monotonic()``, taken before the call) the script that began the task
        renewed the lease to its TTL and read the cancel flag, ``cancelled``: then entering
        asks Redis nothing."""
        if cancelled:
            self.cancelled.set()
        self._lock = threading.Lock()
        self._stopped = False
        self._tick_handle: timers.Handle | None = None
        self._last_renew = 0.0

    def __enter__(self) -> LeaseKeeper:
        if self._renewed_at is not None:
            self.expires_at = self._renewed_at + get_settings().lease_ttl
        else:
            self._poll_cancel()
            # Back from the dispatch grace to the lease TTL: from now on a dead worker is
            # noticed within one TTL.
            self._renew()
        self._last_renew = time.monotonic()
        with self._lock:
            self._schedule()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._stopped = True  # a poll in progress schedules no next one
            handle = self._tick_handle
        timers.TIMERS.cancel(handle, wait=KEEPER_EXIT_WAIT)

    def _schedule(self) -> None:
        self._tick_handle = timers.TIMERS.call_later(get_settings().cancel_poll, self._tick)

    def _poll_cancel(self) -> None:
        if self._r.exists(keys.run_part(self.fence.run_id, "cancel")):
            self.cancelled.set()

    def _tick(self) -> None:
        """One poll, on the timer thread: the cancel flag, then the lease if due.

        The lease is renewed once a third of its TTL has passed; the next poll is scheduled
        unless the lease was lost or the task ended.
        """
        try:
            self._poll_cancel()
            if time.monotonic() - self._last_renew >= get_settings().lease_ttl / 3:
                self._last_renew = time.monotonic()
                if not self._renew():
                    return
        except redis.RedisError:
            pass  # a blip: the next poll retries; the TTL leaves room for several
        with self._lock:
            if not self._stopped:
                self._schedule()

    def _renew(self) -> bool:
        # Taken before the call: Redis sets the expiry after it, so this is never later.
        started = time.monotonic()
        if not renew(self._r, self.fence, self._claim_key, self._claim_id):
            self.lost.set()
            return False
        self.expires_at = started + get_settings().lease_ttl
        for hook in list(self.on_renew):
            hook()
        return True

    def check(self) -> None:
        """Raise LeaseLost or Cancelled if either happened since the task began."""
        if self.lost.is_set():
            raise LeaseLost(f"run {self.fence.run_id}: conversation lease taken over")
        if self.cancelled.is_set():
            raise Cancelled(f"run {self.fence.run_id} cancelled")

    def wait(self, seconds: float) -> None:
        """Pause up to ``seconds``; return early (then raise) on cancel or a lost lease."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.cancelled.wait(min(left, 0.05)) or self.lost.is_set():
                break
        self.check()
