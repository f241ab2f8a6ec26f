"""JSON bodies nested past :data:`~walrus_tasks.json_depth.MAX_DEPTH`: 422, before any route.

One check for every route that takes JSON (native, Agent Protocol, OpenAI, Anthropic, MCP): the
middleware reads the body (already bounded by ``BodyLimit``), parses it once to measure its
depth, and hands the same bytes on. A body too deep is refused with 422 in the error shape of
the route's protocol, so nothing is stored. Malformed JSON is left to the route (its own 422).
The WebSocket's frames are checked where :mod:`gateway.ws` parses them.
"""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth import read_body, replay
from gateway.errors import error_response
from gateway.sse_route import header
from walrus_tasks.json_depth import TooDeep, loads_checked

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _render(path: str, status: int, code: str, message: str) -> JSONResponse:
    """The error shape of ``path``'s protocol: MCP, OpenAI, Anthropic, Agent Protocol, ours."""
    if path == "/mcp":
        from gateway.mcp_face import http_error

        return http_error(status, message)
    if path.startswith(("/v1/chat/", "/v1/responses")):
        from gateway.openai_compat import openai_error

        return openai_error(status, code, message)
    if path == "/v1/messages":
        from gateway.anthropic_messages import anthropic_error

        return anthropic_error(status, code, message)
    if not (path == "/v1" or path.startswith("/v1/")):
        from gateway.agent_protocol.errors import detail

        return detail(status, message)
    return error_response(status, code, message)


def is_json(scope: Scope) -> bool:
    """Whether FastAPI would parse this request's body as JSON (JSON type, or none given)."""
    given = header(scope, b"content-type")
    if given is None:
        return True
    kind = given.split(";", 1)[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


class JsonDepthGuard:
    """ASGI middleware: refuse a JSON body nested past the limit with 422."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Measure a JSON body's depth; pass the request on with the same body, or refuse it.

        Not a coroutine: a request without a body (an SSE ``GET``) gets the app's own
        awaitable, so this layer keeps no frame alive while a stream is open.
        """
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS or not is_json(scope):
            return self.app(scope, receive, send)
        return self._checked(scope, receive, send)

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        try:
            body = await read_body(receive)
        except HTTPException as e:  # BodyLimit's 413, raised while the body is read
            await _render(path, e.status_code, "too_large", str(e.detail))(scope, receive, send)
            return
        if body.strip():
            try:
                loads_checked(body)
            except TooDeep as e:
                await _render(path, 422, "invalid", f"{e}: not accepted")(scope, receive, send)
                return
            except ValueError:
                pass  # malformed: the route answers its own 422
        await self.app(scope, replay(body, receive), send)
