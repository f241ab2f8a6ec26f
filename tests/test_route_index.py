"""gateway/route_index.py: a gated router answers exactly as the full walk would."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI
from starlette.routing import Match

from gateway import route_index
from gateway.app import create_app
from walrus_tasks.config import load_config
from walrus_tasks.settings import Settings


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    home: Path = tmp_path_factory.mktemp("route-index-home")
    (home / "config.toml").write_text("")
    settings = Settings(home=home, redis_url="redis://127.0.0.1:9/0")  # never connected
    return create_app(settings, load_config(home))


def scope(kind: str, path: str, method: str = "GET", root_path: str = "") -> dict[str, Any]:
    return {"type": kind, "path": path, "method": method, "root_path": root_path,
            "headers": [], "query_string": b""}  # fmt: skip


def request_paths(app: FastAPI) -> list[str]:
    """Every route's path with its parameters filled, with and without a trailing slash."""
    paths = {"/", "/nowhere", "/v1", "/threads"}
    for route in app.routes:
        for p in route_index_paths(route):
            filled = re.sub(r"{[^}]+}", "x", p)
            paths |= {filled, filled.rstrip("/") + "/"}
    return sorted(paths)


def route_index_paths(route: Any) -> list[str]:
    if hasattr(route, "path"):
        return [route.path]
    return [getattr(r, "path", "") for r in route.original_router.routes]


def test_every_gated_router_answers_every_path_as_the_full_walk(app: FastAPI) -> None:
    gated = [r for r in app.router.routes if "matches" in vars(r)]
    assert len(gated) >= 15, "the native, OpenAI, Anthropic and Agent Protocol routers are gated"
    skipped = 0
    for route in gated:
        for path in request_paths(app):
            for kind, method in (("http", "GET"), ("http", "POST"), ("websocket", "GET")):
                s = scope(kind, path, method)
                fast, full = route.matches(dict(s)), type(route).matches(route, dict(s))
                assert fast[0] == full[0], (path, kind, method)
                skipped += fast[0] == Match.NONE and route_index.head(path) is not None
    assert skipped > 0


def test_a_path_under_a_root_path_is_always_walked_in_full() -> None:
    calls: list[str] = []

    def full(s: Any) -> tuple[Match, dict[str, Any]]:
        calls.append(s["path"])
        return Match.NONE, {}

    gated = route_index.gate(full, frozenset({"v1"}))
    assert gated(scope("http", "/threads")) == (Match.NONE, {}) and calls == []
    gated(scope("http", "/v1/runs"))
    gated(scope("http", "/api/threads", root_path="/api"))
    assert calls == ["/v1/runs", "/api/threads"]


def test_a_router_with_a_parameter_first_is_not_gated() -> None:
    router = APIRouter()
    router.add_api_route("/{anything}/x", lambda: None)
    router.add_api_route("/v1/y", lambda: None)
    assert route_index.heads(router) is None
    app = FastAPI()
    route_index.include(app, router)
    assert all("matches" not in vars(r) for r in app.router.routes)
