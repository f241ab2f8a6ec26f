"""``GET /v1/runs/{run_id}/events`` answered by a plain ASGI middleware, not by FastAPI.

Why: an SSE stream keeps its whole request alive while it is open. Measured with tracemalloc
on 2 000 open streams, FastAPI's request and response wrapping (its exception wrappers, two
``AsyncExitStack``s, the dependency solving, the coroutine frames of each layer) held about
10 KB of each stream's ~30 KB; at 10 000 streams per process that is 100 MB. This middleware
is the innermost of the gateway's (the origin, body-limit and bearer checks and the metrics
have run), and answers that one route with :func:`gateway.sse.run_events`, the function the
FastAPI route calls, so the contract (validation, 404/422 and their error shapes, resuming
with ``Last-Event-ID`` or ``?after=``) is one piece of code. The FastAPI route stays: it is
the route's OpenAPI entry (and answers other methods with 405).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import sse
from gateway.errors import MAPPED, failure_response

ROUTE = "/v1/runs/{run_id}/events"
PATH = re.compile(r"^/v1/runs/(?P<run_id>[^/]+)/events$")


def install(app: FastAPI, router: APIRouter) -> None:
    """Serve ``router``'s ``GET`` :data:`ROUTE` with :class:`RunEventsRoute`.

    Call it before the other middlewares are added, so it runs after them (innermost).
    """
    route = next(r for r in router.routes if isinstance(r, APIRoute) and r.path == ROUTE)
    app.add_middleware(RunEventsRoute, route=route)


class RunEventsRoute:
    """ASGI middleware: serve ``GET /v1/runs/{run_id}/events``; pass everything else on."""

    def __init__(self, app: ASGIApp, route: APIRoute) -> None:
        self.app = app
        self.route = route  # what the metrics label the request with

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer the run's event stream, or an error in the gateway's shape."""
        match = PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        last_event_id = None
        for name, value in scope["headers"]:
            if name == b"last-event-id":
                last_event_id = value.decode("latin-1")
                break
        after = parse_qs(scope["query_string"].decode("latin-1")).get("after", [None])[-1]
        response: Response
        try:
            hub = scope["app"].state.hub
            response = await sse.run_events(hub, match["run_id"], last_event_id, after)
        except MAPPED as e:
            response = failure_response(e)
        await response(scope, receive, send)
