"""The Lua scripts behind every atomic conversation write (sources in ``lua/``)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

import redis
import redis.asyncio as aioredis


@cache
def source(name: str) -> str:
    """The text of script ``name``, with the shared prelude in front."""
    lua = files("walrus_tasks") / "lua"
    return (lua / "prelude.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


_registered: dict[tuple[int, str], Any] = {}


def call(r: redis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    """Run script ``name`` (EVALSHA, loading it on first use) on a synchronous client."""
    key = (id(r), name)
    script = _registered.get(key)
    if script is None:
        script = _registered[key] = r.register_script(source(name))
    return script(keys=keys, args=args)


async def acall(r: aioredis.Redis, name: str, keys: list[str], args: list[Any]) -> Any:
    """Run script ``name`` on an asyncio client."""
    key = (id(r), name)
    script = _registered.get(key)
    if script is None:
        script = _registered[key] = r.register_script(source(name))
    return await script(keys=keys, args=args)
