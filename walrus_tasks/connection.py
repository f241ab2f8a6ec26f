"""Redis clients, one per process (re-created after a fork).

``WALRUS_REDIS_URL`` may name a Sentinel group (``walrus_tasks.redis_url``): the clients then
ask the sentinels for the master on every new connection, and so follow a failover.
"""

from __future__ import annotations

import os
from typing import Any

import redis
import redis.asyncio as aioredis

from walrus_tasks.redis_url import async_client, sync_client
from walrus_tasks.settings import get_settings

_sync: tuple[int, redis.Redis] | None = None


def get_redis() -> redis.Redis:
    """The process's synchronous client (decoded strings); safe across ``fork``."""
    global _sync
    if _sync is None or _sync[0] != os.getpid():
        _sync = (os.getpid(), client())
    return _sync[1]


def client(url: str | None = None, **kwargs: Any) -> redis.Redis:
    """A new synchronous client (decoded strings) of ``url``, by default the state Redis."""
    return sync_client(url or get_settings().redis_url, decode_responses=True, **kwargs)


def async_redis(
    url: str | None = None, read_timeout: float | None = None, pool_size: int | None = None
) -> aioredis.Redis:
    """A new asyncio client (the gateway keeps one for its lifetime).

    ``read_timeout`` must exceed the longest ``XREAD BLOCK`` the client sends: redis-py's
    default socket timeout (5 s) would cut a longer blocking read short with a TimeoutError.
    ``pool_size``: at most that many connections, a command waiting for a free one
    (``redis_url.async_client``).
    """
    url = url or get_settings().redis_url
    if read_timeout is None:
        return async_client(url, pool_size, decode_responses=True)
    return async_client(
        url, pool_size, decode_responses=True, socket_timeout=read_timeout,
        socket_connect_timeout=5,
    )  # fmt: skip
