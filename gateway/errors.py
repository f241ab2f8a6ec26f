"""One mapping from a failure to ``(status, code, message)``, and the native rendering of it.

:func:`failure_of` is the only place that decides what an exception means to a client; every
face renders its answer in its own shape: the native routes and the SSE route as
``{"error": {"code", "message"}}`` (:func:`install`), OpenAI and the Agent Protocol through
:func:`error_route`, the WebSocket as an error frame (``gateway.ws``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from walrus_tasks.errors import WalrusError, describe_invalid

log = logging.getLogger("walrus.gateway")

REDIS_DOWN = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.ReadOnlyError,
    # A Redis Cluster replacing a master: the slot is served by no node, or by another now.
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.MovedError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.RedisClusterUnreachableError,
)
"""What redis-py (sync and asyncio alike) raises while Redis cannot be reached: retry later."""

RETRY_AFTER = 2
"""Seconds a client is told to wait (``Retry-After``) before retrying while Redis is down."""


Render = Callable[[int, str, str], JSONResponse]
"""A protocol's error body for ``(status, code, message)``."""


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


HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
"""The ``code`` of an HTTP error Starlette raises itself (any other status: ``http``)."""

MAPPED: tuple[type[Exception], ...] = (
    WalrusError,
    RequestValidationError,
    ValidationError,
    HTTPException,
    *REDIS_DOWN,
)
"""The exceptions :func:`failure_of` gives a meaning of their own (anything else is a 500)."""


def failure_of(exc: BaseException) -> tuple[int, str, str]:
    """``(status, code, message)`` of a failure: the one mapping every face renders.

    Our errors say their own; a body or an argument that fails validation is ``422 invalid``;
    Redis out of reach (connection, timeout, a read-only replica during a failover) is ``503
    unavailable``, to be retried; anything else is a ``500`` whose details stay in the log.
    """
    if isinstance(exc, WalrusError):
        return exc.status, exc.code, exc.message
    if isinstance(exc, RequestValidationError):
        return 422, "invalid", describe_invalid(exc.errors())
    if isinstance(exc, ValidationError):
        return 422, "invalid", describe_invalid(exc.errors(), "args")
    if isinstance(exc, HTTPException):
        return exc.status_code, HTTP_CODES.get(exc.status_code, "http"), str(exc.detail)
    if isinstance(exc, REDIS_DOWN):
        return 503, "unavailable", f"redis unavailable: {exc}"
    log.error("request failed", exc_info=exc)
    return 500, "error", "internal error"


def failure_response(exc: BaseException, render: Render | None = None) -> JSONResponse:
    """The answer to ``exc`` in ``render``'s shape (ours by default), ``Retry-After`` on a 503."""
    return with_retry_after((render or error_response)(*failure_of(exc)))


def install(app: FastAPI) -> None:
    """Register the exception handlers and the body size limit on ``app``."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        return failure_response(exc)

    # One handler per class: Starlette looks handlers up along the exception's MRO.
    for cls in MAPPED:
        app.add_exception_handler(cls, handle)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, before the app reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Check Content-Length, then count the streamed body.

        Not a coroutine: its frame would stay for as long as an SSE stream is open.
        """
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                message = f"request body exceeds the {self.limit}-byte limit"
                return error_response(413, "too_large", message)(scope, receive, send)
            chunked = chunked or name == b"transfer-encoding"
        if not chunked and scope.get("http_version") in ("1.0", "1.1"):
            # HTTP/1 without a chunked body: no body, or one of the declared length, which the
            # server's parser frames the message by (no byte past it is handed on), checked
            # above. Nothing to count: a stream's request keeps no counting wrapper.
            return self.app(scope, receive, send)
        return self.app(scope, _limited(receive, self.limit), send)


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive``, raising 413 once the request's body is over ``limit`` bytes."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                # FastAPI turns other exceptions raised while reading a body into a 400.
                raise HTTPException(413, f"request body exceeds the {limit}-byte limit")
        return message

    return limited


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
                except MAPPED as e:
                    return failure_response(e, render)

            return handle

    return ErrorRoute
