"""Routers skipped by their paths' first segment, so a request is matched against few routes.

FastAPI matches a request by walking the app's routes in order; an included router answers
``matches`` by walking every route of its own. A request for the Agent Protocol's
``/threads/...`` therefore walked every native ``/v1`` route first: a sixth of the gateway's
time under the Agent Protocol bench (docs/benchmarks.md, "Where the time goes"). ``include``
adds a router and gives the route(s) it added a gate: a request whose path's first segment
(``v1``, ``threads``…) is not one its routes start with is answered ``Match.NONE`` at once,
which is what the walk would have found. Order, and so which route wins a path two routers
share, is unchanged; a router with a route whose first segment is a parameter gets no gate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI
from starlette.routing import Match
from starlette.types import Scope

Matches = Callable[[Scope], tuple[Match, Scope]]


def head(path: str) -> str | None:
    """The first segment of ``path`` (``"/v1/runs"`` → ``"v1"``); None if it is not literal."""
    if not path.startswith("/"):
        return None
    first = path[1:].split("/", 1)[0]
    return None if "{" in first else first


def heads(router: APIRouter) -> frozenset[str] | None:
    """The first segments of every path of ``router``; None if any is a parameter."""
    found = {head(getattr(route, "path", "")) for route in router.routes}
    if None in found:
        return None
    return frozenset(h for h in found if h is not None)


def gate(matches: Matches, allowed: frozenset[str]) -> Matches:
    """``matches``, skipped (``Match.NONE``) for a path whose first segment is not ``allowed``.

    A scope with a ``root_path`` (a mounted app, a proxy's prefix) is always matched in full.
    """

    def gated(scope: Scope) -> tuple[Match, Scope]:
        if not scope.get("root_path") and head(scope["path"]) not in allowed:
            return Match.NONE, {}
        return matches(scope)

    return gated


def include(app: FastAPI, router: APIRouter) -> None:
    """``app.include_router(router)``, its added route(s) gated by ``heads(router)``."""
    before = len(app.router.routes)
    app.include_router(router)
    allowed = heads(router)
    if allowed is None:
        return
    for route in app.router.routes[before:]:
        added: Any = route  # an instance attribute shadows the method for this route only
        added.matches = gate(route.matches, allowed)
