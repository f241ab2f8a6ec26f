"""The gateway's reader of every open run stream and of the live feed.

Every stream a gateway process relays is read through its one :class:`Hub`, never by a route
itself. The hub has a :class:`gateway.stream_reader.StreamReader` per hash-tag bucket
(docs/design.md, "Keys and slots"): blocking ``XREAD``s over the keys of the bucket with
subscribers, on at most three connections whatever the number of streams, so
``3 * keys.BUCKETS`` at most in all; a run's stream is read by its bucket's reader. An
``XREAD`` is sent again whenever a key is added or an entry comes, over every key it reads: a
reader per bucket makes that a sixteenth of the keys (docs/benchmarks.md, issue 25, sixteenth
round), and a reader's hot read, apart from its cold one, makes it the bucket's busy keys only
(``gateway.stream_reader``; seventeenth round). On Redis Cluster, where an ``XREAD`` reads keys
of one slot only, each reader's connections go to the master that serves its bucket
(``redis_url.slot_client``: looked up again on every reconnect, so a reader follows a
failover). The live feed is one stream a bucket: :meth:`Hub.feed` merges them, its cursor
holding every bucket's position (``walrus_tasks.feed``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from gateway.relay import Item, Relays
from gateway.stream_reader import ShuttingDown, StreamReader
from gateway.subscription import Entry, SlowConsumer
from walrus_tasks import keys
from walrus_tasks.feed import format_cursor, parse_cursor
from walrus_tasks.redis_url import async_client, is_cluster, parse_cluster, slot_client
from walrus_tasks.settings import Settings

__all__ = ["Entry", "FeedEntry", "Hub", "Item", "ShuttingDown", "SlowConsumer"]


class FeedEntry(Entry):
    """An entry of the merged live feed: its id is the feed cursor just past it."""

    __slots__ = ()

    def __init__(self, cursor: str, event: dict[str, Any]) -> None:
        self.id, self.seq, self.event, self.ends = cursor, (0, 0), event, False
        self._frame = None


HEAD = 64
"""Entries of a run's stream a join reads with its record (``Hub.run_items``' ``head``): all
of a short run's, so a join of one that has ended needs no other read of its stream."""
Head = list[tuple[str, dict[str, str]]]
"""A stream's first entries as ``XRANGE`` answers them: ``(entry id, fields)``."""


class Hub:
    """The gateway's stream readers, one a bucket."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.relays = Relays()
        """The runs' streams translated for the faces, once each (``gateway.relay``)."""
        self.feeds = 0
        """Merged live feeds open: each ends after its pumps (:meth:`feed`), so it counts
        as a stream of its own until its error is on its way (:meth:`streams_ended`)."""
        address = parse_cluster(settings.redis_url) if is_cluster(settings.redis_url) else None
        if address is None:
            self.slots = None
            self.readers = [StreamReader(settings) for _ in range(keys.BUCKETS)]
            return
        # The cluster's slot map, asked where each bucket's master is as a reader connects.
        self.slots = async_client(settings.redis_url, decode_responses=True)
        self.readers = [
            StreamReader(settings, slot_client(self.slots, address, keys.feed(b)))
            for b in range(keys.BUCKETS)
        ]

    def reader(self, key: str) -> StreamReader:
        """The reader of ``key`` (a run's events or a bucket's feed)."""
        return self.readers[keys.key_bucket(key)]

    def start(self) -> None:
        """Start every reader (the app's lifespan starts its hub)."""
        for reader in self.readers:
            reader.start()

    def end_streams(self, reason: str) -> None:
        """End every open stream, and each one opened from now on (``StreamReader``'s)."""
        for reader in self.readers:
            reader.end_streams(reason)

    async def streams_ended(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every subscriber to leave; whether they all did."""
        deadline = time.monotonic() + timeout
        ended = await asyncio.gather(*(r.streams_ended(timeout) for r in self.readers))
        while self._outside() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return all(ended) and not self._outside()

    def _outside(self) -> int:
        """Streams still open past their readers' subscribers: merged feeds, relay followers."""
        return self.feeds + self.relays.followers

    async def close(self) -> None:
        """Stop every reader and close its connections."""
        await asyncio.gather(*(r.close() for r in self.readers))
        if self.slots is not None:
            await self.slots.aclose()

    async def run_exists(self, run_id: str) -> bool:
        """Whether the run's record exists (asked by its reader, batched with others)."""
        return await self.reader(keys.run(run_id)).run_exists(run_id)

    def entries(
        self, key: str, after: str, run_id: str | None = None
    ) -> AsyncIterator[Entry | None]:
        """Entries of ``key`` after ``after`` (``StreamReader.entries``, of its reader)."""
        return self.reader(key).entries(key, after, run_id)

    def bursts(
        self, key: str, after: str, run_id: str | None = None
    ) -> AsyncIterator[list[Entry] | None]:
        """:meth:`entries` a burst at a time (``StreamReader.bursts``, of its reader)."""
        return self.reader(key).bursts(key, after, run_id)

    def run_items(
        self,
        run_id: str,
        after: str,
        *,
        resume: bool = True,
        ended: bool = False,
        head: Head | None = None,
    ) -> AsyncIterator[Item]:
        """The run's ``(entry id, event)`` after ``after`` until ``end``; ``(id, None)`` idle.

        Stops if the run no longer exists. With ``resume`` a subscriber cut for being slow
        catches up from its last id by itself (for consumers without ``Last-Event-ID``).
        ``ended``: the caller read the run's record ended, so its stream is read to the end
        (``StreamReader.tail``) and subscribed to only if that holds no ``end``. ``head``: the
        stream's first entries (``XRANGE`` from the start, at most ``HEAD``), read by the caller
        with the record: from the start (``after`` ``0-0``), an ended run's are not read again.
        """
        key = keys.run_part(run_id, "events")
        if ended:
            return self._items(lambda at: self._ended(key, at, run_id, head), after, None, resume)
        return self._items(lambda at: self.entries(key, at, run_id), after, None, resume)

    async def _ended(
        self, key: str, after: str, run_id: str, head: Head | None = None
    ) -> AsyncIterator[Entry | None]:
        """An ended run's entries read to its ``end``; on from a subscription if none is there."""
        more = True  # past what ``head`` holds (all of it without one)
        if head is not None and after == "0-0":
            for entry_id, fields in head:
                entry = StreamReader.run_entry(entry_id, fields)
                yield entry
                if entry.ends:
                    return
                after = entry.id
            more = len(head) >= HEAD
        if more:
            async for entry in self.reader(key).tail(key, after):
                yield entry
                if entry.ends:
                    return
                after = entry.id
        async for item in self.entries(key, after, run_id):
            yield item

    def feed_items(
        self, after: str, agent: str | None, *, resume: bool = True
    ) -> AsyncIterator[Item]:
        """The feed's ``(cursor, event)`` after cursor ``after``, forever (``agent`` filters).

        ``(cursor, None)`` while idle. With ``resume`` a subscriber cut for being slow catches
        up from its last cursor by itself.
        """
        return self._items(self.feed, after, agent, resume)

    async def _items(
        self,
        read: Callable[[str], AsyncIterator[Entry | None]],
        after: str,
        agent: str | None,
        resume: bool,
    ) -> AsyncIterator[Item]:
        """``read(after)`` as items, read again from the last id after a :class:`SlowConsumer`."""
        while True:
            try:
                async for entry in read(after):
                    if entry is None:
                        yield after, None
                        continue
                    after = entry.id
                    if agent is None or entry.event.get("agent") == agent:
                        yield entry.id, entry.event
                return
            except SlowConsumer:
                if not resume:
                    raise

    async def feed(self, after: str) -> AsyncIterator[Entry | None]:
        """The live feed after cursor ``after``: every bucket's stream, merged as it comes.

        Each entry's id is the cursor just past it (``walrus_tasks.feed``); None once per idle
        ``sse_keepalive``. Raises what a bucket's reading raises (:meth:`entries`).
        """
        cursor = parse_cursor(after)
        merged: asyncio.Queue[tuple[int, Entry | None] | BaseException] = asyncio.Queue(
            self.settings.sse_buffer
        )

        async def pump(bucket: int) -> None:
            try:
                async for entry in self.entries(keys.feed(bucket), cursor[bucket]):
                    await merged.put((bucket, entry))
            except Exception as e:  # the reader sees it, in order
                await merged.put(e)

        pumps = [asyncio.create_task(pump(b)) for b in range(keys.BUCKETS)]
        self.feeds += 1
        try:
            while True:
                item = await merged.get()
                if isinstance(item, BaseException):
                    raise item
                bucket, entry = item
                if entry is None:
                    if bucket == 0:  # every bucket is idle on the same clock: say it once
                        yield None
                    continue
                cursor[bucket] = entry.id
                yield FeedEntry(format_cursor(cursor), entry.event)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            self.feeds -= 1  # last: what raised goes on to its writer with no wait between
