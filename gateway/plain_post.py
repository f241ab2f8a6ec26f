"""A face's ``POST`` that asks for its run's stream, answered below FastAPI.

FastAPI keeps a request's machinery alive for as long as its response is, and a stream's
response lasts as long as its client listens: the route handler, the ``AsyncExitStack``s of
the request and its dependencies, Starlette's exception wrappers and the parsed request, ~10 KB
a stream (docs/benchmarks.md, issue 25, fourth round). :func:`streaming_post` makes a route's
request a :class:`gateway.sse_route.PlainStream` when its JSON body asks for a stream, with the
body validated as FastAPI validates it (:func:`body_of`) and answered by the function the route
calls. Everything else (no stream asked, a body FastAPI would refuse) goes on to the FastAPI
route, so its answers, its 422 among them, are the ones clients get.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter
from pydantic import BaseModel, ValidationError
from starlette.types import Scope

from gateway import sse_route
from gateway.deps import caller_of
from gateway.errors import Render
from gateway.hub import Hub
from gateway.json_guard import is_json
from gateway.sse_route import header
from walrus_tasks.config import Config
from walrus_tasks.json_depth import loads_checked
from walrus_tasks.tenancy import Caller

M = TypeVar("M", bound=BaseModel)


def body_of(scope: Scope, query: sse_route.Query, model: type[M]) -> M | None:
    """The request's body as ``model``, as FastAPI reads it: parsed as JSON, then validated.

    None where FastAPI would not parse it as JSON, or would refuse it, or where it nests past
    the limit (``gateway.json_guard``, behind the plain streams, answers its 422).
    """
    if not is_json(scope):
        return None
    try:
        return model.model_validate(loads_checked(query.body))
    except (ValueError, ValidationError):
        return None


def streaming_post(
    router: APIRouter,
    path: str,
    model: type[M],
    answer: Callable[[M, Scope], Awaitable[Any]],
    render: Render | None = None,
) -> sse_route.PlainStream:
    """``POST path`` of ``router`` when its ``model`` body's ``stream`` is true.

    Answered by ``answer(body, scope)``, its errors in ``render``'s shape (ours by default).
    """

    async def plain(scope: Scope, params: dict[str, str], query: sse_route.Query) -> Any:
        if b'"stream"' not in query.body:  # not a stream: read no further
            return None
        body = body_of(scope, query, model)
        if body is None or getattr(body, "stream", None) is not True:
            return None
        return await answer(body, scope)

    return sse_route.plain(router, path, plain, render, method="POST")


SenderAnswer = Callable[
    [M, redis.Redis, aioredis.Redis, Hub, Config, Caller, str | None], Awaitable[Any]
]
"""A face's answer to a body from ``(body, redis, its asyncio client, hub, config, caller,
X-Walrus-Sender)``."""


def with_sender(answer: SenderAnswer[M]) -> Callable[[M, Scope], Awaitable[Any]]:
    """``answer`` as :func:`streaming_post` calls it: its arguments taken from the request."""

    async def answered(body: M, scope: Scope) -> Any:
        state = scope["app"].state
        sender = header(scope, b"x-walrus-sender")
        return await answer(
            body, state.redis, state.aredis, state.hub, state.config, caller_of(scope), sender
        )

    return answered
