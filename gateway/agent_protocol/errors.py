"""The Agent Protocol's one error mapping: ``{"detail": message}`` with the status code.

That is the shape LangGraph Server answers with and its SDKs read.
"""

from fastapi.responses import JSONResponse

from gateway.errors import error_route


def detail(status: int, message: str) -> JSONResponse:
    """``{"detail": message}`` with ``status``."""
    return JSONResponse({"detail": message}, status_code=status)


def render(status: int, code: str, message: str) -> JSONResponse:
    """A failure as the Agent Protocol answers it (``detail``; it has no ``code``)."""
    return detail(status, message)


AgentProtocolRoute = error_route(render)
"""Agent Protocol routes: every failure comes out as ``{"detail"}``."""
