"""FastAPI dependencies shared by the route modules: the app's config, settings, and names.

No ``from __future__ import annotations``: FastAPI resolves the ``Annotated`` aliases at runtime.

The config is read from ``app.state.config`` on each request (a reload replaces it), so routers
are module-level objects that need no closure over the app.

The dependencies are ``async def`` although none awaits: FastAPI runs a plain ``def`` dependency
in its thread pool, a thread hop (and a wake-up of the event loop) for what is a dict read; a
request of the Agent Protocol face resolved four or five of them (docs/benchmarks.md, "Where the
time goes"). Checks that faces also call directly keep a plain twin (``known_agent``,
``valid_run_id``).
"""

from collections.abc import MutableMapping
from typing import Annotated, Any

import redis
import redis.asyncio as aioredis
from fastapi import Depends, Request

from gateway import operations
from gateway.auth import GRANT_KEY
from gateway.hub import Hub
from walrus_tasks.config import Config
from walrus_tasks.errors import InvalidInput
from walrus_tasks.names import RUN_ID_RE
from walrus_tasks.settings import Settings
from walrus_tasks.tenancy import Caller


async def current_config(request: Request) -> Config:
    """The app's current config."""
    return request.app.state.config  # type: ignore[no-any-return]


async def current_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings  # type: ignore[no-any-return]


async def sync_redis(request: Request) -> redis.Redis:
    """The app's synchronous client, of the Redis its settings name."""
    return request.app.state.redis  # type: ignore[no-any-return]


async def async_redis(request: Request) -> aioredis.Redis:
    """The app's asyncio Redis client (for reading streams)."""
    return request.app.state.aredis  # type: ignore[no-any-return]


async def stream_hub(request: Request) -> Hub:
    """The app's stream hub (every run stream and the feed are read through it)."""
    return request.app.state.hub  # type: ignore[no-any-return]


def caller_of(scope: MutableMapping[str, Any]) -> Caller:
    """The caller of a request or socket: its token's tenant (admin: none, or no tokens)."""
    grant = scope.get(GRANT_KEY)
    return Caller(getattr(grant, "tenant", None))


async def current_caller(request: Request) -> Caller:
    """The caller of this request (``caller_of``)."""
    return caller_of(request.scope)


Cfg = Annotated[Config, Depends(current_config)]
Sets = Annotated[Settings, Depends(current_settings)]
Redis = Annotated[redis.Redis, Depends(sync_redis)]
ARedis = Annotated[aioredis.Redis, Depends(async_redis)]
StreamHub = Annotated[Hub, Depends(stream_hub)]
Who = Annotated[Caller, Depends(current_caller)]


def known_agent(agent: str, config: Cfg) -> str:
    """The path's ``agent`` if configured (checked before the body is read)."""
    return operations.known_agent(config, agent)


def valid_run_id(run_id: str) -> str:
    """The path's ``run_id`` if it looks like one (InvalidInput otherwise)."""
    if not RUN_ID_RE.fullmatch(run_id):
        raise InvalidInput(f"invalid run id {run_id!r}")
    return run_id


async def _known_agent(agent: str, config: Cfg) -> str:
    return known_agent(agent, config)


async def _valid_run_id(run_id: str) -> str:
    return valid_run_id(run_id)


Agent = Annotated[str, Depends(_known_agent)]
RunId = Annotated[str, Depends(_valid_run_id)]
