"""A 2026-07-28 ``tools/call`` that streams its progress, answered below the ``mcp`` package.

The package serves each such call with a task group, memory streams, a connection with its
exit stack, a request context and their locks, all alive for as long as the call is: ~55 KB a
call at 10 000 open calls, where every other face's stream holds under 20 (docs/benchmarks.md,
issue 25, sixth round). This route takes the calls that stream at once, the ones with a
``progressToken`` that start a run, and answers them as the other faces' plain streams are
answered (:mod:`gateway.sse_route`): one generator over the run's events, written by
:class:`gateway.sse.EventStream`.

What the call says is :func:`gateway.mcp_follow.steps`, the package's path's too; the checks
are the package's own functions, run on the request (its transport security, ``Accept``, the
JSON-RPC envelope, the routing headers, ``Mcp-Param-*`` against the tool's schema, the
method's parameters at the request's version); the result is shaped by the package's own
per-version sieve and stamped with the server's ``serverInfo``. A request any check would
refuse, and every other request, goes on to the package, so its answers (its errors among
them) are the ones clients get. So do all calls while tracing is on: the package's
``tools/call`` span is kept.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.server.streamable_http import check_accept_headers
from mcp.server.transport_security import TransportSecurityMiddleware
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundModernRoute,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import progress_token_from_params
from mcp_types import SERVER_INFO_META_KEY, JSONRPCRequest
from mcp_types import methods as mcp_methods
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from gateway import sse_route
from gateway.auth import MCP_PATH
from gateway.deps import caller_of
from gateway.errors import REDIS_DOWN
from gateway.mcp_face import INPUT_SCHEMA, SERVER, begin, failure, grant_of, may_call
from gateway.mcp_follow import (
    Ask,
    CallEnv,
    Result,
    Start,
    cancel_call,
    gone_error,
    question,
    steps,
)
from gateway.sse import EventStream
from gateway.stream_limit import hold_stream
from walrus_tasks import tracing
from walrus_tasks.errors import Unavailable
from walrus_tasks.json_depth import loads_checked

METHOD = "tools/call"


@dataclass(frozen=True)
class Call:
    """A ``tools/call`` this route takes: its id, progress token, version and parameters."""

    id: types.RequestId
    token: types.ProgressToken
    version: str
    params: types.CallToolRequestParams
    elicit: bool
    """The client declared the elicitation capability (a question is an input request)."""


async def call_of(scope: Scope, body: bytes) -> Call | None:
    """The call, if this route takes the request; None leaves it to the package."""
    if b'"progressToken"' not in body:  # no stream at once: parse nothing
        return None
    state = scope["app"].state
    manager = getattr(state, "mcp", None)
    if manager is None or tracing.enabled():
        return None
    request = Request(scope)
    if request.headers.get("mcp-protocol-version") not in MODERN_PROTOCOL_VERSIONS:
        return None
    security = TransportSecurityMiddleware(manager.security_settings)
    if await security.validate_request(request, is_post=True) is not None:
        return None
    if check_accept_headers(request) != (True, True):
        return None
    try:
        decoded = loads_checked(body)
        if not isinstance(decoded, dict) or "id" not in decoded:
            return None  # a notification, a batch: the package's
        req = JSONRPCRequest.model_validate(decoded)
    except (ValueError, ValidationError):
        return None
    if req.method != METHOD or find_duplicated_routing_header(request.headers.items()):
        return None
    route = classify_inbound_request(decoded, headers=dict(request.headers))
    if not isinstance(route, InboundModernRoute):
        return None
    raw = req.params or {}
    arguments = raw.get("arguments") or {}
    if not isinstance(arguments, Mapping):
        return None
    if validate_mcp_param_headers(INPUT_SCHEMA, arguments, request.headers) is not None:
        return None
    token = progress_token_from_params(raw)
    try:
        mcp_methods.validate_client_request(METHOD, route.protocol_version, raw)
        params = types.CallToolRequestParams.model_validate(raw, by_name=False)
    except (KeyError, ValidationError):
        return None
    if token is None or params.request_state is not None:
        return None  # no stream at once, or a call that answers a question
    if not may_call(state.config, grant_of(scope), params.name):
        return None  # the package says the tool is unknown
    capabilities = route.client_capabilities
    elicit = isinstance(capabilities, Mapping) and capabilities.get("elicitation") is not None
    return Call(req.id, token, route.protocol_version, params, elicit)


async def answer(scope: Scope, _: dict[str, str], query: sse_route.Query) -> Response | None:
    """The call's stream (its run started), its refusal, or None: the package's request."""
    call = await call_of(scope, query.body)
    if call is None:
        return None
    state = scope["app"].state
    env = CallEnv(state.redis, state.config, state.hub, caller_of(scope))
    try:
        hold_stream()  # before anything is sent: a refusal starts nothing
        start = await run_in_threadpool(begin, env, call.params.name, call.params)
    except Exception as e:
        return _reply(_failed(call.id, call.version, e))
    ask = _input_request if call.elicit else _waiting
    return EventStream(frames(env, start, ask, call.id, call.token, call.version))


async def frames(
    env: CallEnv,
    start: Start,
    ask: Ask,
    call_id: types.RequestId,
    token: types.ProgressToken,
    version: str,
) -> AsyncGenerator[str, None]:
    """The call's SSE: a progress notification per message, then its result (or error).

    Holds only what it writes with, not the request's parsed body: it lasts as long as the run.
    """
    sent = 0
    items = steps(env, start, ask)
    try:
        async for item in items:
            if isinstance(item, str):
                sent += 1
                yield _event(_progress(token, sent, item))
            else:
                yield _event(_response(call_id, result=_wire(version, item)))
                return
    except (Unavailable, *REDIS_DOWN) as e:  # the gateway stops, or Redis stayed away
        yield _event(_response(call_id, error=gone_error(start, e)))
    except (asyncio.CancelledError, GeneratorExit):  # the client left: the call is cancelled
        await cancel_call(env, start)
        raise
    except Exception as e:
        yield _event(_failed(call_id, version, e))
    finally:
        await items.aclose()  # its hub subscription ends at once, not when it is collected


async def _input_request(_: CallEnv, start: Start, entry_id: str, event: Any) -> Result:
    """A question to a client that can elicit: an ``InputRequiredResult``."""
    return question(start, entry_id, event, elicit=True)


async def _waiting(_: CallEnv, start: Start, entry_id: str, event: Any) -> Result:
    """A question to a client that cannot: the result says it waits."""
    return question(start, entry_id, event, elicit=False)


def _wire(version: str, result: Result) -> dict[str, Any]:
    """``result`` as the package sends it at ``version``: sieved, typed, ``serverInfo`` stamped."""
    dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    dumped = mcp_methods.serialize_server_result(METHOD, version, dumped)
    dumped.setdefault("resultType", "complete")
    meta = dumped.get("_meta")
    dumped["_meta"] = {**(meta or {}), SERVER_INFO_META_KEY: SERVER.server_info_stamp}
    return dumped


def _progress(token: types.ProgressToken, n: int, message: str) -> dict[str, Any]:
    params = {"progressToken": token, "progress": n, "message": message}
    return {"jsonrpc": "2.0", "method": "notifications/progress", "params": params}


def _response(
    call_id: types.RequestId, result: dict[str, Any] | None = None, error: MCPError | None = None
) -> dict[str, Any]:
    if error is None:
        return {"jsonrpc": "2.0", "id": call_id, "result": result}
    data = error.error.model_dump(mode="json", by_alias=True, exclude_none=True)
    return {"jsonrpc": "2.0", "id": call_id, "error": data}


def _failed(call_id: types.RequestId, version: str, e: Exception) -> dict[str, Any]:
    """The answer to a call that failed with ``e``: a tool error, or a JSON-RPC one (5xx)."""
    try:
        return _response(call_id, result=_wire(version, failure(e)))
    except MCPError as error:
        return _response(call_id, error=error)


def _event(message: dict[str, Any]) -> str:
    """One SSE ``message`` event, as the package frames it."""
    return f"event: message\r\ndata: {json.dumps(message, separators=(',', ':'))}\r\n\r\n"


def _reply(message: dict[str, Any]) -> Response:
    """An answer before any stream: JSON, its HTTP status the package's for the error code."""
    error = message.get("error")
    status = 200 if error is None else ERROR_CODE_HTTP_STATUS.get(error["code"], 200)
    body = json.dumps(message, separators=(",", ":"))
    return Response(body, status_code=status, media_type="application/json")


PLAIN_CALL = sse_route.PlainStream(None, sse_route.pattern(MCP_PATH), answer, method="POST")
"""``POST /mcp`` for a 2026-07-28 ``tools/call`` with a progress token (:func:`call_of`)."""
