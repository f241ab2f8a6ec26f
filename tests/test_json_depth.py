"""JSON nested past walrus_tasks.json_depth.MAX_DEPTH: refused where it enters (every HTTP body,
every WebSocket frame) with 422 and nothing stored; data stored before the bound never makes a
read or a search answer 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from walrus_tasks import keys
from walrus_tasks.json_depth import MAX_DEPTH, TRIMMED, loads_checked, too_deep, trim

pytestmark = pytest.mark.security


def nest(depth: int) -> str:
    """JSON text of objects nested ``depth`` levels: ``{"a": {"a": … 1}}``."""
    return '{"a":' * depth + "1" + "}" * depth


@pytest.fixture
def http(gateway_client: TestClient) -> httpx.Client:
    """The module's in-process gateway: the bound is the app's, no server process needed."""
    return gateway_client


@pytest.fixture
def db(gateway_client: TestClient) -> Iterator[redis.Redis]:
    app: Any = gateway_client.app
    client = redis.Redis.from_url(app.state.settings.redis_url, decode_responses=True)
    yield client
    client.close()


def post_raw(http: httpx.Client, method: str, path: str, body: str) -> httpx.Response:
    return http.request(method, path, content=body, headers={"Content-Type": "application/json"})


def test_depth_helpers() -> None:
    assert not too_deep(json.loads(nest(MAX_DEPTH)))
    assert too_deep(json.loads(nest(MAX_DEPTH + 1)))
    assert loads_checked("[[1]]") == [[1]]
    with pytest.raises(ValueError, match="deeper than 64"):
        loads_checked(nest(5000))  # past the C decoder's own recursion limit
    cut = trim(json.loads(nest(300)))
    assert not too_deep(cut)
    inner = cut
    for _ in range(MAX_DEPTH - 1):
        inner = inner["a"]
    assert inner == {"a": TRIMMED}


def test_a_store_item_nested_300_levels_is_422_and_not_stored(
    http: httpx.Client, db: redis.Redis
) -> None:
    body = f'{{"namespace": ["deep"], "key": "k300", "value": {nest(300)}}}'
    resp = post_raw(http, "PUT", "/store/items", body)
    assert resp.status_code == 422, resp.text
    assert "nested deeper than 64 levels" in resp.json()["detail"]
    assert db.hget(keys.ap_store("deep"), "k300") is None
    assert http.get("/store/items", params={"namespace": "deep", "key": "k300"}).status_code == 404


def test_a_body_at_the_limit_is_accepted(http: httpx.Client) -> None:
    # The body's object is level 1: a value nested MAX_DEPTH - 1 levels makes it MAX_DEPTH.
    ok = f'{{"namespace": ["deep"], "key": "k63", "value": {nest(MAX_DEPTH - 1)}}}'
    assert post_raw(http, "PUT", "/store/items", ok).status_code == 204
    over = f'{{"namespace": ["deep"], "key": "k64", "value": {nest(MAX_DEPTH)}}}'
    assert post_raw(http, "PUT", "/store/items", over).status_code == 422
    got = http.get("/store/items", params={"namespace": "deep", "key": "k63"})
    assert got.status_code == 200
    assert not too_deep(got.json()["value"], MAX_DEPTH - 1)


def test_thread_metadata_nested_900_levels_is_422_not_stored_and_search_stays_200(
    http: httpx.Client,
) -> None:
    before = http.post("/threads/search", json={"limit": 1000})
    assert before.status_code == 200
    resp = post_raw(http, "POST", "/threads", f'{{"metadata": {nest(900)}}}')
    assert resp.status_code == 422, resp.text
    after = http.post("/threads/search", json={"limit": 1000})
    assert after.status_code == 200
    assert len(after.json()) == len(before.json())


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/agents/echo/messages", "native"),
        ("/v1/events", "native"),
        ("/v1/crons", "native"),
        ("/v1/subscriptions", "native"),
        ("/v1/chat/completions", "openai"),
        ("/v1/responses", "openai"),
        ("/v1/messages", "anthropic"),
        ("/runs", "detail"),
        ("/assistants/search", "detail"),
    ],
)
def test_every_json_route_refuses_a_deep_body_in_its_protocol_s_shape(
    http: httpx.Client, db: redis.Redis, path: str, shape: str
) -> None:
    data = refused_deep(http, db, path, f'{{"content": "hi", "metadata": {nest(100)}}}', shape)
    if shape != "detail":
        assert data["error"]["code"] == "invalid"


def refused_deep(http: httpx.Client, db: redis.Redis, path: str, body: str, shape: str) -> Any:
    """POST ``body``: refused for its depth in ``shape`` (the response's JSON), nothing stored."""
    size = db.dbsize()
    resp = post_raw(http, "POST", path, body)
    assert resp.status_code == (400 if shape == "anthropic" else 422), resp.text
    data: Any = resp.json()
    message = data["detail"] if shape == "detail" else data["error"]["message"]
    assert "nested deeper than 64 levels" in message
    assert db.dbsize() == size  # nothing stored
    return data


@pytest.mark.parametrize(
    ("path", "body", "shape"),
    [
        ("/v1/agents/echo/messages", '{"content": "hi", "stream": true, "m": DEEP}', "native"),
        ("/v1/chat/completions", '{"model": "echo", "stream": true, "messages": DEEP}', "openai"),
        ("/v1/responses", '{"model": "echo", "stream": true, "input": DEEP}', "openai"),
        (  # a body its model takes: only the depth refuses it
            "/v1/responses",
            '{"model": "echo", "stream": true, "input": "hi",'
            ' "tools": [{"type": "function", "name": "f",'
            ' "parameters": {"type": "object", "x": DEEP}}]}',
            "openai",
        ),
        ("/v1/messages", '{"model": "echo", "stream": true, "messages": DEEP}', "anthropic"),
        ("/a2a/echo", '{"jsonrpc": "2.0", "method": "SubscribeToTask", "params": DEEP}', "detail"),
    ],
)
def test_a_deep_body_that_asks_for_a_stream_is_refused_as_any_deep_body(
    http: httpx.Client, db: redis.Redis, path: str, body: str, shape: str
) -> None:
    """The plain streams (gateway.sse_route) read these bodies before the depth check does."""
    refused_deep(http, db, path, body.replace("DEEP", nest(100)), shape)


def test_deep_data_stored_before_the_bound_reads_200(http: httpx.Client, db: redis.Redis) -> None:
    """Written straight into Redis (as an older gateway stored it): reads cut it, never 500."""
    put = {"namespace": ["old"], "key": "k", "value": {"ok": 1}}
    assert http.put("/store/items", json=put).status_code == 204
    stored = json.loads(db.hget(keys.ap_store("old"), "k") or "")
    db.hset(
        keys.ap_store("old"),
        "k",
        json.dumps({**stored, "value": "VALUE"}).replace('"VALUE"', nest(300)),
    )
    got = http.get("/store/items", params={"namespace": "old", "key": "k"})
    assert got.status_code == 200, got.text
    assert TRIMMED in got.text
    found = http.post("/store/items/search", json={"namespace_prefix": ["old"]})
    assert found.status_code == 200, found.text

    thread = http.post("/threads", json={"metadata": {"ok": 1}}).json()["thread_id"]
    db.hset(keys.ap_thread(thread), "metadata", nest(900))
    one = http.get(f"/threads/{thread}")
    assert one.status_code == 200, one.text
    assert TRIMMED in one.text
    search = http.post("/threads/search", json={"limit": 1000})
    assert search.status_code == 200, search.text
    assert thread in {t["thread_id"] for t in search.json()}


def test_a_websocket_frame_too_deep_gets_an_error_frame(gateway_client: TestClient) -> None:
    with gateway_client.websocket_connect("ws://127.0.0.1:8765/v1/ws") as ws:
        ws.send_text(f'{{"id": 1, "op": "publish_event", "source": "s", "payload": {nest(200)}}}')
        frame = json.loads(ws.receive_text())
        assert frame["type"] == "error", frame
        assert frame["error"]["code"] == "invalid"
        assert "nested deeper than 64 levels" in frame["error"]["message"]
        ws.send_text(json.dumps({"id": 2, "op": "ping"}))
        assert json.loads(ws.receive_text())["type"] == "pong"
