"""The MCP face: the agents a token may use, as the tools of an MCP server at ``/mcp``.

Streamable HTTP, served by the official ``mcp`` package's session manager inside the gateway,
so the gateway's checks come first: the bearer token (401 without one when tokens are
configured; its tenant and its agents), the ``Host``/``Origin`` guard and the body limit.

- ``tools/list``: one tool per agent the token may use (every configured agent for a
  full-access token): name = the agent, description = its description, input
  ``{message, conversation?}``, output ``{run_id, conversation, status, …}``.
- ``tools/call``: ``message`` goes to the agent as in ``POST /v1/agents/{agent}/messages``,
  in the token's tenant, the run's face ``mcp``. With ``conversation`` (a sender name) it goes
  on in that conversation; without, in a new one, ``mcp-<32 hex>``, which the result names
  (``structuredContent.conversation``) so the next call can go on in it. If that conversation's
  run waits for an answer (a question the last result carried), the message is the answer,
  and the call follows that run on. The call ends when the run ends: the reply as text, or
  ``isError`` with the run's error; ``structuredContent.run_id`` is the walrus run (``GET
  /v1/runs/{id}``, its events, cancel it from any face). Progress, questions (elicitation)
  and cancellation: :mod:`gateway.mcp_follow`.
- Errors: an unknown tool (or an agent the token may not use) is a JSON-RPC error
  (``-32602``); what the operations refuse (bad arguments, a busy conversation, too many open
  streams) is a tool error (``isError``, ``"<code>: <message>"``), so a model can correct it;
  the gateway unable to serve (Redis away, stopping) is a JSON-RPC error (``-32603``).

Sessions: the session manager is stateful, because an MCP client of the handshake era
(protocol up to 2025-11-25) needs its session for elicitation requests and for
``notifications/cancelled`` (both reach the process that holds the call); such a client needs
sticky sessions behind a load balancer, and one that lands elsewhere is told 404 and starts a
new session. A session is bound to the token that opened it. A 2026-07-28 client (the ``mcp``
package's default) sends every request on its own, with no session: any gateway serves any
of its calls, a question comes back as an ``InputRequiredResult`` answered by a next call, and
closing the request cancels it. The runs are in Redis either way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import mcp_types as types
from fastapi import FastAPI
from mcp.server import Server
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from gateway.auth import GRANT_KEY, MCP_PATH
from gateway.deps import caller_of
from gateway.errors import error_response, failure_of
from gateway.mcp_follow import CallEnv, Ctx, Result, Resume, Start, answer, follow
from gateway.mcp_operations import own_run, pending, questions_of
from gateway.mcp_questions import form_of
from gateway.operations import list_agents, reply, send
from gateway.stream_limit import client_key, stream_slot
from walrus_tasks import ids
from walrus_tasks.config import Config, TokenGrant
from walrus_tasks.errors import InvalidInput
from walrus_tasks.faces import Face
from walrus_tasks.models import SendMessage
from walrus_tasks.names import SENDER_RE
from walrus_tasks.settings import Settings

FACE: Face = "mcp"
NEW_CONVERSATION = "mcp-"
"""The prefix of the conversation a call without ``conversation`` starts (then 32 hex)."""

INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {"type": "string", "minLength": 1, "description": "what to tell the agent"},
        "conversation": {
            "type": "string",
            "pattern": SENDER_RE.pattern,
            "description": "go on in this conversation (a result's `conversation`); without "
            "it the message starts a new one",
        },
    },
    "required": ["message"],
    "additionalProperties": False,
}
OUTPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "run_id": {"type": "string", "description": "the walrus run: GET /v1/runs/{run_id}"},
        "conversation": {"type": "string", "description": "pass it to go on in it"},
        "status": {"enum": ["succeeded", "failed", "cancelled", "waiting"]},
        "error": {"type": "string"},
        "call_id": {"type": "string", "description": "waiting: the question's call id"},
        "kind": {"enum": ["question", "approval"]},
        "questions": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["run_id", "conversation", "status"],
}


class Arguments(BaseModel):
    """A ``tools/call``'s ``arguments`` (:data:`INPUT_SCHEMA`)."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1)
    conversation: str | None = Field(default=None, pattern=SENDER_RE.pattern)


def _request(ctx: Ctx) -> Request:
    """The HTTP request a message came in (every message does: the face is served over HTTP)."""
    if not isinstance(ctx.request, Request):
        raise MCPError(types.INTERNAL_ERROR, "the MCP face is served over HTTP only")
    return ctx.request


def _env(ctx: Ctx) -> tuple[CallEnv, TokenGrant | None]:
    """The app's Redis, config and hub, the caller, and its grant (None: an open gateway)."""
    request = _request(ctx)
    state, scope = request.app.state, request.scope
    env = CallEnv(state.redis, state.config, state.hub, caller_of(scope))
    return env, grant_of(scope)


def grant_of(scope: Scope) -> TokenGrant | None:
    """The request's token grant (None: an open gateway)."""
    grant = scope.get(GRANT_KEY)
    return grant if isinstance(grant, TokenGrant) else None


def may_call(config: Config, grant: TokenGrant | None, agent: str) -> bool:
    """True if ``agent`` is a tool the holder of ``grant`` may call."""
    return agent in config.agents and (grant is None or grant.permits(agent))


def _tools(config: Config, grant: TokenGrant | None) -> list[types.Tool]:
    return [
        types.Tool(
            name=a.name,
            description=a.description or f"Talk to the walrus agent {a.name}.",
            input_schema=INPUT_SCHEMA,
            output_schema=OUTPUT_SCHEMA,
        )
        for a in list_agents(config)
        if grant is None or grant.permits(a.name)
    ]


async def list_tools(
    ctx: Ctx, params: types.PaginatedRequestParams | None
) -> types.ListToolsResult:
    """The agents the caller's token may use, one tool each."""
    env, grant = _env(ctx)
    return types.ListToolsResult(tools=_tools(env.config, grant))


def failure(exc: Exception) -> types.CallToolResult:
    """A refusal as a tool error; a server failure (5xx) raised as a JSON-RPC error."""
    status, code, message = failure_of(exc)
    if status >= 500:
        data = {"status": status, "code": code}
        raise MCPError(types.INTERNAL_ERROR, f"{code}: {message}", data) from exc
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{code}: {message}")], is_error=True
    )


async def call_tool(ctx: Ctx, params: types.CallToolRequestParams) -> Result:
    """Run the agent ``params.name`` on ``message``; the reply once the run ends."""
    env, grant = _env(ctx)
    agent = params.name
    if not may_call(env.config, grant, agent):
        message = f"Unknown tool: {agent!r} (tools/list names the agents this token may use)"
        raise MCPError(types.INVALID_PARAMS, message)
    try:
        with stream_slot(_request(ctx).scope):  # before anything is sent: a refusal starts nothing
            with anyio.CancelScope(shield=True):  # once sent, the call knows its run
                start = await run_in_threadpool(begin, env, agent, params)
            return await follow(ctx, env, start)
    except MCPError:
        raise
    except Exception as e:
        return failure(e)


def begin(env: CallEnv, agent: str, params: types.CallToolRequestParams) -> Start:
    """The run a call follows: answered (a client's answer), or sent (blocking)."""
    if params.request_state is not None:
        return resume(env, agent, params)
    args = Arguments.model_validate(params.arguments or {})
    tenant = env.caller.acting(None)
    if args.conversation is not None:
        waiting = pending(env.r, env.config, agent, args.conversation, env.caller)
        if waiting is not None:  # the message answers the run's question
            call_id, *others = waiting.questions
            reply(env.r, env.config, agent, args.conversation, args.message, call_id, tenant)
            return Start(agent, args.conversation, waiting.run_id, waiting.asked,
                         frozenset(others), {call_id})  # fmt: skip
    conversation = args.conversation or f"{NEW_CONVERSATION}{ids.hex_id()}"
    body = SendMessage(content=args.message, sender=conversation)
    submitted = send(env.r, env.config, agent, body, None, env.caller, FACE)
    return Start(agent, conversation, submitted.run_id)


def resume(env: CallEnv, agent: str, params: types.CallToolRequestParams) -> Start:
    """A call that brings the answers to a question the last one returned (``requestState``)."""
    try:
        state = Resume.model_validate_json(params.request_state or "")
    except ValueError as e:
        raise InvalidInput("requestState: not one this server sent") from e
    own_run(env.r, state.run, agent, state.conversation, env.caller)
    start = Start(agent, state.conversation, state.run, state.asked)
    waiting = questions_of(env.r, state.run)
    questions = waiting.questions if waiting else {}
    for call_id, result in (params.input_responses or {}).items():
        if call_id in questions and isinstance(result, types.ElicitResult):
            answer(env, start, call_id, form_of(questions[call_id]), result)
            start.answered.add(call_id)
    start.unanswered = frozenset(questions) - start.answered
    return start


SERVER: Server[Any] = Server(
    "walrus",
    instructions="Each tool is a walrus agent: call it with a message; pass the result's "
    "conversation to go on in the same conversation.",
    on_list_tools=list_tools,
    on_call_tool=call_tool,
    get_tool_input_schema=lambda _name: INPUT_SCHEMA,  # every tool takes the same input
)


class Endpoint:
    """The ASGI app at ``/mcp``: the app's session manager, each session bound to its token."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one MCP request (a token's session answers only that token: else 404)."""
        manager: StreamableHTTPSessionManager | None = getattr(scope["app"].state, "mcp", None)
        if manager is None:
            await error_response(503, "unavailable", "the MCP face is not running")(
                scope, receive, send
            )
            return
        if isinstance(scope.get(GRANT_KEY), TokenGrant):
            token = AccessToken(token="", client_id=client_key(scope), scopes=[])
            scope["user"] = AuthenticatedUser(token)
        await manager.handle_request(scope, receive, send)


def install(app: FastAPI) -> None:
    """Route ``/mcp`` to the MCP face (its manager runs in the app's lifespan: :func:`serving`)."""
    app.router.routes.append(Route(MCP_PATH, Endpoint(), methods=["GET", "POST", "DELETE"]))


@asynccontextmanager
async def serving(app: FastAPI, settings: Settings) -> AsyncIterator[None]:
    """Run the face's session manager while the app runs (one per lifespan: it runs once)."""
    manager = StreamableHTTPSessionManager(
        app=SERVER, max_request_body_size=settings.max_body_bytes
    )
    async with manager.run():
        app.state.mcp = manager
        try:
            yield
        finally:
            app.state.mcp = None


def http_error(status: int, message: str) -> JSONResponse:
    """A JSON-RPC error answering an HTTP request the gateway refused before the face."""
    code = types.INVALID_REQUEST if status < 500 else types.INTERNAL_ERROR
    body = {"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status)
