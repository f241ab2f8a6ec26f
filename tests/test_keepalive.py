"""The gateway keeps an idle keep-alive connection open longer than its clients keep it pooled.

A client reuses a pooled connection until its own idle expiry (``KEEPALIVE_EXPIRY``, httpx's
5 s). uvicorn's default keep-alive was 5 s too, so a connection idle for about 5 s was closed
by the gateway just as the client sent its next request on it: a reset, ``httpx.ReadError``,
for a request the gateway never read (about one POST in 2000-5000 of the benchmark's
throughput phase). Raw sockets here, so that no client pool hides a closed connection by
quietly opening another one. And when a connection drops anyway (a proxy with a shorter
keep-alive in front), the walrus clients send a GET again, and a message only under its
``Idempotency-Key`` (``tests/test_idempotency.py``); nothing else.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.cluster import Cluster
from walrus_tasks.client import AsyncClient, Client, GatewayUnreachable
from walrus_tasks.client.core import KEEPALIVE_EXPIRY

CONNECTIONS = 16

IDLE = KEEPALIVE_EXPIRY + 1.0
"""How long each connection idles: as long as a client may keep it, plus scheduling slack."""


def post(sock: socket.socket, host: str, sender: str) -> tuple[int, bytes]:
    """Send one keep-alive POST of a message on ``sock``; its status and body."""
    body = json.dumps({"content": "hi", "sender": sender}).encode()
    sock.sendall(
        b"POST /v1/agents/echo/messages HTTP/1.1\r\nHost: " + host.encode() + b"\r\n"
        b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n"
        b"\r\n" + body
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"the gateway closed the connection; got {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int({k.lower(): v for k, v in headers.items()}["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the gateway closed the connection mid-body")
        rest += chunk
    return int(lines[0].split()[1]), rest


def after_idle(cluster: Cluster, sender: str, connections: int, idle: float) -> list[object]:
    """Start the gateway; POST once on each of ``connections`` sockets, let them all idle
    ``idle`` seconds, POST again on each: the second answers (a status, or the error)."""
    url = cluster.start_gateway()
    cluster.wait_ready()
    host = urlsplit(url).netloc
    port = int(url.rsplit(":", 1)[1])
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(connections)]
    try:
        for i, sock in enumerate(socks):
            sock.settimeout(30)
            assert post(sock, host, f"{sender}-{i}")[0] == 202
        time.sleep(idle)
        answers: list[object] = []
        for i, sock in enumerate(socks):
            try:
                status, body = post(sock, host, f"{sender}-{i}")
                answers.append(status)
                assert json.loads(body)["run_id"]
            except OSError as e:  # ConnectionError included: closed or reset by the gateway
                answers.append(type(e).__name__)
        return answers
    finally:
        for sock in socks:
            sock.close()


def test_a_connection_idle_as_long_as_a_client_keeps_it_is_still_served(
    private_cluster: Cluster, sender: str
) -> None:
    assert after_idle(private_cluster, sender, CONNECTIONS, IDLE) == [202] * CONNECTIONS


def test_the_keep_alive_is_a_setting(private_cluster: Cluster, sender: str) -> None:
    private_cluster.env_extra["WALRUS_GATEWAY_KEEP_ALIVE"] = "1"
    [answer] = after_idle(private_cluster, sender, 1, 2.0)
    assert answer in ("ConnectionError", "ConnectionResetError", "BrokenPipeError")


def read_http(sock: socket.socket) -> bytes:
    """One HTTP/1.1 message (headers and a Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
         if line.lower().startswith(b"content-length:")),
        0,
    )  # fmt: skip
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def reset_on_close(conn: socket.socket) -> None:
    """Make closing ``conn`` a reset (linger 0), as a server dropping a reused connection."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class ResetOnce:
    """An HTTP server on a free port that resets the connection of its first request without
    answering (as a server closing a connection the client just reused), then answers
    ``{"ok": true}``; ``requests`` counts what it read."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with conn:
                self.requests.append(read_http(conn).split(b"\r\n", 1)[0])
                if len(self.requests) == 1:
                    reset_on_close(conn)  # the request unanswered
                    continue
                body = b'{"ok": true}'
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def reset_once() -> Iterator[ResetOnce]:
    server = ResetOnce()
    yield server
    server.close()


def test_the_clients_send_a_get_again_when_its_connection_is_reset(reset_once: ResetOnce) -> None:
    with Client(reset_once.url) as client:
        assert client.healthz() == {"ok": True}
    assert reset_once.requests == [b"GET /healthz HTTP/1.1"] * 2


def test_the_async_client_sends_a_get_again_when_its_connection_is_reset(
    reset_once: ResetOnce,
) -> None:
    async def go() -> dict[str, object]:
        async with AsyncClient(reset_once.url) as client:
            return await client.healthz()

    assert asyncio.run(go()) == {"ok": True}
    assert reset_once.requests == [b"GET /healthz HTTP/1.1"] * 2


def test_a_request_that_is_not_idempotent_is_not_sent_twice(reset_once: ResetOnce) -> None:
    with Client(reset_once.url) as client, pytest.raises(GatewayUnreachable):
        client.steer("echo", "hi", sender="bob")  # a second steer would inject it twice
    assert reset_once.requests == [b"POST /v1/agents/echo/conversations/bob/steer HTTP/1.1"]
