"""What the stream reader hands on: entries, the keys it reads, each subscriber's buffer.

:class:`gateway.stream_reader.StreamReader` parses each entry once (:class:`Entry`, its SSE
frame encoded once for every subscriber), keeps a :class:`StreamKey` per stream it reads (its
cursor and subscribers) and pushes each read's entries into every subscriber's
:class:`Subscriber` buffer, which cuts a subscriber that falls more than its limit behind
(:class:`SlowConsumer`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from walrus_tasks.run_stream import sse_frame


class SlowConsumer(Exception):
    """The subscriber fell more than its buffer behind; it must resume from its last id."""


def seq(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a comparable pair."""
    ms, _, n = entry_id.partition("-")
    return int(ms), int(n or 0)


class Entry:
    """One stream entry, parsed once and shared by every subscriber (its SSE frame too)."""

    __slots__ = ("_frame", "ends", "event", "id", "seq")

    def __init__(self, entry_id: str, event: dict[str, Any], ends: bool) -> None:
        self.id, self.seq, self.event = entry_id, seq(entry_id), event
        self.ends = ends  # a run's ``end`` (not one seen in the feed)
        self._frame: str | None = None

    @property
    def frame(self) -> str:
        """The SSE frame of this entry (encoded once)."""
        if self._frame is None:
            self._frame = sse_frame(self.id, self.event)
        return self._frame


class StreamKey:
    """One stream the hub reads: its cursor and subscribers."""

    __slots__ = ("cursor", "fresh", "name", "run_id", "subs", "touched")

    def __init__(self, name: str, cursor: str, run_id: str | None) -> None:
        self.name, self.cursor, self.run_id = name, cursor, run_id
        self.subs: set[Subscriber] = set()
        self.fresh = True  # read something since the last existence check
        self.touched = time.monotonic()  # added, or last had entries


class Subscriber:
    """One subscriber's bounded buffer of a key's entries.

    A list and a read index, and a bare future to wake the reader: a ``deque`` and an
    ``asyncio.Event`` (itself a ``deque`` of waiters) cost about 1.5 KB more per open stream.
    """

    __slots__ = ("failure", "gone", "head", "joined", "key", "limit", "queue", "waiter")

    def __init__(self, key: StreamKey, limit: int) -> None:
        self.key, self.limit = key, limit
        self.queue: list[Entry] = []
        self.head = 0  # queue[head:] is not read yet
        self.waiter: asyncio.Future[None] | None = None
        self.failure: BaseException | None = None
        self.gone = False
        self.joined = time.monotonic()

    def push(self, batch: list[Entry]) -> bool:
        """Buffer ``batch``; False (and cut) if the subscriber is behind and that overflows.

        A batch into an empty buffer always fits: one read may bring more than the limit.
        """
        behind = len(self.queue) - self.head
        if behind and behind + len(batch) > self.limit:
            self.queue, self.head = [], 0
            self.fail(SlowConsumer(f"more than {self.limit} events behind"))
            return False
        if self.head and self.head * 2 >= len(self.queue):
            del self.queue[: self.head]  # drop what was read, now and then
            self.head = 0
        self.queue.extend(batch)
        self.wake()
        return True

    def pop_all(self) -> list[Entry]:
        """Every buffered entry (none: an empty list)."""
        rest = self.queue[self.head :] if self.head else self.queue
        self.queue, self.head = [], 0
        return rest

    def pop(self) -> Entry | None:
        """The next buffered entry, if any."""
        if self.head == len(self.queue):
            return None
        entry = self.queue[self.head]
        self.head += 1
        if self.head == len(self.queue):
            self.queue, self.head = [], 0
        return entry

    def fail(self, error: BaseException) -> None:
        """End the subscriber with ``error``: its reader raises it."""
        self.failure = error
        self.wake()

    def wake(self) -> None:
        """Wake the reader waiting in :meth:`StreamReader._next`, if it waits."""
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
