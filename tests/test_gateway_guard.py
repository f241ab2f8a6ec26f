"""A gateway without tokens serves only local programs and loopback pages (no DNS rebinding, no
cross-origin requests or WebSockets), and a WebSocket frame over the body limit closes 1009."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.cluster import Cluster, running
from tests.conftest import redis_db_url
from walrus_tasks.redis_server import RedisServer

ALLOWED = "https://app.example:8443"


@pytest.fixture(scope="module")
def open_gateway(
    redis_server: RedisServer, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway with no tokens on 127.0.0.1, one extra allowed origin, and no worker."""
    c = Cluster(
        redis_url=redis_db_url(redis_server),
        home=home,
        log_dir=tmp_path_factory.mktemp("guard"),
        env_extra={"WALRUS_GATEWAY_ALLOWED_ORIGINS": f" {ALLOWED}/ , http://other.test"},
    )
    with running(c, workers=()):
        yield c


def ws_url(cluster: Cluster) -> str:
    return cluster.gateway_url.replace("http://", "ws://") + "/v1/ws"


def port(cluster: Cluster) -> str:
    return cluster.gateway_url.rsplit(":", 1)[1]


def snapshot(cluster: Cluster) -> dict[str, Any]:
    r = cluster.redis()
    return {k: r.dump(k) for k in r.scan_iter("*")}


def assert_forbidden(resp: httpx.Response, mentions: str) -> None:
    assert resp.status_code == 403, resp.text
    error = resp.json()["error"]
    assert error["code"] == "forbidden"
    assert mentions in error["message"]


def ws_ping(url: str, **headers: str) -> dict[str, Any]:
    with connect(url, open_timeout=10, additional_headers=headers) as conn:
        conn.send(json.dumps({"id": 1, "op": "ping"}))
        return dict(json.loads(conn.recv(timeout=10)))


def test_a_websocket_from_a_foreign_origin_is_refused(open_gateway: Cluster) -> None:
    with pytest.raises(InvalidStatus) as refused:
        ws_ping(ws_url(open_gateway), Origin="http://evil.example")
    response = refused.value.response
    assert response.status_code == 403
    assert json.loads(response.body)["error"]["code"] == "forbidden"
    for origin in ("null", "https://app.example", "http://127.0.0.1.evil.example"):
        with pytest.raises(InvalidStatus):
            ws_ping(ws_url(open_gateway), Origin=origin)


def test_a_foreign_host_is_refused_on_http(open_gateway: Cluster, sender: str) -> None:
    before = snapshot(open_gateway)
    with open_gateway.http() as c:
        for host in ("evil.example", f"evil.example:{port(open_gateway)}", "127.0.0.2.nip.io"):
            assert_forbidden(c.get("/v1/agents", headers={"Host": host}), "Host")
            assert_forbidden(c.get("/healthz", headers={"Host": host}), "Host")
        resp = c.post(
            "/v1/agents/echo/messages",
            json={"content": "hi", "sender": sender},
            headers={"Host": "evil.example"},
        )
        assert_forbidden(resp, "evil.example")
    # A rebinding page's WebSocket: the URL names its host, the socket reaches the gateway.
    with (
        socket.create_connection(("127.0.0.1", int(port(open_gateway)))) as sock,
        pytest.raises(InvalidStatus) as refused,
        connect(f"ws://evil.example:{port(open_gateway)}/v1/ws", sock=sock, open_timeout=10),
    ):
        pass
    assert refused.value.response.status_code == 403
    assert snapshot(open_gateway) == before, "a refused request changes nothing"


def test_a_cross_origin_http_request_is_refused(open_gateway: Cluster, sender: str) -> None:
    before = snapshot(open_gateway)
    with open_gateway.http() as c:
        # A "simple" cross-origin POST: a browser sends it without a preflight.
        resp = c.post(
            "/v1/agents/echo/messages",
            content=json.dumps({"content": "hi", "sender": sender}),
            headers={"Origin": "http://evil.example", "Content-Type": "text/plain"},
        )
        assert_forbidden(resp, "Origin")
    assert snapshot(open_gateway) == before


def test_loopback_hosts_and_origins_are_served(open_gateway: Cluster) -> None:
    p = port(open_gateway)
    with open_gateway.http() as c:
        for host in (f"127.0.0.1:{p}", f"localhost:{p}", f"[::1]:{p}", "localhost", "127.0.0.1"):
            assert c.get("/v1/agents", headers={"Host": host}).status_code == 200, host
        for origin in (f"http://127.0.0.1:{p}", "http://localhost:5173", "https://[::1]:3000"):
            resp = c.get("/v1/agents", headers={"Origin": origin})
            assert resp.status_code == 200, (origin, resp.text)
        same = c.get(
            "/v1/agents", headers={"Host": f"localhost:{p}", "Origin": f"http://localhost:{p}"}
        )
        assert same.status_code == 200
    assert ws_ping(ws_url(open_gateway))["type"] == "pong"  # no Origin: a program
    assert ws_ping(ws_url(open_gateway), Origin="http://localhost:5173")["type"] == "pong"
    assert ws_ping(ws_url(open_gateway), Origin=f"http://127.0.0.1:{p}")["type"] == "pong"


def test_allowed_origins_and_their_hosts_are_served(open_gateway: Cluster) -> None:
    with open_gateway.http() as c:
        resp = c.get("/v1/agents", headers={"Host": "app.example", "Origin": ALLOWED})
        assert resp.status_code == 200, resp.text
        assert c.get("/healthz", headers={"Host": "other.test:8765"}).status_code == 200
        assert_forbidden(c.get("/v1/agents", headers={"Origin": "https://app.example"}), "Origin")
    assert ws_ping(ws_url(open_gateway), Origin=ALLOWED)["type"] == "pong"
    assert ws_ping(ws_url(open_gateway), Origin="HTTP://OTHER.TEST")["type"] == "pong"


def test_a_websocket_frame_over_the_body_limit_closes_1009_and_stores_nothing(
    open_gateway: Cluster,
) -> None:
    sender = f"t-{uuid.uuid4().hex[:12]}"
    before = snapshot(open_gateway)
    frame = json.dumps(
        {"id": 1, "op": "send", "agent": "echo", "sender": sender, "content": "x" * (2 << 20)}
    )
    with connect(ws_url(open_gateway), open_timeout=10, max_size=None) as conn:
        conn.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            conn.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    assert snapshot(open_gateway) == before, "nothing stored: no run, no inbox entry"
    assert ws_ping(ws_url(open_gateway))["type"] == "pong", "the gateway serves on"
