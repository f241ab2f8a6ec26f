"""The gateway's reads under many streams: one read shared per event, a bounded Redis pool.

``gateway/shared_reads.py`` (plain asyncio) and ``walrus_tasks.redis_url.async_client`` with a
``pool_size`` against real Redis servers (one, and a Sentinel group).
"""

from __future__ import annotations

import asyncio
import uuid

from gateway.shared_reads import SharedReads
from tests.conftest import redis_db_url
from tests.ha import SentinelGroup
from walrus_tasks.redis_server import RedisServer
from walrus_tasks.redis_url import async_client


def test_reads_of_one_key_in_flight_share_one_fetch_and_a_later_one_fetches_again() -> None:
    fetched: list[int] = []

    async def main() -> None:
        reads: SharedReads[int] = SharedReads()

        async def fetch() -> int:
            fetched.append(1)
            n = len(fetched)
            await asyncio.sleep(0.05)
            return n

        answers = await asyncio.gather(*(reads.read("k", fetch) for _ in range(300)))
        assert answers == [1] * 300 and len(reads) == 0
        assert await reads.read("k", fetch) == 2  # answered reads are not kept
        assert await asyncio.gather(reads.read("a", fetch), reads.read("b", fetch)) == [3, 4]

    asyncio.run(main())
    assert len(fetched) == 4


def test_a_cancelled_reader_leaves_the_read_to_the_others_and_errors_reach_all() -> None:
    async def main() -> None:
        reads: SharedReads[str] = SharedReads()

        async def slow() -> str:
            await asyncio.sleep(0.1)
            return "done"

        first = asyncio.ensure_future(reads.read("k", slow))
        second = asyncio.ensure_future(reads.read("k", slow))
        await asyncio.sleep(0.01)
        first.cancel()
        assert await second == "done"

        async def broken() -> str:
            await asyncio.sleep(0.01)
            raise ConnectionError("redis away")

        outcomes = await asyncio.gather(
            *(reads.read("e", broken) for _ in range(3)), return_exceptions=True
        )
        assert [type(o) for o in outcomes] == [ConnectionError] * 3

    asyncio.run(main())


async def _many_blocking_commands(url: str, pool_size: int, commands: int) -> int:
    """Run ``commands`` 0.2 s BLPOPs at once on one bounded client; the most clients seen."""
    client = async_client(url, pool_size, decode_responses=True)
    key = f"walrus:test:pool:{uuid.uuid4().hex}"
    seen = 0

    async def count() -> None:
        nonlocal seen
        while True:
            seen = max(seen, len(await probe.client_list()))
            await asyncio.sleep(0.02)

    probe = async_client(url, decode_responses=True)
    before = len(await probe.client_list())
    counter = asyncio.ensure_future(count())
    try:
        results = await asyncio.gather(*(client.blpop([key], timeout=0.2) for _ in range(commands)))
        assert results == [None] * commands  # every one answered: none refused by the pool
    finally:
        counter.cancel()
        for c in (client, probe):
            await c.aclose()
            # A Sentinel master's client leaves the sentinels' own clients open: close them
            # here, or their collection at some later test warns (and, under Playwright's
            # greenlets, fails it).
            if (sentinels := getattr(c.connection_pool, "sentinel_manager", None)) is not None:
                await sentinels.aclose()
    return seen - before


def test_a_bounded_client_waits_for_a_connection_instead_of_failing(
    redis_server: RedisServer,
) -> None:
    opened = asyncio.run(_many_blocking_commands(redis_db_url(redis_server), 4, 12))
    assert 1 <= opened <= 4 + 1  # its pool, and the probe's own connection


def test_a_bounded_client_of_a_sentinel_group_waits_too(sentinel_group: SentinelGroup) -> None:
    opened = asyncio.run(_many_blocking_commands(sentinel_group.url, 3, 9))
    assert 1 <= opened <= 3 + 1
