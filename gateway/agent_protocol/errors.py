"""The Agent Protocol's one error mapping: ``{"detail": message}`` with the status code.

That is the shape LangGraph Server answers with and its SDKs read.
"""

from fastapi.responses import JSONResponse

from gateway.errors import error_route


def detail(status: int, message: str) -> JSONResponse:
    """``{"detail": message}`` with ``status``."""
    return JSONResponse({"detail": message}, status_code=status)


AgentProtocolRoute = error_route(lambda status, code, message: detail(status, message))
"""Agent Protocol routes: every failure comes out as ``{"detail"}``."""
