"""Our Redis clients read replies with hiredis, redis-py's C parser.

A pyproject dependency (docs/benchmarks.md, issue 25, twenty-first round: a join of an ended
run cost the gateway 27 % less CPU with it). redis-py falls back to its Python parser without a
word when hiredis cannot be imported, so the loss of it would show only as CPU.
"""

from __future__ import annotations

from redis._parsers import _AsyncHiredisParser, _HiredisParser

from walrus_tasks.connection import async_redis, client

URL = "redis://127.0.0.1:1/0"  # never connected to: the clients are only built


def test_the_sync_and_asyncio_clients_parse_with_hiredis() -> None:
    sync = client(URL)
    assert isinstance(sync.connection_pool.make_connection()._parser, _HiredisParser)
    aio = async_redis(URL)
    assert isinstance(aio.connection_pool.make_connection()._parser, _AsyncHiredisParser)
