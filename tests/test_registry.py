"""The operations registry (gateway.registry): one table builds the HTTP routes and the WebSocket
ops, with one argument model and one answer to what a token needs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway import registry, ws
from gateway.app import create_app
from gateway.operation import Call
from gateway.tenant_routes import tenant_route
from walrus_tasks.config import load_config
from walrus_tasks.errors import InvalidInput
from walrus_tasks.models import SendMessage
from walrus_tasks.settings import Settings
from walrus_tasks.tenancy import OPEN


def sample(path: str) -> str:
    """``path`` with every parameter filled in."""
    return re.sub(r"{\w+}", "x", path)


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> set[tuple[str, str]]:
    home = tmp_path_factory.mktemp("registry-home")
    (home / "config.toml").write_text("")
    settings = Settings(home=home, redis_url="redis://127.0.0.1:9/0")  # never connected
    paths = create_app(settings, load_config(home)).openapi()["paths"]
    for item in paths.values():
        for op in item.values():
            assert len(op.get("tags", [])) == len(set(op.get("tags", []))) <= 1, op
    return {(method.upper(), path) for path, item in paths.items() for method in item}


def test_every_operation_with_a_route_is_served_at_its_paths(
    routes: set[tuple[str, str]],
) -> None:
    for op in registry.OPERATIONS.values():
        if op.http is not None:
            for path in (op.http.path, *op.http.aliases):
                assert (op.http.method, path) in routes, (op.name, path)


def test_a_tenant_token_may_call_exactly_the_tenant_operations_over_http() -> None:
    for op in registry.OPERATIONS.values():
        if op.http is not None:
            for path in (op.http.path, *op.http.aliases):
                allowed = tenant_route(op.http.method, sample(path))
                assert allowed == (op.access == "tenant"), (op.name, path)


def test_every_operation_and_alias_is_a_websocket_op_with_the_same_access() -> None:
    for op in registry.OPERATIONS.values():
        for name in (op.name, *op.aliases):
            handler, access = ws.handler_of(name)
            assert handler is not None and access == op.access, name
    for name, (access, _) in registry.STREAMS.items():
        if name in ws.STREAMS:  # a run's events are read over HTTP only
            assert ws.handler_of(name)[1] == access
    for old, new in registry.STREAM_ALIASES.items():
        assert ws.handler_of(old)[0] is ws.handler_of(new)[0]
    assert ws.handler_of("no_such_op")[0] is None


def test_a_frame_is_validated_by_the_operations_signature() -> None:
    send = registry.OPERATIONS["send"]
    args = send.arguments_of({"agent": "a", "content": "hi", "idempotency_key": "k"})
    assert args == {"agent": "a", "body": SendMessage(content="hi"), "idempotency_key": "k"}
    with pytest.raises(InvalidInput, match="content"):
        send.arguments_of({"agent": "a"})  # the body's required field
    with pytest.raises(InvalidInput, match="agent"):
        send.arguments_of({"content": "hi"})  # a path argument
    with pytest.raises(InvalidInput, match="idempotency_key"):
        send.arguments_of({"agent": "a", "content": "hi", "idempotency_key": 3})
    runs = registry.OPERATIONS["list_runs"]
    with pytest.raises(InvalidInput, match="limit"):
        runs.arguments_of({"limit": 0})  # Query(ge=1) of the HTTP route holds for a frame
    assert runs.arguments_of({"limit": "7"})["limit"] == 7


def test_an_unknown_agent_is_refused_before_the_body_is_read(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("")
    call = Call(None, load_config(tmp_path), Settings(home=tmp_path), OPEN, None)  # type: ignore[arg-type]
    with pytest.raises(Exception, match="unknown agent"):
        registry.OPERATIONS["send"].call_with(call, {"agent": "nope"})  # no content: still 404
