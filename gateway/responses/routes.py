"""The routes of the Responses face: create, retrieve (or stream again), cancel, delete, inputs.

Errors come out in OpenAI's shape through the chat face's one renderer
(``gateway.openai_compat.OpenAIRoute``): 404 for an unknown model or response (another tenant's
included), 400 for input the face cannot read, 422 for a body that is not a request at all.

No ``from __future__ import annotations``: FastAPI resolves the endpoint annotations at runtime.
"""

import asyncio
from typing import Annotated, Any, Literal

import redis
from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from gateway import operations as ops
from gateway import response_operations as resp_ops
from gateway import sse_route
from gateway.deps import Cfg, Redis, Sets, StreamHub, Who, caller_of
from gateway.errors import responses
from gateway.hub import Hub
from gateway.openai_compat import OpenAIRoute, openai_error
from gateway.plain_post import streaming_post
from gateway.response_operations import ResponseView
from gateway.responses.create import fold, start
from gateway.responses.models import (
    BadRequest,
    DeletedResponse,
    InputItemList,
    ResponseCreate,
    ResponseObject,
)
from gateway.responses.stream import event_stream, settle
from gateway.responses.translate import Translator
from gateway.sse import EventStream
from gateway.stream_limit import hold_stream
from walrus_tasks.config import Config
from walrus_tasks.settings import Settings
from walrus_tasks.tenancy import Caller

CANCEL_WAIT = 30.0
"""Seconds a cancel waits for the run to end before it answers with the response as it is."""

ERRORS = responses({400: "input the face cannot read", 404: "unknown model or response",
                    409: "the function calls were answered already", 413: "body too large",
                    422: "not a request body"})  # fmt: skip
SSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}

router = APIRouter(route_class=OpenAIRoute, tags=["OpenAI Responses"])


class _Finisher:
    """Keeps a response's final object once it has ended (a :data:`Finish`).

    Slotted, not a closure: a stream keeps it for as long as it is open.
    """

    __slots__ = ("r", "ttl")

    def __init__(self, r: redis.Redis, ttl: int) -> None:
        self.r, self.ttl = r, ttl

    async def __call__(self, view: ResponseView, final: dict[str, Any]) -> None:
        await run_in_threadpool(resp_ops.finish, self.r, view, final, self.ttl)


@router.post("/v1/responses", response_model=ResponseObject, responses={**ERRORS, **SSE})
async def create_response(
    body: ResponseCreate, r: Redis, hub: StreamHub, config: Cfg, settings: Sets, who: Who
) -> Any:
    """Send the input to agent ``model``; the response once it has ended.

    With ``background`` the response at once (poll it, or stream it by id); with ``stream``
    its events.
    """
    return await _create(body, r, hub, config, settings, who)


async def _create(
    body: ResponseCreate, r: redis.Redis, hub: Hub, config: Config, settings: Settings, who: Caller
) -> Any:
    """What :func:`create_response` answers (its plain stream route's too)."""
    if body.stream:
        hold_stream()  # before the run is submitted: a refused stream starts nothing
    view = await run_in_threadpool(start, r, config, who, body, settings.events_ttl)
    finish = _Finisher(r, settings.events_ttl)
    if body.stream:
        return event_stream(hub, view, -1, finish)
    if body.background:
        return JSONResponse((await run_in_threadpool(fold, r, view)).snapshot())
    t = await settle(hub, Translator(view))
    final = t.snapshot()
    await finish(view, final)
    return JSONResponse(final)


@router.get(
    "/v1/responses/{response_id}", response_model=ResponseObject, responses={**ERRORS, **SSE}
)
async def retrieve_response(
    response_id: str,
    r: Redis,
    hub: StreamHub,
    settings: Sets,
    who: Who,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=0)] = None,
) -> Any:
    """The response as it stands; with ``stream=true`` its events (after ``starting_after``).

    A ``store: false`` response is a 404 once it has ended.
    """
    if stream:  # in the gateway app, answered by gateway.sse_route (PLAIN_STREAM), the same way
        return await _stream_again(r, hub, settings.events_ttl, who, response_id, starting_after)
    view = await run_in_threadpool(resp_ops.get_response, r, response_id, who)
    finish = _Finisher(r, settings.events_ttl)
    if view.final is not None:
        return JSONResponse(view.final)
    t = await run_in_threadpool(fold, r, view)
    final = t.snapshot()
    if t.terminal:
        await finish(view, final)
        if not view.store:
            raise resp_ops.unknown(response_id)
    return JSONResponse(final)


async def _stream_again(
    r: redis.Redis, hub: Any, ttl: int, who: Caller, response_id: str, starting_after: int | None
) -> EventStream:
    """The response's events after ``starting_after`` (None: from the first)."""
    view = await run_in_threadpool(resp_ops.get_response, r, response_id, who)
    hold_stream()
    after = -1 if starting_after is None else starting_after
    return event_stream(hub, view, after, _Finisher(r, ttl))


TRUE = frozenset({"1", "true", "t", "yes", "y", "on"})
"""What FastAPI reads as ``stream=true``."""


def _streams_plainly(query: sse_route.Query) -> bool:
    """``?stream=true``, with ``starting_after`` absent or a plain number.

    Any other request goes on to FastAPI: the JSON response, or its 422 for a bad
    ``starting_after``.
    """
    after = query.one("starting_after")
    return (query.one("stream") or "").lower() in TRUE and (after is None or after.isdigit())


async def _plain_stream(
    scope: Scope, params: dict[str, str], query: sse_route.Query
) -> EventStream:
    state = scope["app"].state
    after = query.one("starting_after")
    return await _stream_again(
        state.redis, state.hub, state.settings.events_ttl, caller_of(scope),
        params["response_id"], None if after is None else int(after),
    )  # fmt: skip


PLAIN_STREAM = sse_route.plain(
    router, "/v1/responses/{response_id}", _plain_stream, openai_error, _streams_plainly
)
"""``GET /v1/responses/{id}?stream=true`` for :mod:`gateway.sse_route`."""


@router.post("/v1/responses/{response_id}/cancel", response_model=ResponseObject, responses=ERRORS)
async def cancel_response(
    response_id: str, r: Redis, hub: StreamHub, settings: Sets, who: Who
) -> Any:
    """Cancel the response's run; the response once the run has ended (``cancelled``).

    A response that has ended is answered as it is; one that stopped at client function calls
    also ends the run that waits for their answers.
    """
    view = await run_in_threadpool(resp_ops.get_response, r, response_id, who)
    t = await run_in_threadpool(fold, r, view)
    if not t.terminal or t.pending:
        await run_in_threadpool(ops.cancel_run_id, r, view.run_id, who)
    if not t.terminal:
        try:
            t = await asyncio.wait_for(settle(hub, Translator(view)), CANCEL_WAIT)
        except TimeoutError:
            t = await run_in_threadpool(fold, r, view)
    final = view.final or t.snapshot()
    if t.terminal:
        await _Finisher(r, settings.events_ttl)(view, final)
    return JSONResponse(final)


@router.delete("/v1/responses/{response_id}", response_model=DeletedResponse, responses=ERRORS)
def delete_response(response_id: str, r: Redis, who: Who) -> DeletedResponse:
    """Delete the response's record: it is a 404 from now on (its run is not touched)."""
    resp_ops.delete_response(r, response_id, who)
    return DeletedResponse(id=response_id)


@router.get(
    "/v1/responses/{response_id}/input_items", response_model=InputItemList, responses=ERRORS
)
def list_input_items(
    response_id: str,
    r: Redis,
    who: Who,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> InputItemList:
    """The request's input items (``desc``: newest first), ``limit`` after item ``after``."""
    view = resp_ops.get_response(r, response_id, who)
    items = view.input if order == "asc" else view.input[::-1]
    first = 0
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise BadRequest(f"after: response {response_id} has no input item {after!r}")
        first = ids.index(after) + 1
    page = items[first : first + limit]
    return InputItemList(
        data=page,
        first_id=page[0]["id"] if page else None,
        last_id=page[-1]["id"] if page else None,
        has_more=first + limit < len(items),
    )


async def _plain_create(body: ResponseCreate, scope: Scope) -> Any:
    state, who = scope["app"].state, caller_of(scope)
    return await _create(body, state.redis, state.hub, state.config, state.settings, who)


PLAIN_CREATE = streaming_post(router, "/v1/responses", ResponseCreate, _plain_create, openai_error)
"""``POST /v1/responses`` with ``"stream": true``, below FastAPI (``gateway.plain_post``)."""
