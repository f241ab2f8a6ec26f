"""The A2A face's one error mapping: a walrus failure as the A2A error the SDK renders.

The SDK's routes render an :class:`~a2a.utils.errors.A2AError` in each binding's shape (a
JSON-RPC ``error`` object with the A2A code, or a ``google.rpc.Status``-like ``{"error": {code,
status, message, details}}`` with its HTTP status), and anything else as an internal error that
would show the exception's text. So every failure of the handler leaves it as an A2AError:
:func:`a2a_error` turns ``gateway.errors.failure_of``'s ``(status, code, message)`` into one
(docs/design.md, invariant 21), keeping walrus's ``code`` in the error's ``ErrorInfo``
metadata (``too_many_streams``, ``unavailable``, ...).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import aclosing, contextmanager
from typing import NoReturn, TypeVar

from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import (
    A2AError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    MethodNotFoundError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from starlette.responses import JSONResponse

from gateway.errors import failure_of

T = TypeVar("T")


def a2a_error(status: int, code: str, message: str) -> A2AError:
    """The A2A error of a walrus failure ``(status, code, message)``.

    404 is a task not found (the only thing an A2A call looks up); 400 and 422 invalid params;
    409 (the run's state forbids it) an unsupported operation, which REST renders as 400
    ``FAILED_PRECONDITION``; 403 and 413 an invalid request; anything else (429 too many
    streams, 503 Redis away, 500) an internal error whose metadata says which.
    """
    data = {"code": code}
    if status == 404:
        return TaskNotFoundError(message, data)
    if status in (400, 422):
        return InvalidParamsError(message, data)
    if status == 409:
        return UnsupportedOperationError(message, data)
    if status in (403, 413):
        return InvalidRequestError(message, data)
    return InternalError(message, data)


@contextmanager
def translated() -> Iterator[None]:
    """Let A2A errors through and turn any other failure into one (:func:`a2a_error`)."""
    try:
        yield
    except A2AError:
        raise
    except Exception as e:
        raise a2a_error(*failure_of(e)) from e


async def translating(items: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
    """``items``, any failure among them turned into an A2A error (:func:`translated`)."""
    async with aclosing(items):
        with translated():
            async for item in items:
                yield item


def stream_ended(code: str, message: str) -> NoReturn:
    """End an A2A stream that ``gateway.sse.guarded`` cut (Redis away, the gateway stopping).

    The SDK writes the error as the stream's last event (``event: error``); the client
    raises it, and subscribes to the task again to go on.
    """
    raise InternalError(f"{message}; subscribe to the task again to go on", {"code": code})


def unknown_agent(agent: str, jsonrpc: bool) -> JSONResponse:
    """``404`` for an A2A call to an agent that is not configured, in the binding's shape."""
    error = MethodNotFoundError(f"unknown agent {agent!r}: the gateway's card lists them")
    body = build_error_response(None, error) if jsonrpc else build_rest_error_payload(error)
    return JSONResponse(body, status_code=404)
