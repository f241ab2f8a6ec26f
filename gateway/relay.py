"""A run's stream translated once per face, its frames shared by every client that follows it.

Why: a face that speaks another protocol than the native one (the Agent Protocol, OpenAI
Responses) turns a run's walrus events into its own events with a stateful translator. Run per
client, ten thousand clients following one run held ten thousand translators, each building
the same objects and the same SSE text (28.7 and 41.0 KB a stream against the native 20.8,
docs/benchmarks.md). A :class:`Relay` reads the run's events through the hub once (one
subscriber), feeds them to one :class:`Translation`, and keeps the frames it gives, in order;
a client that follows it is an index into that list (:meth:`Relays.follow`).

Sharing is exact because a face's frames are a function of the run's events and of what the
client asked (its modes, where it resumes), nothing else: the relays are keyed by all of it, so
clients that asked the same get the same frames whenever they join, and a client that resumes
elsewhere gets a relay of its own. A relay lives while a client follows it; the last one to
leave ends its reading. Redis away past ``WALRUS_SSE_REDIS_GRACE`` (or the gateway stopping)
ends the reading, and each follower then raises the same error, which its face renders
(``gateway.sse.guarded``); the next client to come starts a new relay.

A follower waits on a future of its own in the relay's list (no ``asyncio.Event``, whose deque
of waiters is ~0.7 KB a relay, nor a timer per follower): the relay wakes them all when frames
come, when its reading ends, and when the hub tells it the run was idle for
``WALRUS_SSE_KEEPALIVE``, which a follower with nothing new to send answers with a keep-alive
comment. A stream that is a relay's only follower (a Responses create) then holds no more than
its future while idle (docs/benchmarks.md, issue 25, fifth round).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Hashable, Sequence
from contextlib import aclosing
from typing import Any, Protocol

Item = tuple[str, dict[str, Any] | None]
"""A run's ``(entry id, event)``; the event None while the stream is idle."""
KEEP_ALIVE = ": keep-alive\n\n"
"""The SSE comment sent while a stream is idle (every ``WALRUS_SSE_KEEPALIVE``)."""


class Translation(Protocol):
    """One face's translator of one run's events into frames (SSE text)."""

    async def opening(self) -> Sequence[str]:
        """The frames before the run's first event."""

    async def feed(self, entry_id: str, event: dict[str, Any]) -> Sequence[str]:
        """The frames of one event (entry ``entry_id`` of the run's stream)."""

    def over(self) -> bool:
        """Whether the stream ends here (the run asked a question, or its reply diverged)."""

    async def closing(self) -> Sequence[str]:
        """The frames after the last event (the run's ``end``, or the run gone)."""


class Relay:
    """One run's frames in one face's shape, read and translated once."""

    __slots__ = ("ended", "failure", "followers", "frames", "idle", "key", "task", "waiters")

    def __init__(self, key: Hashable, items: AsyncIterator[Item], translation: Translation):
        self.key = key
        self.frames: list[str] = []
        self.ended = False
        self.failure: BaseException | None = None
        """What ended the reading early (a Redis error, ``ShuttingDown``), raised to each
        follower once it has had every frame."""
        self.idle = 0
        """How many times the hub said the run was idle (a follower's keep-alive is due)."""
        self.waiters: list[asyncio.Future[None]] = []
        self.followers = 0
        self.task = asyncio.get_running_loop().create_task(self._pump(items, translation))

    def _wake(self) -> None:
        """Wake every waiting follower; the next wait waits for what comes next."""
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():  # a follower that left cancelled its own
                waiter.set_result(None)

    def _add(self, frames: Sequence[str]) -> None:
        if frames:
            self.frames.extend(frames)
            self._wake()

    async def _pump(self, items: AsyncIterator[Item], translation: Translation) -> None:
        try:
            self._add(await translation.opening())
            if not translation.over():
                async with aclosing(items):  # type: ignore[type-var]  # the hub's generator
                    async for entry_id, event in items:
                        if event is None:  # idle for the keep-alive interval
                            self.idle += 1
                            self._wake()
                            continue
                        self._add(await translation.feed(entry_id, event))
                        if translation.over():
                            break
            self._add(await translation.closing())
        except Exception as e:  # told to every follower, in order, after the frames before it
            self.failure = e
        finally:
            self.ended = True
            self._wake()


class Relays:
    """The relays of one gateway process, by what their followers asked."""

    def __init__(self) -> None:
        self.open: dict[Hashable, Relay] = {}
        self.followers = 0
        """Followers of every relay: a follower is a stream until its last frame is on its
        way, after its relay's reading has ended (``Hub.streams_ended`` waits for them)."""

    def relay(
        self,
        key: Hashable,
        items: Callable[[], AsyncIterator[Item]],
        make: Callable[[], Translation],
    ) -> Relay:
        """The relay of ``key``.

        A new one, reading ``items()`` translated by ``make()``, if there is none or if the
        last one's reading failed.
        """
        relay = self.open.get(key)
        if relay is None or relay.failure is not None:
            relay = self.open[key] = Relay(key, items(), make())
        return relay

    async def follow(
        self,
        key: Hashable,
        items: Callable[[], AsyncIterator[Item]],
        make: Callable[[], Translation],
        cursor: Cursor,
        last: str | None = None,
        *,
        first: str | None = None,
        shape: Callable[[str], str] | None = None,
    ) -> AsyncGenerator[str, None]:
        """The frames of ``key``'s relay from ``cursor.index`` on; ``last`` if it ended well.

        The relay is :meth:`relay`'s, joined as the frames are first asked for: a stream
        that never starts (its client gone before) leaves nothing behind. ``first`` (the
        follower's own) goes before them, each of them through ``shape`` if given (a
        follower's own part of a shared frame: A2A's request id); a keep-alive comment when
        the hub says the run is idle; what ended its reading early is raised.
        ``cursor.index`` is the next frame's index as the frames go out.
        """
        relay = self.relay(key, items, make)
        del key, items, make  # a follower holds its relay, not what made it (~1 KB a stream)
        relay.followers += 1
        self.followers += 1
        try:
            if first is not None:
                yield first
            while True:
                if cursor.index < len(relay.frames):
                    frame = relay.frames[cursor.index]
                    cursor.index += 1
                    yield frame if shape is None else shape(frame)
                elif relay.ended:
                    if relay.failure is not None:
                        raise relay.failure.with_traceback(None)  # one instance, many raisers
                    if last is not None:
                        yield last
                    return
                else:  # wait for what comes next (inline: no frame more while idle)
                    idle = relay.idle
                    waiter = asyncio.get_running_loop().create_future()
                    relay.waiters.append(waiter)
                    await waiter
                    if relay.idle != idle and cursor.index == len(relay.frames):
                        yield KEEP_ALIVE  # the run was idle, and so was this stream
        finally:
            self._leave(relay)

    def _leave(self, relay: Relay) -> None:
        relay.followers -= 1
        self.followers -= 1
        if relay.followers == 0 and self.open.get(relay.key) is relay:
            del self.open[relay.key]
            if not relay.ended:
                relay.task.cancel()  # no one follows it: stop reading (its hub subscription ends)


class Cursor:
    """A follower's place in its relay's frames: the index of the next one."""

    __slots__ = ("index",)

    def __init__(self, index: int = 0) -> None:
        self.index = index
