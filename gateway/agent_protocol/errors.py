"""The Agent Protocol's one error mapping: ``{"detail": message}`` with the status code.

That is the shape LangGraph Server answers with and its SDKs read.
"""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from gateway.errors import REDIS_DOWN, RETRY_AFTER, _describe
from walrus_tasks.errors import WalrusError


def detail(status: int, message: str) -> JSONResponse:
    """``{"detail": message}`` with ``status``."""
    return JSONResponse({"detail": message}, status_code=status)


class AgentProtocolRoute(APIRoute):
    """A route whose failures (validation included) come out as ``{"detail"}``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """Wrap the handler so every failure we know of becomes ``detail``."""
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except WalrusError as e:
                return detail(e.status, e.message)
            except RequestValidationError as e:
                return detail(422, _describe(e.errors()))
            except HTTPException as e:
                return detail(e.status_code, str(e.detail))
            except REDIS_DOWN as e:
                response = detail(503, f"redis unavailable: {e}")
                response.headers["Retry-After"] = str(RETRY_AFTER)
                return response

        return handle
