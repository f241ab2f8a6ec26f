"""One Redis reader for every open stream of one bucket of a gateway process.

Every SSE stream, WebSocket ``stream``/``subscribe_events`` op and protocol stream of a gateway
process subscribes to its bucket's reader instead of reading Redis itself. The reader sends
blocking ``XREAD BLOCK … STREAMS k1 … kn id1 … idn`` reads over the stream keys that have
subscribers and hands each entry to the subscribers of its key. ``XREAD`` names every key it
waits on, so each read that brings entries is sent again over all of them: the keys are split
in two reads, each on a connection of its own (:class:`_Tier`). The hot read has the keys
added or with entries in the last ``HOT_IDLE_S``; the cold read has the others, idle streams
(a queued run's, a run waiting for an answer), and is sent again only when one of its keys has
an entry (the key turns hot) or a batch of keys turns cold. So what an entry costs the reader
grows with the streams that are busy, not with every stream the process holds open. One more
connection serves ``CLIENT UNBLOCK`` (a read that misses a key is interrupted: a new key is read
at once), catch-up ranges (``XRANGE``) and the check that a run still exists. So a reader holds
at most three Redis connections for its streams whatever their number, the cold read's only
once a key has turned cold (the gateway's hub has one reader a bucket).

Each key has one cursor (the last entry id read). A subscriber that joins a key the hub reads
at a later cursor first reads ``(after, cursor]`` with ``XRANGE`` and then takes the hub's
entries: no gap, no duplicate. Each subscriber has a bounded buffer; one that falls more than
``sse_buffer`` entries behind is cut with :class:`SlowConsumer` (SSE clients then resume with
``Last-Event-ID``), so a slow client never stalls the others. When Redis goes away the hub
reconnects with backoff and reads every key on from its cursor; subscribers see the error only
once Redis has been away ``sse_redis_grace`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from functools import partial
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.errors import REDIS_DOWN
from gateway.subscription import Entry, StreamKey, Subscriber, seq
from walrus_tasks import keys
from walrus_tasks.errors import Unavailable
from walrus_tasks.feed import feed_event
from walrus_tasks.redis_url import async_client
from walrus_tasks.run_stream import parse
from walrus_tasks.settings import Settings

log = logging.getLogger("walrus.gateway.hub")

BLOCK_MS = 5_000
"""Longest blocking read; also how often the hub checks that the runs it reads still exist."""
HOT_IDLE_S = 1.0
"""Seconds a key goes without entries before it leaves the hot read for the cold one."""
COUNT = 500
"""Most entries of one key per read."""
BACKOFF_FIRST, BACKOFF_MAX = 0.05, 1.0
UNBLOCK_TRIES = 200
"""CLIENT UNBLOCK answers 0 while the XREAD is still on its way; retried every millisecond."""
CLOSE_RECANCEL = 0.5
"""Seconds ``close`` waits for its cancelled tasks before it cancels those still running again."""
EXISTS_LUA = "local r = {} for i, k in ipairs(KEYS) do r[i] = redis.call('EXISTS', k) end return r"


class ShuttingDown(Unavailable):
    """The gateway process is stopping: its streams end, to be resumed from their last id."""


class _Tier:
    """One of a reader's two blocking reads: its keys, its connection, the read's version.

    ``version`` is bumped when a key joins that the blocked read must take (a new key, a cold
    key turned hot, keys turned cold); ``reading`` is the version the blocked read was built
    from, so ``CLIENT UNBLOCK`` is sent only to a read that misses a key. A key leaving needs
    no new read: what the old one brings for it is dropped.
    """

    __slots__ = ("block_ms", "changed", "client", "client_id", "hot", "keys", "nonempty",
                 "reading", "version")  # fmt: skip

    def __init__(self, hot: bool) -> None:
        self.hot = hot
        self.block_ms = int(HOT_IDLE_S * 1000) if hot else BLOCK_MS
        self.keys: dict[str, StreamKey] = {}
        self.version = 0
        self.reading: int | None = None
        self.client: aioredis.Redis | None = None
        self.client_id = 0
        self.changed = asyncio.Event()
        self.nonempty = asyncio.Event()

    def add(self, state: StreamKey) -> None:
        """Read ``state`` from the next read on (interrupting the blocked one)."""
        self.keys[state.name] = state
        self.version += 1
        self.changed.set()
        self.nonempty.set()


class StreamReader:
    """One reader of run streams and of the feed (see the module docstring).

    ``connect(**kwargs)`` makes each of its clients, the two reads' and the control one (by
    default of ``settings.redis_url``; on a cluster, of the master that serves its bucket:
    ``redis_url.slot_client``).
    """

    def __init__(
        self, settings: Settings, connect: Callable[..., aioredis.Redis] | None = None
    ) -> None:
        self.settings = settings
        self._connect = connect or partial(async_client, settings.redis_url)
        self.keys: dict[str, StreamKey] = {}  # every key read, hot and cold
        self.hot, self.cold = _Tier(hot=True), _Tier(hot=False)
        self.control = self._control_client()
        self.down_since: float | None = None
        self.error: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._checked = time.monotonic()
        self._exists_asked: list[tuple[str, asyncio.Future[bool]]] = []
        self._exists_task: asyncio.Task[None] | None = None
        self.stopping: ShuttingDown | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the two reads and their unblockers (the app's lifespan starts its hub)."""
        self._tasks = [
            asyncio.create_task(job(tier))
            for tier in (self.hot, self.cold)
            for job in (self._read_loop, self._unblock)
        ]

    def end_streams(self, reason: str) -> None:
        """End every open stream, and each one opened from now on, with :class:`ShuttingDown`.

        Called as the server starts to stop (``gateway.server``), before it waits for the
        connections: each stream then ends with its face's ``unavailable`` error, written while
        its connection is still open, instead of being cut when the wait runs out.
        """
        self.stopping = ShuttingDown(f"{reason}; reconnect and resume from the last event id")
        for state in list(self.keys.values()):
            for sub in list(state.subs):
                sub.fail(self.stopping)

    async def streams_ended(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every subscriber to leave; whether they all did."""
        deadline = time.monotonic() + timeout
        while any(state.subs for state in self.keys.values()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def close(self) -> None:
        """Stop the tasks and close both connections.

        A task is cancelled again until it has ended: a cancellation swallowed on its way (seen
        with the reader connecting while a gateway that could not bind its port stopped, on a
        loaded machine) would otherwise leave the loop waiting for keys, and the process's stop
        with it, forever.
        """
        tasks = [*self._tasks, *([self._exists_task] if self._exists_task else [])]
        pending = set(tasks)
        while pending:
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=CLOSE_RECANCEL)
        for task in tasks:
            if not task.cancelled() and task.exception() is not None:
                log.debug("a hub task ended with an error", exc_info=task.exception())
        for tier in (self.hot, self.cold):
            await self._drop_client(tier)
        await self.control.aclose()

    async def run_exists(self, run_id: str) -> bool:
        """Whether the run's record exists, asked on the control connection.

        The questions of every stream opening meanwhile share one round trip: one at a time,
        a thousand clients connecting at once would wait for a thousand round trips in turn.
        Redis errors propagate, so a route answers 503 while Redis is away.
        """
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._exists_asked.append((run_id, answer))
        if self._exists_task is None:
            self._exists_task = asyncio.create_task(self._answer_exists())
        return await answer

    async def _answer_exists(self) -> None:
        try:
            while self._exists_asked:
                asked, self._exists_asked = self._exists_asked, []
                names = [keys.run(run_id) for run_id, _ in asked]
                try:
                    found = await self._exists(names)
                except Exception as e:  # each caller gets it
                    for _, answer in asked:
                        if not answer.done():
                            answer.set_exception(e)
                    continue
                for (_, answer), alive in zip(asked, found, strict=True):
                    if not answer.done():
                        answer.set_result(bool(alive))
        finally:
            self._exists_task = None

    async def _exists(self, names: list[str]) -> list[int]:
        # One retry: the first command after a Redis restart meets the old, closed connection.
        try:
            found: list[int] = await self.control.eval(EXISTS_LUA, len(names), *names)
        except REDIS_DOWN:
            await self._reconnect_control()
            found = await self.control.eval(EXISTS_LUA, len(names), *names)
        return found

    def _control_client(self) -> aioredis.Redis:
        return self._connect(
            decode_responses=True, single_connection_client=True,
            socket_timeout=10, socket_connect_timeout=5,
        )  # fmt: skip

    async def _reconnect_control(self) -> None:
        """A new control connection: the next command connects afresh.

        On a cluster, to the master that serves the bucket now (the old one may answer
        ``MOVED``).
        """
        control, self.control = self.control, self._control_client()
        try:
            await control.aclose()
        except Exception:  # a dead connection may fail to close
            log.debug("closing the hub's control connection failed", exc_info=True)

    # --- subscribing ----------------------------------------------------------------------

    def entries(
        self, key: str, after: str, run_id: str | None = None
    ) -> AsyncGenerator[Entry | None, None]:
        """Entries of ``key`` after ``after`` (None after each idle ``sse_keepalive``).

        Ends after a run's ``end``, or when the run ``run_id`` no longer exists. Raises
        :class:`SlowConsumer`, or a Redis error once Redis was away ``sse_redis_grace``.
        """
        return cast("AsyncGenerator[Entry | None, None]", self._read(key, after, run_id, False))

    def bursts(
        self, key: str, after: str, run_id: str | None = None
    ) -> AsyncGenerator[list[Entry] | None, None]:
        """:meth:`entries`, a burst at a time: each entry with every one buffered behind it.

        For a writer that writes a burst at once: a run's ``text_start`` and first ``chunk``
        come in one read (``emit.lua`` appends both), and go to its client in one ``send``.
        """
        return cast(
            "AsyncGenerator[list[Entry] | None, None]", self._read(key, after, run_id, True)
        )

    async def _read(
        self, key: str, after: str, run_id: str | None, bursts: bool
    ) -> AsyncGenerator[Entry | list[Entry] | None, None]:
        """:meth:`entries`, or with ``bursts`` :meth:`bursts` (one generator: no layer more)."""
        sub, catch_up_to = self._join(key, after, run_id)
        last = seq(after)
        try:
            if catch_up_to is not None:
                async for old in self._range(key, after, catch_up_to, run_id is None, sub):
                    last = old.seq
                    yield [old] if bursts else old
                    if old.ends:
                        return
            while True:
                entry = await self._next(sub)
                if entry is None:
                    if sub.gone:
                        return
                    yield None
                elif not bursts:
                    if entry.seq > last:
                        last = entry.seq
                        yield entry
                        if entry.ends:
                            return
                else:
                    burst = [e for e in (entry, *sub.pop_all()) if e.seq > last]
                    for n, e in enumerate(burst):
                        if e.ends:
                            yield burst[: n + 1]
                            return
                    if burst:
                        last = burst[-1].seq
                        yield burst
        finally:
            self._leave(sub)

    def _join(self, key: str, after: str, run_id: str | None) -> tuple[Subscriber, str | None]:
        state = self.keys.get(key)
        catch_up_to = None
        if state is None:
            state = self.keys[key] = StreamKey(key, after, run_id)
            self.hot.add(state)
        elif seq(after) < seq(state.cursor):
            catch_up_to = state.cursor  # what the hub delivers from now on is after it
        sub = Subscriber(state, self.settings.sse_buffer)
        state.subs.add(sub)
        if self.stopping is not None:
            sub.fail(self.stopping)
        return sub, catch_up_to

    def _leave(self, sub: Subscriber) -> None:
        state = sub.key
        state.subs.discard(sub)
        if not state.subs:
            self._drop(state)

    def _drop(self, state: StreamKey) -> None:
        """Read ``state`` no more (if it is still the key of its name)."""
        if self.keys.get(state.name) is state:
            del self.keys[state.name]
            for tier in (self.hot, self.cold):  # it is in one of them
                tier.keys.pop(state.name, None)

    def tail(self, key: str, after: str) -> AsyncIterator[Entry]:
        """The entries of run stream ``key`` after ``after``, to its last.

        Read with ``XRANGE`` on the control connection, a page at a time, and never subscribed
        to: no ``CLIENT UNBLOCK``, no ``XREAD`` over every key sent again (for an ended run's
        stream, which gets nothing more: ``Hub.run_items``).
        """
        return self._range(key, after, "+", False, None)

    async def _range(
        self, key: str, after: str, upto: str, feed: bool, sub: Subscriber | None
    ) -> AsyncIterator[Entry]:
        """Entries in ``(after, upto]``, read on the control connection, in pages."""
        while True:
            start = f"({after}"
            page = await self._control(lambda: self.control.xrange(key, start, upto, COUNT))  # noqa: B023  # awaited at once
            for entry_id, fields in page:
                yield self._entry(entry_id, fields, feed)
                after = entry_id
            if len(page) < COUNT or (sub is not None and sub.failure is not None):
                return

    async def _control(self, call: Callable[[], Any]) -> Any:
        """``call()`` on the control connection, waiting up to the grace for Redis."""
        deadline = time.monotonic() + self.settings.sse_redis_grace
        delay = BACKOFF_FIRST
        while True:
            try:
                return await call()
            except REDIS_DOWN:
                if time.monotonic() >= deadline:
                    raise
                await self._reconnect_control()
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _next(self, sub: Subscriber) -> Entry | None:
        """The subscriber's next entry; None when idle for ``sse_keepalive`` or gone."""
        keepalive, grace = self.settings.sse_keepalive, self.settings.sse_redis_grace
        while True:
            entry = sub.pop()
            if entry is not None:
                return entry
            if sub.failure is not None:
                raise sub.failure
            if sub.gone:
                return None
            timeout = keepalive
            if self.down_since is not None:
                deadline = max(self.down_since, sub.joined) + grace
                if time.monotonic() >= deadline:
                    raise self.error or ConnectionError("redis unavailable")
                timeout = min(timeout, deadline - time.monotonic())
            sub.waiter = asyncio.get_running_loop().create_future()
            try:
                # Not wait_for: before Python 3.12 it makes a task per wait, for every event
                # of every subscriber.
                async with asyncio.timeout(timeout):
                    await sub.waiter
            except TimeoutError:
                if self.down_since is None:
                    return None
            finally:
                sub.waiter = None

    # --- reading --------------------------------------------------------------------------

    @staticmethod
    def _entry(entry_id: str, fields: dict[str, str], feed: bool) -> Entry:
        if feed:
            return Entry(entry_id, feed_event(fields), False)
        return StreamReader.run_entry(entry_id, fields)

    @staticmethod
    def run_entry(entry_id: str, fields: dict[str, str]) -> Entry:
        """The entry of a run's stream that ``XRANGE`` or ``XREAD`` answered."""
        _, event = parse(entry_id, fields)
        return Entry(entry_id, event, event["type"] == "end")

    async def _read_loop(self, tier: _Tier) -> None:
        """Send ``tier``'s read again and again; reconnect when Redis goes away.

        The hot read connects at once (a new stream's first read waits for no connect), the
        cold one once it has keys.
        """
        delay = BACKOFF_FIRST
        task = asyncio.current_task()
        while True:
            if task is not None and task.cancelling():  # a cancellation swallowed on its way
                raise asyncio.CancelledError
            try:
                if tier.client is None and (tier.hot or tier.keys):
                    tier.client = self._connect(
                        decode_responses=True, single_connection_client=True,
                        socket_timeout=BLOCK_MS / 1000 + 10, socket_connect_timeout=5,
                        retry=Retry(NoBackoff(), 0),
                    )  # fmt: skip
                    tier.client_id = int(await tier.client.client_id())
                if self.down_since is not None:
                    log.info("redis is back; the hub reads on from every cursor")
                    self.down_since = self.error = None
                await self._read_once(tier)
                delay = BACKOFF_FIRST
            except REDIS_DOWN as e:
                if task is not None and task.cancelling():
                    raise
                if self.down_since is None:
                    log.warning("redis went away under the hub (%s); reconnecting", e)
                    self.down_since = time.monotonic()
                self.error = e
                for state in list(self.keys.values()):
                    for sub in state.subs:
                        sub.wake()  # re-arm their waits with the grace deadline
                await self._drop_client(tier)
                await self._reconnect_control()  # CLIENT UNBLOCK must reach the reader's server
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            except Exception as e:  # a bug: fail the subscribers rather than hang them
                log.exception("the stream hub failed")
                for state in list(self.keys.values()):
                    for sub in state.subs:
                        sub.fail(e)
                self.keys.clear()
                for each in (self.hot, self.cold):
                    each.keys.clear()
                await self._drop_client(tier)
                await asyncio.sleep(delay)

    async def _drop_client(self, tier: _Tier) -> None:
        client, tier.client = tier.client, None
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # a dead connection may fail to close
                log.debug("closing the hub's reader failed", exc_info=True)

    async def _read_once(self, tier: _Tier) -> None:
        if not tier.keys:
            tier.nonempty.clear()
            await tier.nonempty.wait()
            return
        assert tier.client is not None
        snapshot = dict(tier.keys)
        tier.reading = tier.version
        try:
            reply: Any = await tier.client.xread(
                {name: s.cursor for name, s in snapshot.items()}, block=tier.block_ms, count=COUNT
            )
        finally:
            tier.reading = None
        now = time.monotonic()
        for name, fields_list in reply or []:
            state = snapshot[name]
            if self.keys.get(name) is not state or not fields_list:
                continue  # dropped or re-added meanwhile: read again from its new cursor
            self._deliver(state, fields_list, now)
            if self.cold.keys.get(name) is state:  # woke up: read it hot
                del self.cold.keys[name]
                self.hot.add(state)
        if tier.hot:
            self._cool(now)
        if now - self._checked >= BLOCK_MS / 1000:
            await self._check_runs()

    def _cool(self, now: float) -> None:
        """Move the hot keys idle for ``HOT_IDLE_S`` to the cold read, all in one change."""
        idle = [s for s in self.hot.keys.values() if now - s.touched >= HOT_IDLE_S]
        for state in idle:
            del self.hot.keys[state.name]
            self.cold.add(state)

    def _deliver(
        self, state: StreamKey, fields_list: list[tuple[str, dict[str, str]]], now: float
    ) -> None:
        feed = state.run_id is None
        batch = [self._entry(entry_id, fields, feed) for entry_id, fields in fields_list]
        state.cursor, state.fresh, state.touched = batch[-1].id, True, now
        for sub in list(state.subs):
            if not sub.push(batch):
                state.subs.discard(sub)
        if any(e.ends for e in batch):
            self._drop(state)  # its subscribers stop at the end they were given

    async def _check_runs(self) -> None:
        """End the streams of runs whose record is gone (expired or deleted)."""
        self._checked = time.monotonic()
        idle = [s for s in self.keys.values() if s.run_id is not None and not s.fresh]
        for s in self.keys.values():
            s.fresh = False
        if not idle:
            return
        exists: list[int] = await self.control.eval(
            EXISTS_LUA, len(idle), *(keys.run(s.run_id) for s in idle if s.run_id)
        )
        for state, alive in zip(idle, exists, strict=True):
            if not alive and self.keys.get(state.name) is state:
                self._drop(state)
                for sub in state.subs:
                    sub.gone = True
                    sub.wake()

    async def _unblock(self, tier: _Tier) -> None:
        """Interrupt ``tier``'s blocked XREAD when it misses a key (coalesced: one per change)."""
        while True:
            await tier.changed.wait()
            tier.changed.clear()
            for _ in range(UNBLOCK_TRIES):
                if tier.reading is None or tier.reading == tier.version:
                    break
                try:
                    if await self.control.client_unblock(tier.client_id):
                        break
                except REDIS_DOWN:
                    break
                await asyncio.sleep(0.001)
