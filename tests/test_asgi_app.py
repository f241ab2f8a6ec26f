"""The gateway's ASGI app enters its middleware stack with fewer layers (gateway.asgi_app).

Narrow in-process tests of the app's shape; every end-to-end test of the suite goes through
it on a real gateway process, and the fan-out bench measures what it saves.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp

from gateway.asgi_app import PASS_THROUGH, GatewayApp


class Passing:
    """A user middleware that only passes the request on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def make(**kwargs: Any) -> GatewayApp:
    app = GatewayApp(**kwargs)

    @app.get("/ok")
    def ok() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/frames")
    async def callers() -> list[str]:
        names, frame = [], sys._getframe().f_back
        while frame is not None:
            names.append(frame.f_code.co_qualname)
            frame = frame.f_back
        return names

    app.add_middleware(Passing)
    return app


def layers(app: GatewayApp) -> list[type]:
    out, layer = [], app.middleware_stack
    while layer is not None and not isinstance(layer, type(app.router)):
        out.append(type(layer))
        layer = getattr(layer, "app", None)
    return out


def frames(client: TestClient) -> list[str]:
    """The qualified names of the frames a request is inside, its endpoint's callers."""
    return list(client.get("/frames").json())


def test_requests_enter_the_stack_directly_without_the_pass_through_layers() -> None:
    assert PASS_THROUGH, "this FastAPI has no pass-through layer: the module has nothing to do"
    app = make()
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/ok").json() == {"ok": "yes"}
        failed = client.get("/boom")
        assert failed.status_code == 500 and failed.text == "Internal Server Error"
        assert app.lean
        stack = layers(app)
        assert stack[0] is ServerErrorMiddleware and Passing in stack, stack
        assert not set(stack) & set(PASS_THROUGH), stack
        inside = frames(client)
        assert "GatewayApp.__call__" in inside and "Passing.__call__" in inside, inside
        assert "ServerErrorMiddleware.__call__" in inside, inside
        assert "Starlette.__call__" not in inside, inside
        assert not {f"{t.__name__}.__call__" for t in PASS_THROUGH} & set(inside), inside


@pytest.mark.parametrize(
    "kwargs",
    [{"telemetry": {"tracer_provider": TracerProvider()}}, {"max_body_size": 1024}],
    ids=["native telemetry on", "FastAPI's body limit set"],
)
def test_with_fastapi_s_own_layers_in_use_every_request_takes_its_path(
    kwargs: dict[str, Any],
) -> None:
    app = make(**kwargs)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/ok").json() == {"ok": "yes"}
        assert client.get("/boom").status_code == 500
        assert not app.lean
        assert set(layers(app)) & set(PASS_THROUGH)
        inside = frames(client)
        assert "Starlette.__call__" in inside and "FastAPI.__call__" in inside, inside
        assert {f"{t.__name__}.__call__" for t in PASS_THROUGH} <= set(inside), inside
