"""The gateway's stream hub against a real Redis: one reader, catch-up, slow consumers."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from gateway import stream_reader
from gateway.hub import HEAD, Entry, Hub, SlowConsumer
from gateway.sse import hub_frames
from gateway.stream_reader import StreamReader
from tests.conftest import redis_db_url
from walrus_tasks import keys
from walrus_tasks.redis_server import RedisServer, start_redis
from walrus_tasks.settings import Settings


@pytest.fixture
def url(redis_server: RedisServer) -> Iterator[str]:
    u = redis_db_url(redis_server)
    yield u
    redis.Redis.from_url(u).flushdb()


def add(r: redis.Redis, run_id: str, event: dict[str, Any]) -> str:
    r.hset(keys.run(run_id), "status", "running")
    return str(r.xadd(keys.run_part(run_id, "events"), {"data": json.dumps(event)}))


@asynccontextmanager
async def running_hub(url: str) -> AsyncIterator[Hub]:
    """A hub on ``url``, started, and closed after."""
    hub = Hub(Settings(redis_url=url))
    hub.start()
    try:
        yield hub
    finally:
        await hub.close()


async def take(entries: AsyncIterator[Entry | None], n: int) -> list[str]:
    out: list[str] = []
    async for e in entries:
        if e is not None:
            out.append(e.id)
            if len(out) == n or e.ends:
                break
    return out


def test_many_streams_share_three_connections_a_bucket_and_a_new_key_is_read_at_once(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 subscribers of 50 keys over every bucket, gone idle (so each bucket's reader has its
    hot read, its cold one and its control connection): three connections a bucket at most,
    and a new key interrupts its own bucket's hot read, and no other reader's."""
    monkeypatch.setattr(stream_reader, "HOT_IDLE_S", 0.2)
    r = redis.Redis.from_url(url, decode_responses=True)
    runs = [f"{i % keys.BUCKETS:x}{i:031x}" for i in range(50)]  # first digit: the bucket
    for run_id in runs:
        add(r, run_id, {"type": "start"})

    async def main() -> tuple[list[list[str]], int, float, dict[int, int]]:
        before = {int(c["id"]) for c in r.client_list()}
        async with running_hub(url) as hub:
            subs = [
                asyncio.create_task(
                    take(hub.entries(keys.run_part(run_id, "events"), "0-0", run_id), 2)
                )
                for run_id in runs
                for _ in range(4)
            ]
            await asyncio.sleep(0.8)  # all subscribed, read their start, then turned cold
            assert all(len(reader.cold.keys) > 0 for reader in hub.readers)
            conns = len({int(c["id"]) for c in r.client_list()} - before) - 1  # minus r
            versions = [reader.hot.version for reader in hub.readers]
            t0 = time.monotonic()
            new = "f" * 32
            late = asyncio.create_task(
                take(hub.entries(keys.run_part(new, "events"), "0-0", new), 1)
            )
            await asyncio.sleep(0.05)
            add(r, new, {"type": "end"})
            await late
            latency = time.monotonic() - t0
            added = {
                b: reader.hot.version - versions[b]
                for b, reader in enumerate(hub.readers)
                if reader.hot.version != versions[b]
            }
            for run_id in runs:
                add(r, run_id, {"type": "end"})
            return await asyncio.gather(*subs), conns, latency, added

    got, conns, latency, added = asyncio.run(main())
    assert all(len(ids) == 2 for ids in got)
    assert conns <= 3 * keys.BUCKETS, conns  # 200 subscribers, 50 keys: three a bucket at most
    assert latency < 1.0, "a new key interrupts the blocked read (CLIENT UNBLOCK)"
    # The new key made its own bucket's reader read again, and no other.
    assert added == {keys.key_bucket(keys.run("f" * 32)): 1}, added


def test_an_entry_of_a_busy_stream_is_read_over_the_busy_keys_not_every_idle_one(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/design.md, invariant 29: with 60 idle streams open in a bucket, each entry of
    the one busy stream sends the hot read again over the busy key alone; the cold read (the
    idle keys) is not sent again; an idle key's next entry comes at once and makes it hot."""
    monkeypatch.setattr(stream_reader, "HOT_IDLE_S", 0.2)
    r = redis.Redis.from_url(url, decode_responses=True)
    idle = [f"3{i:031x}" for i in range(60)]  # first digit: one bucket, theirs and busy's
    busy = "3" + "b" * 31
    for run_id in [*idle, busy]:
        add(r, run_id, {"type": "start"})

    async def main() -> tuple[dict[str, Any], list[str], list[str]]:
        async with running_hub(url) as hub:
            reader = hub.reader(keys.run_part(busy, "events"))
            subs = [
                asyncio.create_task(
                    take(hub.entries(keys.run_part(run_id, "events"), "0-0", run_id), 3)
                )
                for run_id in idle
            ]
            await asyncio.sleep(0.8)  # each read its start, then went 0.2 s without entries
            assert len(reader.cold.keys) == 60, "the idle keys turned cold"
            seen: dict[str, Any] = {}
            sent: dict[str, list[int]] = {"hot": [], "cold": []}
            for name, tier in (("hot", reader.hot), ("cold", reader.cold)):
                assert tier.client is not None
                xread = tier.client.xread

                async def counted(
                    streams: dict[str, str], *a: Any, _n: str = name, _x: Any = xread, **k: Any
                ) -> Any:
                    sent[_n].append(len(streams))
                    return await _x(streams, *a, **k)

                tier.client.xread = counted  # type: ignore[method-assign]
            follower = asyncio.create_task(
                take(hub.entries(keys.run_part(busy, "events"), "0-0", busy), 51)
            )
            for n in range(50):
                add(r, busy, {"type": "chunk", "content": str(n)})
                await asyncio.sleep(0.005)
            got_busy = await asyncio.wait_for(follower, 10)
            seen["hot reads"], seen["their keys"] = len(sent["hot"]), max(sent["hot"])
            seen["cold reads"] = len(sent["cold"])
            t0 = time.monotonic()
            woke = add(r, idle[7], {"type": "chunk"})
            woken_key = keys.run_part(idle[7], "events")
            while woken_key not in reader.hot.keys and time.monotonic() - t0 < 5:
                await asyncio.sleep(0.001)
            seen["wake latency"] = time.monotonic() - t0  # read, and made hot
            seen["cold reads after"] = len(sent["cold"])
            for run_id in idle:
                add(r, run_id, {"type": "end"})
            got = await asyncio.gather(*subs)
            return seen, got_busy, [got[7][1], woke]

    seen, got_busy, woken = asyncio.run(main())
    assert len(got_busy) == 51 and got_busy == sorted(got_busy), "the busy stream, in order"
    assert seen["hot reads"] >= 10 and seen["their keys"] == 1, seen  # the busy key alone
    assert seen["cold reads"] == 0, seen  # the 60 idle keys were not sent again
    assert seen["wake latency"] < 1.0, seen
    assert seen["cold reads after"] == 1, seen  # sent again once, without the woken key
    assert woken[0] == woken[1]


def test_cold_streams_ride_out_a_redis_restart_and_wake_hot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Streams gone cold when Redis restarts: the cold read reconnects and reads on from each
    cursor, so each stream's next entries come once, in order, and make it hot again."""
    monkeypatch.setattr(stream_reader, "HOT_IDLE_S", 0.2)
    server = start_redis(tmp_path / "redis", appendfsync="always")
    try:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        runs = [f"5{i:031x}" for i in range(10)]  # one bucket
        first = {run_id: add(r, run_id, {"type": "start"}) for run_id in runs}

        async def main() -> tuple[list[list[str]], int, int]:
            nonlocal server
            async with running_hub(server.url) as hub:
                reader = hub.reader(keys.run_part(runs[0], "events"))
                subs = [
                    asyncio.create_task(
                        take(hub.entries(keys.run_part(run_id, "events"), "0-0", run_id), 4)
                    )
                    for run_id in runs
                ]
                await asyncio.sleep(0.8)  # read their start, then turned cold
                cold = len(reader.cold.keys)
                server.stop()
                await asyncio.sleep(0.5)  # both reads fail, and retry
                server = start_redis(tmp_path / "redis", port=server.port, appendfsync="always")
                w = redis.Redis.from_url(server.url, decode_responses=True)
                for run_id in runs:
                    add(w, run_id, {"type": "chunk"})
                    add(w, run_id, {"type": "chunk"})
                await asyncio.sleep(0.3)
                hot = len(reader.hot.keys)
                for run_id in runs:
                    add(w, run_id, {"type": "end"})
                return await asyncio.wait_for(asyncio.gather(*subs), 20), cold, hot

        got, cold, hot = asyncio.run(main())
    finally:
        server.stop()
    assert cold == len(runs), "every stream had turned cold before the restart"
    assert hot == len(runs), "their entries after it made them hot"
    for run_id, ids in zip(runs, got, strict=True):
        assert len(ids) == 4 and ids[0] == first[run_id] and ids == sorted(set(ids)), ids


def test_a_subscriber_joining_behind_the_hub_catches_up_with_no_gap_or_duplicate(
    url: str,
) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    run_id = "a" * 32
    stream = keys.run_part(run_id, "events")

    async def main() -> tuple[list[str], list[str]]:
        async with running_hub(url) as hub:
            first = hub.entries(stream, "0-0", run_id)
            ids = [add(r, run_id, {"type": "chunk", "content": str(i)}) for i in range(5)]
            early = await take(first, 5)  # the hub's cursor is now at ids[4]
            late_task = asyncio.create_task(take(hub.entries(stream, ids[1], run_id), 10))
            await asyncio.sleep(0.05)
            ids.append(add(r, run_id, {"type": "chunk", "content": "x"}))
            ids.append(add(r, run_id, {"type": "end"}))
            rest = await take(first, 2)
            await first.aclose()
            return early + rest, await late_task

    whole, late = asyncio.run(main())
    ids = [i for i, _ in r.xrange(stream)]
    assert whole == ids
    assert late == ids[2:], "(after, hub cursor] from XRANGE, then the hub's entries"


def test_bursts_bring_what_one_read_brought_at_once_with_no_gap_duplicate_or_entry_past_end(
    url: str,
) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    run_id = "b" * 32
    stream = keys.run_part(run_id, "events")

    def add_many(*events: dict[str, Any]) -> list[str]:  # one MULTI: one read brings them all
        pipe = r.pipeline(transaction=True)
        pipe.hset(keys.run(run_id), "status", "running")
        for event in events:
            pipe.xadd(stream, {"data": json.dumps(event)})
        return [str(i) for i in pipe.execute()[1:]]

    async def main() -> tuple[list[list[str] | None], list[list[str] | None]]:
        async with running_hub(url) as hub:
            start = add_many({"type": "start"})
            live = hub.bursts(stream, "0-0", run_id)
            got: list[list[str] | None] = []
            burst = await anext(live)
            got.append(None if burst is None else [e.id for e in burst])
            add_many({"type": "text_start"}, {"type": "chunk", "content": "a"})
            burst = await anext(live)
            got.append(None if burst is None else [e.id for e in burst])

            async def collect(
                bursts: AsyncIterator[list[Entry] | None], into: list[list[str] | None]
            ) -> list[list[str] | None]:
                async for b in bursts:
                    into.append(None if b is None else [e.id for e in b])
                return into

            caught: list[list[str] | None] = []
            behind = asyncio.create_task(collect(hub.bursts(stream, start[0], run_id), caught))
            for _ in range(1000):  # joined behind the hub's cursor: (start, cursor] caught up
                if len(caught) >= 2:
                    break
                await asyncio.sleep(0.005)
            add_many({"type": "chunk", "content": "b"}, {"type": "end"}, {"type": "late"})
            return await collect(live, got), await behind

    got, behind = asyncio.run(main())
    ids = [i for i, _ in r.xrange(stream)]
    assert got == [ids[:1], ids[1:3], ids[3:5]], "a read's entries in one burst, none past end"
    assert behind == [ids[1:2], ids[2:3], ids[3:5]], "caught up an entry at a time, then live"


def test_an_ended_runs_items_are_read_without_a_subscription_and_as_a_subscriber_reads_them(
    url: str,
) -> None:
    """``run_items(..., ended=True)`` (a join after the run): the items a subscriber reads,
    through the ``end``, from any cursor, with no key added to the reader (so no ``CLIENT
    UNBLOCK`` and no ``XREAD`` over every key sent again); and where the stream holds no
    ``end`` yet, on from a subscription with no gap or duplicate."""
    r = redis.Redis.from_url(url, decode_responses=True)
    run_id, open_run = "e" * 32, "d" * 32
    ids = [add(r, run_id, {"type": t}) for t in ("start", "chunk", "chunk", "end")]
    early = [add(r, open_run, {"type": t}) for t in ("start", "chunk")]

    async def items(hub: Hub, run: str, after: str, ended: bool) -> list[str]:
        return [i for i, event in [x async for x in hub.run_items(run, after, ended=ended)]
                if event is not None]  # fmt: skip

    async def main() -> tuple[list[list[str]], int, list[str]]:
        async with running_hub(url) as hub:
            reader = hub.reader(keys.run_part(run_id, "events"))
            got = [await items(hub, run_id, after, True) for after in ("0-0", ids[1])]
            added = reader.hot.version
            got.append(await items(hub, run_id, "0-0", False))  # a subscriber: the control
            late = asyncio.create_task(items(hub, open_run, "0-0", True))
            await asyncio.sleep(0.3)  # it read what is there, then subscribed
            early.append(add(r, open_run, {"type": "end"}))
            return got, added, await asyncio.wait_for(late, 10)

    got, added, late = asyncio.run(main())
    assert got == [ids, ids[2:], ids]
    assert added == 0, "an ended run's read added a key to the reader"
    assert late == early


def test_an_ended_runs_items_come_from_the_head_read_with_its_record_and_on_past_a_full_one(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_items(..., ended=True, head=...)``: a join's first read holds the stream's first
    entries (``thread_joins.join_read``). A head that holds the ``end`` is the whole answer,
    with no read of the stream of its own; past a full head, the rest is read from its last."""
    r = redis.Redis.from_url(url, decode_responses=True)
    short, long = "f" * 32, "c" * 32
    ids = [add(r, short, {"type": t}) for t in ("start", "chunk", "end")]
    long_ids = [add(r, long, {"type": "chunk"}) for _ in range(HEAD + 5)]
    long_ids.append(add(r, long, {"type": "end"}))
    tails: list[str] = []
    real_tail = StreamReader.tail

    def counted(reader: StreamReader, key: str, after: str) -> AsyncIterator[Entry]:
        tails.append(after)
        return real_tail(reader, key, after)

    monkeypatch.setattr(StreamReader, "tail", counted)

    async def items(hub: Hub, run: str) -> list[str]:
        head = r.xrange(keys.run_part(run, "events"), "-", "+", HEAD)
        got = [x async for x in hub.run_items(run, "0-0", ended=True, head=head)]
        return [i for i, event in got if event is not None]

    async def main() -> tuple[list[str], list[str]]:
        async with running_hub(url) as hub:
            return await items(hub, short), await items(hub, long)

    assert asyncio.run(main()) == (ids, long_ids)
    assert tails == [long_ids[HEAD - 1]], "read again only past the full head"


def test_a_slow_subscriber_is_cut_and_the_others_are_not(url: str) -> None:
    r = redis.Redis.from_url(url, decode_responses=True)
    run_id = "b" * 32
    stream = keys.run_part(run_id, "events")

    async def main() -> tuple[str, list[str]]:
        hub = Hub(Settings(redis_url=url, sse_buffer=10))
        hub.start()
        try:
            add(r, run_id, {"type": "start"})
            slow = hub.entries(stream, "0-0", run_id)
            fast_task = asyncio.create_task(take(hub.entries(stream, "0-0", run_id), 100))
            first = await anext(slow)  # subscribed; then it stops reading
            await asyncio.sleep(0.1)
            for i in range(30):  # in two reads: the second finds the slow one behind
                add(r, run_id, {"type": "chunk", "content": str(i)})
                if i == 14:
                    await asyncio.sleep(0.1)
            add(r, run_id, {"type": "end"})
            fast = await fast_task
            with pytest.raises(SlowConsumer):
                while True:
                    await anext(slow)
            return first.id if first else "", fast
        finally:
            await hub.close()

    _, fast = asyncio.run(main())
    assert len(fast) == 32, "start, 30 chunks, end: the fast one was not held back"


def test_an_sse_client_cut_for_being_slow_gets_a_resumable_error_with_no_id() -> None:
    async def cut() -> AsyncIterator[Entry | None]:
        yield Entry("1-0", {"type": "chunk", "content": "a"}, False)
        raise SlowConsumer("more than 10 events behind")

    async def frames() -> list[str]:
        return [f async for f in hub_frames(cut(), 30)]

    first, error = asyncio.run(frames())
    assert first.startswith("id: 1-0\n")
    assert error.startswith("event: error\ndata: ") and "id:" not in error
    data = json.loads(error.split("data: ", 1)[1])
    assert data["type"] == "error" and data["code"] == "slow_consumer" and data["resume"] is True
    assert "Last-Event-ID" in data["message"]


class Swallowing:
    """A reader client whose connect swallows the cancellation it gets (once).

    What a gateway that could not bind its port saw as it stopped on a loaded machine: the
    hub's reader went on to wait for keys, and the process never exited (10 of 12 such stops
    under load before the fix; tests/test_cluster_harness.py is where it showed).
    """

    def __init__(self, uncancel: bool) -> None:
        self.uncancel = uncancel

    async def client_id(self) -> int:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self.uncancel and task is not None:
                task.uncancel()  # as asyncio.timeout does when it takes a cancellation for its own
        return 1

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("uncancel", [False, True], ids=["swallowed", "swallowed-and-uncancelled"])
def test_closing_the_hub_ends_its_reader_even_when_a_cancellation_was_swallowed(
    url: str, uncancel: bool
) -> None:
    async def main() -> float:
        reader = StreamReader(Settings(redis_url=url), lambda **_: Swallowing(uncancel))
        reader.start()
        await asyncio.sleep(0.1)  # the reader is connecting
        t0 = time.monotonic()
        await asyncio.wait_for(reader.close(), 10)
        return time.monotonic() - t0

    assert asyncio.run(main()) < 5
