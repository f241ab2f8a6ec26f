"""Concurrent reads of one thing made once: every stream of a run reads its thread at one event.

A thousand clients following one Agent Protocol run each need the thread's messages at the
run's ``start``, each ``tools_complete`` and its ``end``. The hub hands them the event in the
same turn of the event loop, so read one by one they were a thousand ``LRANGE``s of the same
list at once, and past the asyncio client's pool (redis-py's default 100) they failed with "Too
many connections" (found by the bench's Agent Protocol fan-out at 300 clients). A read asked for
while the same read is in flight now waits for it, and all get its answer; once it is answered
it is forgotten, so a later read asks Redis again.

The key must name the moment as well as the thing (the thread's history *at an event*): two
reads of one key may share one answer, so the answer must serve both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class SharedReads(Generic[V]):
    """The reads in flight, by key (one per process, on the gateway's event loop)."""

    def __init__(self) -> None:
        self._flying: dict[Hashable, asyncio.Future[V]] = {}

    async def read(self, key: Hashable, fetch: Callable[[], Awaitable[V]]) -> V:
        """``fetch()``'s answer, shared with every caller of ``key`` while it is in flight."""
        flying = self._flying.get(key)
        if flying is None:
            flying = asyncio.ensure_future(fetch())
            self._flying[key] = flying
            flying.add_done_callback(lambda done: self._forget(key, done))
        # A caller cancelled (its client left) must not cancel the others' read.
        return await asyncio.shield(flying)

    def _forget(self, key: Hashable, done: asyncio.Future[V]) -> None:
        if self._flying.get(key) is done:
            del self._flying[key]
        if not done.cancelled():
            done.exception()  # retrieved: no "exception was never retrieved" if nobody waits

    def __len__(self) -> int:
        return len(self._flying)
