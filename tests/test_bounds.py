"""No client ties the gateway up: header and idle timeouts, a head size limit, a per-address
connection cap, a per-token stream cap (gateway.server, gateway.stream_limit), all against a real
gateway process over raw sockets."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.cluster import Cluster, running, wait_for
from tests.conftest import redis_db_url, write_home
from tests.test_keepalive import read_http
from walrus_tasks.redis_server import RedisServer

pytestmark = pytest.mark.security

TOKEN_A = f"bounds-a-{uuid.uuid4().hex}"
TOKEN_B = f"bounds-b-{uuid.uuid4().hex}"
TIMEOUT = 1.5
"""The header and idle timeouts of the test gateway (seconds)."""
STREAMS = 3
"""Open event streams per token of the test gateway."""


@pytest.fixture(scope="module")
def bounds_home(tmp_path_factory: pytest.TempPathFactory, fake_llm: Any) -> Path:
    home = write_home(tmp_path_factory.mktemp("bounds-home"), fake_llm.base_url)
    with (home / "config.toml").open("a") as f:
        f.write(f'\n[gateway]\ntokens = ["{TOKEN_A}", "{TOKEN_B}"]\n')
    return home


@contextlib.contextmanager
def gateway(redis_server: RedisServer, home: Path, logs: Path, **env: str) -> Iterator[Cluster]:
    c = Cluster(redis_url=redis_db_url(redis_server), home=home, log_dir=logs, env_extra=env)
    with running(c, workers=()):
        yield c


@pytest.fixture(scope="module")
def bounded(
    redis_server: RedisServer, bounds_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway (no worker) with short timeouts and a small stream cap."""
    with gateway(
        redis_server, bounds_home, tmp_path_factory.mktemp("l"),
        WALRUS_GATEWAY_HEADER_TIMEOUT=str(TIMEOUT), WALRUS_GATEWAY_IDLE_TIMEOUT=str(TIMEOUT),
        WALRUS_GATEWAY_MAX_STREAMS_PER_CLIENT=str(STREAMS),
    ) as c:  # fmt: skip
        yield c


def address(cluster: Cluster) -> tuple[str, int]:
    host, port = cluster.gateway_url.removeprefix("http://").split(":")
    return host, int(port)


def request(path: str = "/healthz", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode() + extra + b"\r\n"


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def closed_within(
    sock: socket.socket, seconds: float, got: bytearray | None = None
) -> bytes | None:
    """What ``sock`` received until the server closed it, or None if it stayed open.

    ``got`` keeps what came before the server closed across calls: an answer read just before
    one call's time ran out, its close read by the next, is the answer of that close.
    """
    got = bytearray() if got is None else got
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk
    return None


def test_slow_headers_are_cut_by_the_header_timeout(bounded: Cluster) -> None:
    """A request line, then one header line at a time, never the end: 408 and closed."""
    socks = [socket.create_connection(address(bounded)) for _ in range(5)]
    try:
        for s in socks:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = time.monotonic()
        answers: dict[int, bytes] = {}
        received = [bytearray() for _ in socks]  # an answer whose close comes a call later
        # A header line per socket every 0.5 s; within the timeout plus a margin all are cut.
        for i in range(int((TIMEOUT + 4) / 0.5)):
            for n, s in enumerate(socks):
                # Never send after the answer came: once the server's linger ends, bytes sent
                # to the closed socket draw a reset that can destroy the unread answer.
                if n not in answers and not select.select([s], [], [], 0)[0]:
                    with contextlib.suppress(OSError):  # closed meanwhile: seen below
                        s.sendall(f"X-Slow-{i}: {i}\r\n".encode())
            for n, s in enumerate(socks):
                if n in answers:
                    continue
                if (got := closed_within(s, 0.5 / len(socks), received[n])) is not None:
                    answers[n] = got
            if len(answers) == len(socks):
                break
        assert len(answers) == len(socks), f"still open after {time.monotonic() - started:.1f} s"
        assert time.monotonic() - started < TIMEOUT + 4
        for got in answers.values():
            assert status_of(got) == 408, got
            assert b'"timeout"' in got
    finally:
        for s in socks:
            s.close()


def test_silent_connections_are_closed_by_the_idle_timeout(bounded: Cluster) -> None:
    socks = [socket.create_connection(address(bounded)) for _ in range(5)]
    try:
        for s in socks:
            assert closed_within(s, TIMEOUT + 4) == b"", "a silent connection stayed open"
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("size", [16 * 1024 + 1, 1024 * 1024])
def test_a_head_over_the_limit_is_answered_431(bounded: Cluster, size: int) -> None:
    with socket.create_connection(address(bounded)) as s:
        s.sendall(request(extra=b"X-Big: " + b"a" * size + b"\r\n"))
        got = read_http(s)
    assert status_of(got) == 431, got[:300]
    assert json.loads(got.partition(b"\r\n\r\n")[2])["error"]["code"] == "headers_too_large"


def test_a_head_under_the_limit_is_served(bounded: Cluster) -> None:
    with socket.create_connection(address(bounded)) as s:
        s.sendall(request(extra=b"X-Big: " + b"a" * (15 * 1024) + b"\r\n"))
        assert status_of(read_http(s)) == 200


def test_connections_over_the_per_address_cap_are_refused(
    redis_server: RedisServer, bounds_home: Path, tmp_path: Path
) -> None:
    """Cap 5: the 6th connection is answered 429 and closed; the 5 stay served."""
    with gateway(
        redis_server, bounds_home, tmp_path, WALRUS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT="5"
    ) as c:
        there = address(c)
        socks = [socket.create_connection(address(c)) for _ in range(5)]
        try:
            for s in socks:  # each is accepted and counted once it is served
                s.sendall(request())
                assert status_of(read_http(s)) == 200
            with socket.create_connection(address(c)) as sixth:
                sixth.sendall(request())
                got = closed_within(sixth, 5)
            assert got is not None, "the 6th connection stayed open"
            assert status_of(got) == 429, got
            assert b"too_many_connections" in got
            for s in socks:  # the five are still open and served
                s.sendall(request())
                assert status_of(read_http(s)) == 200
            socks.pop().close()

            def served() -> bool:
                with socket.create_connection(there) as s:
                    s.sendall(request())
                    return status_of(read_http(s)) == 200

            wait_for(served, 10, 0.1, "a connection once one of the five closed")
        finally:
            for s in socks:
                s.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def open_stream(client: httpx.Client, url: str, token: str) -> httpx.Response:
    return client.send(client.build_request("GET", url, headers=auth(token)), stream=True)


def test_event_streams_over_the_per_token_cap_are_refused_429(bounded: Cluster) -> None:
    url = bounded.gateway_url + "/v1/events"
    with httpx.Client(timeout=10) as client:
        opened = []
        try:
            for _ in range(STREAMS):
                resp = client.send(
                    client.build_request("GET", url, headers=auth(TOKEN_A)), stream=True
                )
                assert resp.status_code == 200
                opened.append(resp)
            over = client.get(url, headers=auth(TOKEN_A))
            assert over.status_code == 429, over.text
            assert over.json()["error"]["code"] == "too_many_streams"
            # Another token has streams of its own.
            with client.stream("GET", url, headers=auth(TOKEN_B)) as other:
                assert other.status_code == 200
            # And a WebSocket subscription counts too: an error frame, the socket stays open.
            ws_url = bounded.gateway_url.replace("http://", "ws://") + "/v1/ws"
            with connect(ws_url, additional_headers=auth(TOKEN_A), open_timeout=10) as ws:
                ws.send(json.dumps({"id": 1, "op": "subscribe_events"}))
                frame = json.loads(ws.recv(timeout=10))
                assert frame["type"] == "error", frame
                assert frame["error"]["code"] == "too_many_streams"
                ws.send(json.dumps({"id": 2, "op": "ping"}))
                assert json.loads(ws.recv(timeout=10))["type"] == "pong"
            opened.pop().close()

            def reopened() -> bool:
                resp = client.send(
                    client.build_request("GET", url, headers=auth(TOKEN_A)), stream=True
                )
                if resp.status_code == 200:
                    opened.append(resp)
                    return True
                resp.close()
                return False

            wait_for(reopened, 10, 0.1, "a stream once one of the three closed")
        finally:
            for resp in opened:
                resp.close()


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted(
    redis_server: RedisServer, home: Path, tmp_path: Path
) -> None:
    """Peer 127.0.0.1 listed as a proxy: connections and streams count for X-Forwarded-For."""
    with gateway(
        redis_server, home, tmp_path,
        WALRUS_GATEWAY_TRUSTED_PROXIES="127.0.0.1",
        WALRUS_GATEWAY_MAX_CONNECTIONS_PER_CLIENT="2",
        WALRUS_GATEWAY_MAX_STREAMS_PER_CLIENT="1",
    ) as c:  # fmt: skip
        there = address(c)

        def via(client: str, path: str = "/healthz") -> socket.socket:
            s = socket.create_connection(there)
            s.sendall(request(path, f"X-Forwarded-For: {client}\r\n".encode()))
            return s

        held = [via("10.0.0.1"), via("10.0.0.1"), via("10.0.0.2")]
        try:
            for s in held:  # the proxy's own address is not capped: three connections
                assert status_of(read_http(s)) == 200
            third = via("10.0.0.1")
            held.append(third)
            got = closed_within(third, 5)
            assert got is not None and status_of(got) == 429, got
            # Streams count per forwarded client too (no tokens configured here).
            feed = httpx.Client(base_url=c.gateway_url, timeout=10)
            try:
                first = feed.send(
                    feed.build_request(
                        "GET", "/v1/events", headers={"X-Forwarded-For": "10.0.0.3"}
                    ),
                    stream=True,
                )
                assert first.status_code == 200
                again = feed.get("/v1/events", headers={"X-Forwarded-For": "10.0.0.3"})
                assert again.status_code == 429, again.text
                with feed.stream(
                    "GET", "/v1/events", headers={"X-Forwarded-For": "10.0.0.4"}
                ) as other:
                    assert other.status_code == 200
                first.close()
            finally:
                feed.close()
        finally:
            for s in held:
                s.close()
