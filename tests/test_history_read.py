"""A conversation's history read as one JSON array (``reads.history``, ``reads.history_async``:
``lua/history_json.lua``) is the list of its messages as stored, whatever they hold; on one
Redis and on a cluster (``--state-on-cluster``), on the sync and the asyncio client."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis

from tests.redis_cluster import RedisClusterGroup
from walrus_tasks import keys, reads
from walrus_tasks.redis_url import async_client

AGENT = "echo"
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": "hi", "run_id": "r1"},
    {"role": "assistant", "content": 'a "quote", a \\ , a /, ünïcode, 🦭 and\na newline\t'},
    {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "name": "clock",
                                                         "arguments": {"nested": [1, 2.5, None]}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "[]"},
    {"role": "user", "content": "\u0000 and \u001f, escaped"},
]  # fmt: skip


def url_of(r: redis.Redis, state_cluster: RedisClusterGroup | None) -> str:
    if state_cluster is not None:
        return state_cluster.url
    kwargs = r.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"


def test_a_history_reads_back_as_stored_on_either_client(
    r: redis.Redis, sender: str, state_cluster: RedisClusterGroup | None
) -> None:
    key = keys.conv(keys.cid(AGENT, sender), "history")
    assert reads.history(r, AGENT, sender) == []
    stored = [json.dumps(m, ensure_ascii=escaped) for escaped in (False, True) for m in MESSAGES]
    r.rpush(key, *stored)
    by_message = [json.loads(m) for m in r.lrange(key, 0, -1)]  # type: ignore[union-attr]
    assert by_message == MESSAGES * 2
    assert reads.history(r, AGENT, sender) == by_message

    async def read_async() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        aredis = async_client(url_of(r, state_cluster), decode_responses=True)
        try:
            return (
                await reads.history_async(aredis, AGENT, sender),
                await reads.history_async(aredis, AGENT, sender + "-none"),
            )
        finally:
            await aredis.aclose()

    assert asyncio.run(read_async()) == (by_message, [])
