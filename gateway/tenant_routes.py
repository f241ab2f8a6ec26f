"""The routes a tenant token may use: those that keep to the caller's tenant.

A token with a ``tenant`` (``walrus_tasks.tenancy``) may call only these; everything else acts
across tenants and needs an admin token (``gateway.auth`` answers 403 before routing). One
table for every face: a route added later is refused to tenant tokens until it is listed here,
once it keeps to the caller's tenant. ``tests/test_registry.py`` holds the native routes to the
access each operation declares in ``gateway.registry``.
"""

from __future__ import annotations

import re

TENANT_ROUTES: tuple[tuple[frozenset[str], re.Pattern[str]], ...] = tuple(
    (frozenset(methods.split()), re.compile(pattern))
    for methods, pattern in (
        ("GET HEAD", r"^/v1/(?:agents|models|conversations|runs|usage)$"),
        ("GET HEAD", r"^/v1/(?:agents|models)/[^/]+$"),
        ("POST", r"^/v1/agents/[^/]+/messages$"),
        ("DELETE", r"^/v1/agents/[^/]+/conversations/[^/]+$"),
        ("GET HEAD POST", r"^/v1/agents/[^/]+/conversations/[^/]+/[a-z]+$"),
        ("GET HEAD", r"^/v1/runs/[^/]+(?:/events)?$"),
        ("POST", r"^/v1/runs/[^/]+/cancel$"),
        ("POST", r"^/v1/(?:chat/completions|messages)$"),
        # The Responses face: a response of another tenant is a 404 (the route checks).
        ("POST", r"^/v1/responses$"),
        ("GET HEAD DELETE", r"^/v1/responses/[^/]+$"),
        ("POST", r"^/v1/responses/[^/]+/cancel$"),
        ("GET HEAD", r"^/v1/responses/[^/]+/input_items$"),
        ("WEBSOCKET", r"^/v1/ws$"),
        ("GET POST DELETE", r"^/mcp$"),  # its tools are agents, its calls runs in the tenant
        ("GET HEAD POST", r"^/v1/(?:crons|subscriptions)$"),
        ("GET HEAD DELETE", r"^/v1/crons/[^/]+$"),
        ("DELETE", r"^/v1/subscriptions/[^/]+$"),
        ("POST", r"^/v1/(?:publish|events)$"),
        # The Agent Protocol: threads, runs, crons and the store act in the caller's tenant
        # (gateway.agent_protocol.tenant); assistants are the shared agents, read only.
        ("GET HEAD", r"^/assistants/[^/]+(?:/(?:schemas|graph|subgraphs))?$"),
        ("POST", r"^/assistants/(?:search|count)$"),
        ("POST", r"^/threads(?:/(?:search|count))?$"),
        ("GET HEAD PATCH DELETE", r"^/threads/[^/]+$"),
        ("GET HEAD", r"^/threads/[^/]+/state$"),
        ("POST", r"^/threads/[^/]+/history$"),
        ("GET HEAD POST", r"^/threads/[^/]+/runs$"),
        ("POST", r"^/threads/[^/]+/runs/(?:stream|wait|crons)$"),
        ("GET HEAD DELETE", r"^/threads/[^/]+/runs/[^/]+$"),
        ("POST", r"^/threads/[^/]+/runs/[^/]+/cancel$"),
        ("GET HEAD", r"^/threads/[^/]+/runs/[^/]+/(?:join|stream)$"),
        ("POST", r"^/runs(?:/(?:stream|wait|crons|crons/search))?$"),
        ("DELETE", r"^/runs/crons/[^/]+$"),
        ("GET HEAD PUT DELETE", r"^/store/items$"),
        ("POST", r"^/store/(?:items/search|namespaces)$"),
        # A2A: an agent's endpoint keeps to the caller's tenant (gateway.a2a.handler).
        ("GET HEAD POST DELETE", r"^/a2a/[^/]+(?:/.*)?$"),
        ("GET HEAD", r"^/\.well-known/agent-card\.json$"),
    )
)
"""The routes a tenant token may use: those that keep to the caller's tenant (everything else
under ``/v1`` acts across tenants and needs an admin token)."""


def tenant_route(method: str, path: str) -> bool:
    """True if a tenant token may call ``method path`` (``WEBSOCKET`` for the socket)."""
    return any(method in methods and rx.match(path) for methods, rx in TENANT_ROUTES)
