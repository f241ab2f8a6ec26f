"""The gateway's ASGI application: FastAPI, entered with fewer layers per request.

An SSE stream keeps every layer its request went through suspended for as long as the client
listens: each is a coroutine frame, some with closures. Measured with tracemalloc on ~900 open
streams (``docs/benchmarks.md``, issue 25, fourth round), four of those layers are FastAPI's
and Starlette's own and only pass the request on, about 1.5 KB a stream:

- ``FastAPI.__call__`` and ``Starlette.__call__``, which set ``scope["app"]`` and call the
  middleware stack: :meth:`GatewayApp.__call__` does the same in one coroutine, not two, when
  FastAPI's native telemetry is off;
- FastAPI's ``ExceptionTelemetryMiddleware`` (records an exception for that native telemetry,
  which the gateway does not use: its spans come from ``walrus_tasks.tracing``) and
  ``AppBodyLimitMiddleware`` (FastAPI's ``max_body_size``, which the gateway leaves unset: its
  own ``BodyLimit`` checks bodies): :meth:`GatewayApp.build_middleware_stack` leaves them out
  of the stack when they would only pass the request on.

When FastAPI's native telemetry is on (an OpenTelemetry provider configured before the first
request), every request takes FastAPI's own path, unchanged. Starlette's ``ServerErrorMiddleware``
(the 500 of an unhandled error) and every middleware the gateway adds stay.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

try:  # FastAPI's own pass-through layers (0.165); an older FastAPI has neither
    from fastapi._body_limit import AppBodyLimitMiddleware
    from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware

    PASS_THROUGH: tuple[type, ...] = (ExceptionTelemetryMiddleware, AppBodyLimitMiddleware)
except ImportError:  # pragma: no cover - another FastAPI
    PASS_THROUGH = ()


def native_telemetry(app: FastAPI) -> bool:
    """Whether FastAPI's native telemetry is on (it wraps each request: its path is kept)."""
    telemetry = getattr(app, "_native_telemetry", None)
    return telemetry is not None and bool(telemetry.enabled())


class GatewayApp(FastAPI):
    """FastAPI with fewer layers per request (see the module docstring)."""

    lean = False
    """The stack was built without the pass-through layers: HTTP requests enter it directly."""

    def build_middleware_stack(self) -> ASGIApp:
        """FastAPI's stack, without the layers that would only pass each request on."""
        stack = super().build_middleware_stack()
        if native_telemetry(self) or getattr(self, "max_body_size", None) is not None:
            return stack
        layer: Any = stack  # Starlette's ServerErrorMiddleware, then FastAPI's layers
        while isinstance(getattr(layer, "app", None), PASS_THROUGH):
            layer.app = layer.app.app
        self.lean = True
        return stack

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An HTTP request: ``scope["app"]`` set, straight into the middleware stack."""
        if self.lean and scope["type"] == "http" and not self.root_path:
            stack = self.middleware_stack
            assert stack is not None  # built before lean was set
            scope["app"] = self
            await stack(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
