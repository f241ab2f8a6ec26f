"""Bearer-token auth for the gateway: who may call ``/v1``, and on which agents.

Tokens come from ``[gateway] tokens`` in ``config.toml`` (:class:`~walrus_tasks.config.
TokenGrant`): a string has full access, a table ``{token, agents}`` is limited to those agents.
With no token configured the gateway is open, which ``python -m gateway`` allows on loopback
only. With at least one, every ``/v1`` request (HTTP or WebSocket), and every request of the
Agent Protocol and of the MCP face (``/mcp``), needs ``Authorization: Bearer <token>`` (or
``x-api-key: <token>``, what the Anthropic and LangGraph SDKs send): 401 without a known token,
403 for an agent the token may not use. ``/healthz``, ``/metrics``, ``/openapi.json`` and
``/docs`` stay open.

Why an ASGI middleware rather than a FastAPI dependency: it decides before routing and body
parsing, so a request without a token gets 401 whatever else is wrong with it (unknown route,
malformed body) and learns nothing about the API, and routes added later (and WebSockets) are
covered without opting in. The price: it finds the agent itself, in the same decoded
``scope["path"]`` the router matches, split at the same ``/``.

A token limited to some agents may use only the routes whose agent can be known:

- ``/v1/agents/{agent}…`` and ``/v1/models/{agent}``: the path names it;
- ``/v1/runs/{run_id}…``: the run's record in Redis names it;
- ``/v1/chat/completions``, ``/v1/messages`` and ``POST /v1/responses``: the body's ``model``
  names it;
- ``/v1/responses/resp_<run_id>…``: the run's record names it;
- ``/v1/agents``, ``/v1/conversations``, ``/v1/models``: the list is filtered to its agents;
- ``/mcp``: the MCP face lists and calls only its agents (``gateway.mcp_face``).

Everything else under ``/v1`` (crons, subscriptions, events, admin, stats, creating, changing or
deleting agents, the WebSocket) acts across agents and needs a full-access token.

A token with a ``tenant`` (``walrus_tasks.tenancy``) may use only the routes that keep to its
tenant (``gateway.tenant_routes``; everything else is a 403), and another tenant's run
(``/v1/runs/{run_id}…``) is a 404 here, before the route. The routes take the tenant from the
grant this middleware puts in the scope (``gateway.deps.caller_of``).

A2A (``gateway.a2a``) is covered as ``/v1`` is: ``/a2a/{agent}…`` (the agent's endpoint and its
card; the path names the agent) and the gateway's card ``/.well-known/agent-card.json`` (which
lists only the agents the token may use) need a token, and keep to the token's tenant.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Iterable
from typing import Any

import redis
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import RETRY_AFTER, Render, error_response
from gateway.tenant_routes import tenant_route
from walrus_tasks import reads, tenancy
from walrus_tasks.config import Config, TokenGrant
from walrus_tasks.errors import NotFound
from walrus_tasks.names import RUN_ID_RE

log = logging.getLogger("walrus.gateway.auth")

GRANT_KEY = "walrus.grant"
"""The scope key where an authenticated request carries its :class:`TokenGrant`."""

_AGENT_PATH = re.compile(r"^/(?:v1/(?:agents|models)|a2a)/(?P<agent>[^/]*)")
_RUN_PATH = re.compile(r"^/v1/runs/(?P<run_id>[^/]*)")
_MODEL_PATHS = frozenset({"/v1/chat/completions", "/v1/messages", "/v1/responses"})
"""Routes whose JSON body's ``model`` names the agent (the OpenAI and Anthropic faces)."""
_RESPONSE_PATH = re.compile(r"^/v1/responses/(?:resp_)?(?P<run_id>[^/_]*)")
"""A response's id names its run (``gateway/response_operations.py``)."""
_AGENT_CONFIG_PATH = re.compile(r"^/v1/agents/[^/]*$")
"""``PUT``/``DELETE`` here change an agent's config: that needs a full-access token."""
_LISTS = {
    "/v1/agents": ("agents", "name"),
    "/v1/conversations": ("conversations", "agent"),
    "/v1/models": ("data", "id"),
}
"""List routes a limited token may read: path -> (list key, agent field of an item)."""


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ``::1`` (bracketed or IPv4-mapped too)."""
    host = host.strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # another host name: we do not resolve it, so it is not loopback
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


MCP_PATH = "/mcp"
"""The MCP face (``gateway.mcp_face``): it needs a token like ``/v1``, and checks agents itself."""

AGENT_PROTOCOL = ("/threads", "/runs", "/assistants", "/store")
"""The Agent Protocol's resources (``gateway.agent_protocol``): they act across agents, so a
token limited to some agents may not use them. ``/info`` and ``/ok`` stay open."""

A2A_CARD = "/.well-known/agent-card.json"
"""The gateway's A2A card: a catalog of the agents, filtered by the route for a limited token."""


_PROTECTED_TREES = ("/v1", *AGENT_PROTOCOL, "/a2a")
"""The roots that need a token, with everything under them."""
_PROTECTED = frozenset({*_PROTECTED_TREES, A2A_CARD, MCP_PATH})
_PROTECTED_UNDER = tuple(root + "/" for root in _PROTECTED_TREES)


def protected(path: str) -> bool:
    """True for the paths that need a token when tokens are configured."""
    return path in _PROTECTED or path.startswith(_PROTECTED_UNDER)


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of the first ``Authorization: Bearer <token>`` (or ``x-api-key``), or None.

    ``x-api-key`` is what the Anthropic and LangGraph SDKs send.
    """
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            token = token.strip()
            return token if scheme.lower() == b"bearer" and token else None
    for name, value in headers:
        if name == b"x-api-key" and value.strip():
            return value.strip()
    return None


def authenticate(grants: Iterable[TokenGrant], token: bytes | None) -> TokenGrant | None:
    """The grant whose token is ``token``, or None; compared in constant time."""
    found = None
    for grant in grants:
        # Compare with every token, whichever matches, so the time taken tells nothing.
        if hmac.compare_digest(token or b"", grant.token.get_secret_value().encode()):
            found = found or grant
    return found


class BearerAuth:
    """ASGI middleware: 401 without a known bearer token, 403 outside the token's agents."""

    def __init__(self, app: ASGIApp, config: Config) -> None:
        self.app = app
        self.config = config

    def _grants(self, scope: Scope) -> list[TokenGrant]:
        # The app's current config (a reload replaces it), else the one we were given.
        config = getattr(getattr(scope.get("app"), "state", None), "config", None)
        return (config if isinstance(config, Config) else self.config).gateway.tokens

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Check the token of every ``/v1`` request, then its agent for a limited token.

        Not a coroutine: a request with nothing to check (no tokens configured, or a path
        that needs none) gets the app's own awaitable, so this layer keeps no frame alive
        for as long as its stream is open.
        """
        if scope["type"] not in ("http", "websocket") or not protected(scope["path"]):
            return self.app(scope, receive, send)
        grants = self._grants(scope)
        if not grants:
            return self.app(scope, receive, send)
        return self._checked(scope, receive, send, grants)

    async def _checked(
        self, scope: Scope, receive: Receive, send: Send, grants: list[TokenGrant]
    ) -> None:
        token = bearer_token(scope["headers"])
        grant = authenticate(grants, token)
        if grant is None:
            why = "invalid bearer token" if token else "missing or malformed bearer token"
            how = "send 'Authorization: Bearer <token>' or 'x-api-key: <token>'"
            await deny(scope, receive, send, 401, f"{why}: {how}")
            return
        scope[GRANT_KEY] = grant
        if grant.tenant is not None and not await self._in_tenant(scope, receive, send, grant):
            return
        if grant.agents is None:
            await self.app(scope, receive, send)
        else:
            await self._limited(scope, receive, send, grant)

    async def _in_tenant(
        self, scope: Scope, receive: Receive, send: Send, grant: TokenGrant
    ) -> bool:
        """True if a tenant token may go on (else the answer is sent).

        It may use a route that keeps to its tenant, and no other tenant's run: that is a 404,
        as if there were no such run.
        """
        path = scope["path"]
        method = scope.get("method", "WEBSOCKET")
        if not tenant_route(method, path):
            message = f"{method} {path}: a tenant token may not use this; it needs an admin token"
            await deny(scope, receive, send, 403, message)
            return False
        if match := _RUN_PATH.match(path):
            try:
                record = await _run_record(scope, match["run_id"])
            except redis.RedisError as e:
                await deny(scope, receive, send, 503, f"redis: {e}", code="unavailable")
                return False
            if record is not None and tenancy.tenant_of(record.get("sender", "")) != grant.tenant:
                run_id = match["run_id"]
                await deny(scope, receive, send, 404, f"unknown run {run_id!r}", code="not_found")
                return False
        return True

    async def _limited(self, scope: Scope, receive: Receive, send: Send, grant: TokenGrant) -> None:
        path, http = scope["path"], scope["type"] == "http"
        reading = scope.get("method") in ("GET", "HEAD")
        if http and reading and path in _LISTS:
            await self.app(scope, receive, _filtering(scope, receive, send, grant, *_LISTS[path]))
            return
        if http and reading and path == A2A_CARD:  # the route lists the permitted agents only
            await self.app(scope, receive, send)
            return
        if http and not reading and _AGENT_CONFIG_PATH.match(path):
            message = f"{path}: changing an agent needs a full-access token"
            await deny(scope, receive, send, 403, message)
            return
        if path == MCP_PATH:  # its tools/list and tools/call keep to the grant's agents
            await self.app(scope, receive, send)
            return
        agent: str | None = None
        if match := _AGENT_PATH.match(path):
            agent = match["agent"]
        elif match := (_RUN_PATH.match(path) or _RESPONSE_PATH.match(path)):
            try:
                agent = await _run_agent(scope, match["run_id"])
            except redis.RedisError as e:
                await deny(scope, receive, send, 503, f"redis: {e}", code="unavailable")
                return
        elif http and path in _MODEL_PATHS and scope["method"] == "POST":
            try:
                body = await read_body(receive)
            except HTTPException as e:  # BodyLimit's verdict on a streamed body
                await deny(scope, receive, send, e.status_code, str(e.detail), code="too_large")
                return
            agent, receive = _model_of(body), replay(body, receive)
        else:
            allowed = ", ".join(sorted(grant.agents or ()))
            message = f"this token is limited to agents {allowed}; {path} needs a full-access token"
            await deny(scope, receive, send, 403, message)
            return
        if agent is not None and not grant.permits(agent):
            await deny(scope, receive, send, 403, f"this token may not use agent {agent!r}")
            return
        # agent None: no such run, or a body the route will refuse (422): nothing to protect.
        await self.app(scope, receive, send)


async def deny(
    scope: Scope, receive: Receive, send: Send, status: int, message: str, code: str = ""
) -> None:
    """Answer ``status`` in the path's error shape (close a WebSocket with 1008 instead)."""
    code = code or {401: "unauthorized", 403: "forbidden"}.get(status, "error")
    client = scope.get("client") or ("?", 0)
    method = scope.get("method", "WEBSOCKET")
    log.warning("%s %s from %s: %d %s", method, scope["path"], client[0], status, message)
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
        return
    response = _render(scope["path"])(status, code, message)
    if status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER)
    await response(scope, receive, send)


def _render(path: str) -> Render:
    """The error shape of ``path``'s face: Anthropic's on ``/v1/messages``, else ours."""
    if path == "/v1/messages":
        from gateway.anthropic_messages import anthropic_error  # it imports this module

        return anthropic_error
    return error_response


def _redis(scope: Scope) -> redis.Redis:
    """The Redis client of the app serving ``scope`` (``app.state.redis``)."""
    return scope["app"].state.redis  # type: ignore[no-any-return]


async def _run_record(scope: Scope, run_id: str) -> dict[str, str] | None:
    """The record of run ``run_id``; None if there is no such run (the route answers 404/422)."""
    if not RUN_ID_RE.fullmatch(run_id):
        return None
    try:
        return await run_in_threadpool(reads.run_record, _redis(scope), run_id)
    except NotFound:
        return None


async def _run_agent(scope: Scope, run_id: str) -> str | None:
    """The agent of run ``run_id``; None if there is no such run (the route answers 404/422)."""
    record = await _run_record(scope, run_id)
    return None if record is None else record.get("agent", "")


async def read_body(receive: Receive) -> bytes:
    """The request's whole body (what came, if the client left before it was whole)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then whatever the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _model_of(body: bytes) -> str | None:
    """The agent a body's ``model`` asks for; ``""`` (permitted to none) if it names none."""
    try:
        data = json.loads(body)
    except ValueError:
        return None  # FastAPI refuses the same bytes with 422
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else ""


def _filtering(
    scope: Scope, receive: Receive, send: Send, grant: TokenGrant, key: str, field: str
) -> Send:
    """A ``send`` that keeps only the items of list ``key`` whose ``field`` the grant permits."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def filtered(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(chunks)
        if start["status"] == 200:
            try:
                body = _keep_permitted(body, grant, key, field)
            except (ValueError, TypeError, KeyError):
                # Never pass on a list we could not filter.
                why = f"auth: cannot filter {scope['path']}"
                await error_response(500, "error", why)(scope, receive, send)
                return
        headers = [(k, v) for k, v in start["headers"] if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return filtered


def _keep_permitted(body: bytes, grant: TokenGrant, key: str, field: str) -> bytes:
    data = json.loads(body)
    items: list[dict[str, Any]] = data[key]
    data[key] = [item for item in items if grant.permits(item[field])]
    return json.dumps(data, ensure_ascii=False).encode()


def _document(app: FastAPI) -> None:
    """Declare the bearer scheme (and 401/403) on the ``/v1`` operations of the OpenAPI doc."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        schema = original()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearer"] = {"type": "http", "scheme": "bearer"}
        for path, operations in schema.get("paths", {}).items():
            if not protected(path):
                continue
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]
                responses = operation.setdefault("responses", {})
                responses.setdefault("401", {"description": "missing or unknown bearer token"})
                responses.setdefault("403", {"description": "the token may not use this agent"})
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_auth(app: FastAPI, config: Config) -> None:
    """Require a bearer token on ``/v1`` when the config lists any; document it in OpenAPI.

    Call it before ``BodyLimit`` is added, so that middleware (outermost) bounds the body this
    one reads for ``/v1/chat/completions`` and ``/v1/messages``. Tokens are read from
    ``app.state.config`` on each request (``config`` until that is set), so a config reload
    takes effect at once.
    """
    app.add_middleware(BearerAuth, config=config)
    _document(app)
