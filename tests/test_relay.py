"""A run's stream translated once for every client of a face (``gateway.relay``), real Redis.

docs/design.md, invariant 26: however many clients follow a run through a face, asking the
same, the run's events are read by one hub subscriber and translated once; each client gets
every frame, in order, from wherever it joined.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing
from typing import Any

import pytest
import redis

from gateway import operations as ops
from gateway.hub import Hub
from gateway.relay import KEEP_ALIVE, Cursor, Item
from tests.conftest import redis_db_url
from walrus_tasks import keys
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.settings import Settings

RUN = "a" * 32
EVENTS = keys.run_part(RUN, "events")


@pytest.fixture
def url(redis_server: RedisServer) -> Iterator[str]:
    u = redis_db_url(redis_server)
    yield u
    redis.Redis.from_url(u).flushdb()


def add(r: redis.Redis, event: dict[str, Any]) -> str:
    r.hset(keys.run(RUN), "status", "running")
    return str(r.xadd(EVENTS, {"data": json.dumps(event)}))


class Counted:
    """A translation that names each event, counting how many times it was asked."""

    made = 0

    def __init__(self) -> None:
        Counted.made += 1
        self.fed = 0
        self.stop = False

    async def opening(self) -> list[str]:
        return ["open"]

    async def feed(self, entry_id: str, event: dict[str, Any]) -> list[str]:
        self.fed += 1
        self.stop = event["type"] == "ask"
        return [f"{event['type']}"]

    def over(self) -> bool:
        return self.stop

    async def closing(self) -> list[str]:
        return ["close"]


def subscribers(hub: Hub) -> int:
    key = hub.reader(EVENTS).keys.get(EVENTS)
    return 0 if key is None else len(key.subs)


async def collect(frames: AsyncGenerator[str, None], out: list[str]) -> None:
    async with aclosing(frames):
        async for frame in frames:
            if frame != KEEP_ALIVE:
                out.append(frame)


def test_a_hundred_followers_share_one_subscription_and_one_translation(url: str) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    add(r, {"type": "start"})
    Counted.made = 0

    async def main() -> tuple[list[list[str]], list[int], int]:
        hub = Hub(Settings(redis_url=url))
        hub.start()
        try:
            translations: list[Counted] = []

            def make() -> Counted:
                translations.append(Counted())
                return translations[-1]

            got: list[list[str]] = [[] for _ in range(100)]
            followers = []
            for out in got:
                frames = hub.relays.follow(
                    "k", lambda: ops.run_events(hub, RUN, "0-0"), make, Cursor()
                )
                followers.append(asyncio.create_task(collect(frames, out)))
            seen = []
            for kind in ("chunk", "chunk", "end"):
                await asyncio.sleep(0.05)
                seen.append(subscribers(hub))
                add(r, {"type": kind})
            await asyncio.gather(*followers)
            return got, seen, sum(t.fed for t in translations)
        finally:
            await hub.close()

    got, seen, fed = asyncio.run(main())
    assert got == [["open", "start", "chunk", "chunk", "end", "close"]] * 100
    assert Counted.made == 1 and fed == 4  # each event translated once, for all 100
    assert seen == [1, 1, 1]  # one hub subscriber while they follow


def test_a_late_follower_gets_every_frame_and_a_cursor_starts_where_it_says(url: str) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    add(r, {"type": "start"})

    async def main() -> tuple[list[str], list[str], list[str]]:
        hub = Hub(Settings(redis_url=url))
        hub.start()
        try:

            def follow(cursor: Cursor, out: list[str]) -> asyncio.Task[None]:
                source = lambda: ops.run_events(hub, RUN, "0-0")  # noqa: E731
                return asyncio.create_task(
                    collect(hub.relays.follow("k", source, Counted, cursor), out)
                )

            Counted.made = 0
            first: list[str] = []
            task = follow(Cursor(), first)
            add(r, {"type": "chunk"})
            while len(first) < 3:
                await asyncio.sleep(0.01)
            late: list[str] = []
            late_task = follow(Cursor(), late)
            resumed: list[str] = []
            resumed_task = follow(Cursor(2), resumed)
            add(r, {"type": "end"})
            await asyncio.gather(task, late_task, resumed_task)
            return first, late, resumed
        finally:
            await hub.close()

    first, late, resumed = asyncio.run(main())
    assert Counted.made == 1  # the late and the resumed follower joined the first's relay
    assert first == late == ["open", "start", "chunk", "end", "close"]
    assert resumed == ["chunk", "end", "close"]


def test_the_last_follower_leaving_ends_the_reading_and_the_next_starts_anew(url: str) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    add(r, {"type": "start"})

    async def main() -> tuple[int, int, int, bool, bool]:
        hub = Hub(Settings(redis_url=url))
        hub.start()
        try:
            relays = hub.relays
            source = lambda: ops.run_events(hub, RUN, "0-0")  # noqa: E731
            tasks = [
                asyncio.create_task(collect(relays.follow("k", source, Counted, Cursor()), []))
                for _ in range(3)
            ]
            await asyncio.sleep(0.1)
            relay = relays.open["k"]
            following = subscribers(hub)
            tasks[0].cancel()
            await asyncio.sleep(0.05)
            one_gone = subscribers(hub)
            for task in tasks[1:]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.05)
            gone = "k" not in relays.open
            again = relays.relay("k", source, Counted)
            again.task.cancel()
            return (
                following,
                one_gone,
                subscribers(hub),
                relay.task.cancelled(),
                gone and again is not relay,
            )
        finally:
            await hub.close()

    following, one_gone, after, cancelled, anew = asyncio.run(main())
    assert (following, one_gone, after) == (1, 1, 0)
    assert cancelled and anew


async def failing(n: int, gate: asyncio.Event) -> AsyncGenerator[Item, None]:
    for i in range(n):
        yield f"1-{i}", {"type": "chunk"}
    await gate.wait()
    raise ConnectionError("redis went away")


def test_a_failed_reading_is_raised_to_every_follower_after_its_frames(url: str) -> None:
    async def main() -> tuple[list[list[str]], list[BaseException], bool, int]:
        hub = Hub(Settings(redis_url=url))
        relays, gate = hub.relays, asyncio.Event()
        got: list[list[str]] = [[] for _ in range(5)]
        tasks = [
            asyncio.create_task(
                collect(relays.follow("k", lambda: failing(2, gate), Counted, Cursor()), out)
            )
            for out in got
        ]
        while sum(map(len, got)) < 15:  # all five have had the frames before the failure
            await asyncio.sleep(0.01)
        relay = relays.open["k"]
        gate.set()
        errors = await asyncio.gather(*tasks, return_exceptions=True)
        fresh = relays.relay("k", lambda: failing(0, gate), Counted) is not relay
        return got, [e for e in errors if e is not None], fresh, relays.followers

    got, errors, fresh, followers = asyncio.run(main())
    assert got == [["open", "chunk", "chunk"]] * 5  # every frame before the failure, no close
    assert len(errors) == 5 and all(isinstance(e, ConnectionError) for e in errors)
    assert fresh and followers == 0  # the next client starts a new relay


def test_a_question_ends_the_relay_without_waiting_for_another_event(url: str) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    add(r, {"type": "start"})
    add(r, {"type": "ask"})  # the run waits for an answer: nothing comes after it

    async def main() -> list[str]:
        hub = Hub(Settings(redis_url=url))
        hub.start()
        try:
            source = lambda: ops.run_events(hub, RUN, "0-0")  # noqa: E731
            out: list[str] = []
            await asyncio.wait_for(
                collect(hub.relays.follow("k", source, Counted, Cursor()), out), 5
            )
            return out
        finally:
            await hub.close()

    assert asyncio.run(main()) == ["open", "start", "ask", "close"]


def test_an_idle_follower_gets_keep_alives_and_counts_as_an_open_stream(url: str) -> None:
    add(redis.Redis.from_url(url), {"type": "start"})

    async def main() -> tuple[list[str], bool, bool]:
        hub = Hub(Settings(redis_url=url, sse_keepalive=0.1))
        hub.start()
        try:
            source = lambda: ops.run_events(hub, RUN, "0-0")  # noqa: E731
            frames = hub.relays.follow("k", source, Counted, Cursor())
            got = [await anext(frames) for _ in range(4)]
            ended_while_open = await hub.streams_ended(0.05)
            await frames.aclose()
            return got, ended_while_open, await hub.streams_ended(0.5)
        finally:
            await hub.close()

    got, ended_while_open, ended = asyncio.run(main())
    assert got == ["open", "start", KEEP_ALIVE, KEEP_ALIVE]
    assert not ended_while_open and ended


def test_a_stream_that_never_starts_leaves_no_relay(url: str) -> None:
    async def main() -> tuple[int, int]:
        hub = Hub(Settings(redis_url=url))
        source = lambda: ops.run_events(hub, RUN, "0-0")  # noqa: E731
        frames = hub.relays.follow("k", source, Counted, Cursor())
        await frames.aclose()  # the client left before the response was written
        return len(hub.relays.open), hub.relays.followers

    assert asyncio.run(main()) == (0, 0)
