"""The Lua scripts behind every atomic conversation write (sources in ``lua/``)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from typing import Any

import redis

from walrus_tasks import keys

LIBRARIES = ("fence", "runs", "fair")
"""``lua/lib/*.lua``, put in front of every script after the key schema."""


@cache
def source(name: str) -> str:
    """The text of script ``name``, after the key schema (``keys.lua_library``) and libraries."""
    lua = files("walrus_tasks") / "lua"
    parts = [keys.lua_library()]
    parts += [(lua / "lib" / f"{lib}.lua").read_text() for lib in LIBRARIES]
    parts.append((lua / f"{name}.lua").read_text())
    return "\n".join(parts)


_registered: dict[tuple[int, str], Any] = {}


def call(
    r: redis.Redis,
    name: str,
    keys: list[str],
    args: list[Any],
    pipe: redis.client.Pipeline | None = None,
) -> Any:
    """Run script ``name`` (EVALSHA, loading it on first use) on a synchronous client.

    With ``pipe`` (a pipeline of ``r``), queue the call there instead. A server that lost the
    script (a replica promoted by a failover, a restart) answers ``NOSCRIPT``; redis-py then
    loads it again and retries (``tests/test_failover.py`` checks).
    """
    key = (id(r), name)
    script = _registered.get(key)
    if script is None:
        script = _registered[key] = r.register_script(source(name))
    return script(keys=keys, args=args, client=pipe)
