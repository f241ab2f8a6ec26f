"""Event streams that follow a run, answered by a plain ASGI middleware, not by FastAPI.

Why: an SSE stream keeps its whole request alive while it is open. Measured with tracemalloc
on 2 000 open streams, FastAPI's request and response wrapping (its exception wrappers, two
``AsyncExitStack``s, the dependency solving, the coroutine frames of each layer) held about
10 KB of each stream's ~30 KB; at 10 000 streams per process that is 100 MB. This middleware
is the innermost of the gateway's (the origin, body-limit and bearer checks, the tenant
routes' token check and the metrics have run), and answers the ``GET`` of each
:class:`PlainStream` with the function its FastAPI route calls, so the contract (validation,
errors in the face's shape, resuming with ``Last-Event-ID``) is one piece of code. The FastAPI
routes stay: they are the OpenAPI entries (and answer ``HEAD`` and other methods).

The streams served so: the native ``GET /v1/runs/{run_id}/events``, the Agent Protocol's
``GET /threads/{thread_id}/runs/{run_id}/stream`` and the Responses face's ``GET
/v1/responses/{id}?stream=true`` (clients rejoining a run: at 10 000 such streams FastAPI's
wrapping made up a third of the memory of each, docs/benchmarks.md), and A2A's JSON-RPC
``SubscribeToTask`` (a ``POST``: its body, declared by ``Content-Length``, is read here, and
given again to the app behind when the stream's answer leaves the request to it), and each
``POST`` that asks for its new run's stream: the native message, the OpenAI chat completion,
the Anthropic message and the Responses create (``gateway.plain_post``), and the MCP face's
2026-07-28 ``tools/call`` with a progress token (``gateway.mcp_plain``).

Three answers that are not streams are given here too, for CPU rather than memory: the Agent
Protocol's background ``POST /threads/{thread_id}/runs`` and its ``GET
.../runs/{run_id}/join``, the two calls of every background run a LangGraph client makes, and
the native message's ``202`` (the message not asking for its stream). Their FastAPI routing,
dependency solving and request wrapping were a quarter to a third of the gateway's CPU under
them (docs/benchmarks.md, issue 25, ninth and eleventh rounds).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import sse
from gateway.auth import replay
from gateway.errors import MAPPED, Render, failure_response

Answer = Callable[[Scope, dict[str, str], "Query"], Awaitable[Response | None]]
"""``(scope, path parameters, query)`` -> the stream (or raises a mapped error); None leaves
the request to the app behind (a ``POST`` that is not the stream's, or one whose every error
the app answers in its own shape)."""


@dataclass(frozen=True)
class Query:
    """What a stream request carries besides its path: query parameters, ``Last-Event-ID``."""

    params: dict[str, list[str]]
    last_event_id: str | None
    body: bytes = b""
    """A ``POST``'s body."""

    def one(self, name: str) -> str | None:
        """The last value of parameter ``name`` (None if absent)."""
        values = self.params.get(name)
        return values[-1] if values else None

    @classmethod
    def of(cls, scope: Scope) -> Query:
        """The query of request ``scope``."""
        last_event_id = header(scope, b"last-event-id")
        return cls(parse_qs(scope["query_string"].decode("latin-1")), last_event_id)


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case), as FastAPI's ``Header()`` reads it."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


@dataclass(frozen=True)
class PlainStream:
    """One stream route answered here (a ``GET``, or ``method``): its path, answer, error shape."""

    route: BaseRoute | None
    """The route it stands for (what the metrics label the request with; None: the metrics
    find it by the path)."""
    path: re.Pattern[str]
    answer: Answer
    render: Render | None = None
    """The shape of its errors (None: the native one)."""
    when: Callable[[Query], bool] | None = None
    """Which requests of the path are answered here (None: all); the others go on to FastAPI,
    which answers them as before: a route that streams only with ``?stream=true``, or a query
    parameter this function would have to validate as FastAPI does."""
    method: str = "GET"


def plain(
    router: APIRouter,
    path: str,
    answer: Answer,
    render: Render | None = None,
    when: Callable[[Query], bool] | None = None,
    method: str = "GET",
) -> PlainStream:
    """The ``method`` route ``path`` of ``router``, to be answered by ``answer``."""
    route = next(
        r for r in router.routes
        if isinstance(r, APIRoute) and r.path == path and method in (r.methods or ())
    )  # fmt: skip
    return PlainStream(route, pattern(path), answer, render, when, method)


def pattern(path: str) -> re.Pattern[str]:
    """The regular expression of route path ``path`` (``{name}`` is one path segment)."""
    return re.compile("^" + re.sub(r"{(\w+)}", r"(?P<\1>[^/]+)", path) + "$")


async def _run_events(scope: Scope, params: dict[str, str], query: Query) -> Response:
    hub = scope["app"].state.hub
    return await sse.run_events(hub, params["run_id"], query.last_event_id, query.one("after"))


def native(router: APIRouter) -> PlainStream:
    """``GET /v1/runs/{run_id}/events`` of ``router`` (``sse.run_events``)."""
    return plain(router, "/v1/runs/{run_id}/events", _run_events)


def install(app: FastAPI, streams: Sequence[PlainStream]) -> None:
    """Serve ``streams`` with :class:`StreamRoutes`.

    Call it before the other middlewares are added, so it runs after them (innermost).
    """
    app.add_middleware(StreamRoutes, streams=tuple(streams))


class StreamRoutes:
    """ASGI middleware: serve the request of each plain stream; pass everything else on."""

    def __init__(self, app: ASGIApp, streams: tuple[PlainStream, ...]) -> None:
        self.app = app
        self.streams = streams
        self.methods = frozenset(s.method for s in streams)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer a stream, or an error in its face's shape."""
        response = None
        if scope["type"] == "http" and scope["method"] in self.methods:
            response, receive = await self._response(scope, receive)
        if response is None:
            await self.app(scope, receive, send)
            return
        # Only this frame stays suspended while the stream is open: nothing else of the
        # request (its match, its query) is kept for as long as the client listens.
        await response(scope, receive, send)

    async def _response(self, scope: Scope, receive: Receive) -> tuple[Response | None, Receive]:
        """The stream (or its error) if one of the plain streams takes ``scope``; else None.

        With the ``receive`` the app behind is to read the request from.
        """
        for stream in self.streams:
            if stream.method != scope["method"]:
                continue
            if (match := stream.path.match(scope["path"])) is None:
                continue
            query = Query.of(scope)
            passed_on = receive
            if stream.method != "GET":
                body = await _body(scope, receive)
                if body is None:  # no declared length, or the client left: the app reads it
                    return None, receive
                query = replace(query, body=body)
                passed_on = replay(body, receive)
            if stream.when is not None and not stream.when(query):
                return None, passed_on
            if stream.route is not None:
                scope["route"] = stream.route
            try:
                response = await stream.answer(scope, match.groupdict(), query)
            except MAPPED as e:
                response = failure_response(e, stream.render)
            return response, (receive if response is not None else passed_on)
        return None, receive


async def _body(scope: Scope, receive: Receive) -> bytes | None:
    """A request's body of a declared ``Content-Length`` (the body limit checked it before).

    None, reading nothing, for a body without one (chunked): the app reads it itself. None
    too if the client leaves before it is whole.
    """
    if header(scope, b"content-length") is None:
        return None
    chunks = []
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)
