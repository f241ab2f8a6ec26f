"""One place that turns failures into ``{"error": {"code", "message"}}`` with a status code."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from walrus_tasks.errors import WalrusError

REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)
"""What redis-py (sync and asyncio alike) raises while Redis cannot be reached: retry later."""

RETRY_AFTER = 2
"""Seconds a client is told to wait (``Retry-After``) before retrying while Redis is down."""


def responses(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route's errors, from ``{status: description}``."""
    return {
        s: {"description": d, "content": {"application/json": {}}} for s, d in described.items()
    }


def error_response(status: int, code: str, message: str) -> JSONResponse:
    """The error body every endpoint returns."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def with_retry_after(response: JSONResponse) -> JSONResponse:
    """``response``, told to come back after ``RETRY_AFTER`` seconds if it is a 503."""
    if response.status_code == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER)
    return response


def unavailable(exc: BaseException) -> JSONResponse:
    """``503 unavailable`` with ``Retry-After``: Redis is down (or failing over), retry later."""
    return with_retry_after(error_response(503, "unavailable", f"redis unavailable: {exc}"))


def _describe(errors: Any) -> str:
    parts = []
    for err in errors:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        if err.get("type") == "json_invalid":
            return "malformed JSON body"
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts)


def install(app: FastAPI) -> None:
    """Register the exception handlers and the body size limit on ``app``."""

    @app.exception_handler(WalrusError)
    async def walrus_error(request: Request, exc: WalrusError) -> JSONResponse:
        return with_retry_after(error_response(exc.status, exc.code, exc.message))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid", _describe(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http"
        )
        return error_response(exc.status_code, code, str(exc.detail))

    # One handler per class: Starlette looks handlers up along the exception's MRO.
    for cls in REDIS_DOWN:

        @app.exception_handler(cls)
        async def redis_down(request: Request, exc: Exception) -> JSONResponse:
            return unavailable(exc)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before the app reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check Content-Length, then count the streamed body."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        has_body = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                message = f"request body exceeds the {self.limit}-byte limit"
                await error_response(413, "too_large", message)(scope, receive, send)
                return
            has_body = has_body or name in (b"content-length", b"transfer-encoding")
        if not has_body and scope.get("http_version") in ("1.0", "1.1"):
            # HTTP/1: no body without one of them; nothing to count (an SSE GET holds less).
            await self.app(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # FastAPI turns other exceptions raised while reading a body into a 400.
                    raise HTTPException(413, f"request body exceeds the {self.limit}-byte limit")
            return message

        await self.app(scope, limited, send)


Render = Callable[[int, str, str], JSONResponse]
"""A protocol's error body for ``(status, code, message)``."""


def error_route(render: Render) -> type[APIRoute]:
    """A route class whose failures (validation included) all come out through ``render``.

    The one error mapping of a protocol whose error shape is not ours (OpenAI's, the Agent
    Protocol's): the same exceptions, and the same statuses, as the native handlers.
    """

    class ErrorRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def handle(request: Request) -> Response:
                try:
                    return await handler(request)
                except WalrusError as e:
                    return with_retry_after(render(e.status, e.code, e.message))
                except RequestValidationError as e:
                    return render(422, "invalid", _describe(e.errors()))
                except HTTPException as e:
                    code = {413: "too_large"}.get(e.status_code, "http")
                    return render(e.status_code, code, str(e.detail))
                except REDIS_DOWN as e:
                    return with_retry_after(render(503, "unavailable", f"redis unavailable: {e}"))

            return handle

    return ErrorRoute
