"""The Lua scripts behind every atomic conversation write (sources in ``lua/``).

Each script is run with its spec (``walrus_tasks.script_args``): its arguments are given by
name and ordered by the spec, and its reply is read by the spec's parser, so a caller gets a
typed value and never counts ARGV positions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from walrus_tasks import keys
from walrus_tasks.script_args import SCRIPTS, Script

T = TypeVar("T")

LIBRARIES = ("fence", "runs", "outcome", "fair", "step")
"""``lua/lib/*.lua``, put in front of every script after the key schema."""


@cache
def source(name: str) -> str:
    """The text of script ``name``, as Redis runs it.

    The key schema (``keys.lua_library``), the libraries, the prelude that names its ARGV
    (``Script.prelude``), then the script.
    """
    lua = files("walrus_tasks") / "lua"
    parts = [keys.lua_library()]
    parts += [(lua / "lib" / f"{lib}.lua").read_text() for lib in LIBRARIES]
    parts.append(SCRIPTS[name].prelude())
    parts.append((lua / f"{name}.lua").read_text())
    return "\n".join(parts)


_registered: dict[tuple[int, str], Any] = {}


def _registered_script(r: redis.Redis | aioredis.Redis, name: str) -> Any:
    key = (id(r), name)
    script = _registered.get(key)
    if script is None:
        script = _registered[key] = r.register_script(source(name))
    return script


def call(r: redis.Redis, script: Script[T], keys_: Sequence[str], args: Mapping[str, Any]) -> T:
    """Run ``script`` (EVALSHA, loading it on first use) with ``args`` by name; its typed reply.

    A missing or unknown argument name raises TypeError before Redis is called. A server that
    lost the script (a replica promoted by a failover, a restart) answers ``NOSCRIPT``; it is
    then loaded and sent again (``tests/test_failover.py`` checks). The ``EVALSHA`` goes out
    as a bare command, not through redis-py's ``Script`` (its type checks and wrappers cost a
    worker's pool process ~3 % of its CPU; docs/benchmarks.md, issue 25, twenty-third round).
    """
    command = ("EVALSHA", _sha(script.name), len(keys_), *keys_, *script.argv(args))
    try:
        reply = r.execute_command(*command)  # type: ignore[no-untyped-call]
    except NoScriptError:
        r.script_load(source(script.name))
        reply = r.execute_command(*command)  # type: ignore[no-untyped-call]
    return script.reply(reply)


async def call_async(
    r: aioredis.Redis, script: Script[T], keys_: Sequence[str], args: Mapping[str, Any]
) -> T:
    """:func:`call` on an asyncio client."""
    command = ("EVALSHA", _sha(script.name), len(keys_), *keys_, *script.argv(args))
    try:
        reply = await r.execute_command(*command)  # type: ignore[no-untyped-call]
    except NoScriptError:
        await r.script_load(source(script.name))
        reply = await r.execute_command(*command)  # type: ignore[no-untyped-call]
    return script.reply(reply)


def queue(
    r: redis.Redis,
    pipe: redis.client.Pipeline,
    script: Script[Any],
    keys_: Sequence[str],
    args: Mapping[str, Any],
) -> None:
    """Queue ``script`` on ``pipe`` (a pipeline of ``r``); read its reply with ``script.reply``."""
    argv = script.argv(args)
    _registered_script(r, script.name)(keys=list(keys_), args=argv, client=pipe)


def queue_async(
    pipe: aioredis.client.Pipeline,
    script: Script[Any],
    keys_: Sequence[str],
    args: Mapping[str, Any],
) -> None:
    """Queue ``script`` on ``pipe`` (an asyncio client's pipeline) as a bare ``EVALSHA``.

    Not as :func:`queue` does: redis-py sends a ``SCRIPT EXISTS`` round trip before a pipeline
    that holds a registered script. A server that lost the script answers ``NOSCRIPT`` in its
    reply's place (:func:`load_async` it, then send again). Read the reply with ``script.reply``.
    """
    argv = script.argv(args)
    pipe.evalsha(_sha(script.name), len(keys_), *keys_, *argv)


@cache
def _sha(name: str) -> str:
    return hashlib.sha1(source(name).encode()).hexdigest()


async def load_async(aredis: aioredis.Redis, *scripts_: Script[Any]) -> None:
    """Load ``scripts_`` into ``aredis``'s server (after a ``NOSCRIPT``: a restart, a failover)."""
    for script in scripts_:
        await aredis.script_load(source(script.name))
