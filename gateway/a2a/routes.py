"""The A2A routes of the gateway: the SDK's JSON-RPC and HTTP+JSON routes per agent, the cards.

``POST /a2a/{agent}`` is the JSON-RPC endpoint; the HTTP+JSON binding is under the same URL
(``/a2a/{agent}/message:send``, ``/message:stream``, ``/tasks``, ``/tasks/{id}``,
``/tasks/{id}:cancel``, ``/tasks/{id}:subscribe``, …). The SDK's routes parse each request,
refuse one whose ``A2A-Version`` is not 1.0 (no header means 0.3, as the spec says), call
:class:`~gateway.a2a.handler.WalrusRequestHandler`, and write the answer, streams included
(sse-starlette). In front of each, an agent that is not configured is a 404. The SDK's
``/{tenant}/…`` copies of the REST routes are left out: the tenant comes from the token.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from a2a.server.context import ServerCallContext
from a2a.server.routes import (
    DefaultServerCallContextBuilder,
    add_a2a_routes_to_fastapi,
    create_jsonrpc_routes,
    create_rest_routes,
)
from fastapi import FastAPI
from sse_starlette.sse import AppStatus
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.a2a.cards import CARD_PATH, agent_card_route, gateway_card_route
from gateway.a2a.errors import unknown_agent
from gateway.a2a.handler import CALL, AgentCall, WalrusRequestHandler
from gateway.deps import caller_of

ENDPOINT = "/a2a/{agent}"
"""An agent's A2A endpoint: the JSON-RPC URL, and the root of its HTTP+JSON routes."""

Endpoint = Callable[[Request], Awaitable[Response]]


class WalrusContextBuilder(DefaultServerCallContextBuilder):
    """The SDK's call context (headers, for ``A2A-Version``), plus the request's AgentCall."""

    def build(self, request: Request) -> ServerCallContext:
        """The context of ``request``: its app's Redis, config and hub, caller and agent."""
        context = super().build(request)
        state = request.app.state
        context.state[CALL] = AgentCall(
            r=state.redis, config=state.config, hub=state.hub,
            caller=caller_of(request.scope), agent=request.path_params["agent"],
        )  # fmt: skip
        return context


def known_agent_first(endpoint: Endpoint, jsonrpc: bool) -> Endpoint:
    """``endpoint``, behind a 404 (in the binding's shape) for an agent not configured."""

    @functools.wraps(endpoint)
    async def serve(request: Request) -> Response:
        agent = request.path_params["agent"]
        if agent not in request.app.state.config.agents:  # a dict lookup: no key, no path
            return unknown_agent(agent, jsonrpc)
        return await endpoint(request)

    return serve


def guard(routes: list[BaseRoute], jsonrpc: bool) -> list[BaseRoute]:
    """Each route of ``routes`` behind :func:`known_agent_first` (a ``Mount`` is left out)."""
    return [
        Route(r.path, known_agent_first(r.endpoint, jsonrpc), methods=sorted(r.methods or ()))
        for r in routes
        if isinstance(r, Route)
    ]


def install(app: FastAPI) -> None:
    """Add the A2A routes and the cards to ``app`` (documented in its OpenAPI).

    sse-starlette would end its streams itself when uvicorn is told to stop, cutting them
    without a word; the hub ends them instead (``gateway.server``), each with its error event.
    """
    AppStatus.disable_automatic_graceful_drain()  # type: ignore[no-untyped-call]
    handler, builder = WalrusRequestHandler(), WalrusContextBuilder()
    jsonrpc = create_jsonrpc_routes(handler, rpc_url=ENDPOINT, context_builder=builder)
    rest = create_rest_routes(handler, context_builder=builder, path_prefix=ENDPOINT)
    cards: list[BaseRoute] = [
        Route(CARD_PATH, gateway_card_route, methods=["GET"]),
        Route(ENDPOINT + CARD_PATH, agent_card_route, methods=["GET"]),
    ]
    add_a2a_routes_to_fastapi(
        app,
        agent_card_routes=cards,
        jsonrpc_routes=guard(list(jsonrpc), jsonrpc=True),
        rest_routes=guard(rest, jsonrpc=False),
    )
