"""Redis clients, one per process (re-created after a fork)."""

from __future__ import annotations

import os

import redis
import redis.asyncio as aioredis

from walrus_tasks.settings import get_settings

_sync: tuple[int, redis.Redis] | None = None


def get_redis() -> redis.Redis:
    """The process's synchronous client (decoded strings); safe across ``fork``."""
    global _sync
    if _sync is None or _sync[0] != os.getpid():
        _sync = (os.getpid(), redis.Redis.from_url(get_settings().redis_url, decode_responses=True))
    return _sync[1]


def async_redis(url: str | None = None, read_timeout: float | None = None) -> aioredis.Redis:
    """A new asyncio client (the gateway keeps one for its lifetime).

    ``read_timeout`` must exceed the longest ``XREAD BLOCK`` the client sends: redis-py's
    default socket timeout (5 s) would cut a longer blocking read short with a TimeoutError.
    """
    url = url or get_settings().redis_url
    if read_timeout is None:
        return aioredis.Redis.from_url(url, decode_responses=True)
    return aioredis.Redis.from_url(
        url, decode_responses=True, socket_timeout=read_timeout, socket_connect_timeout=5
    )
