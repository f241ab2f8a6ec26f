"""``Idempotency-Key`` on ``POST /v1/agents/{agent}/messages``: a retried message is one run.

A client that loses the answer to a POST (the connection dropped after the gateway accepted
the message) cannot know whether the message was taken. With the same key its retry gets the
run the first attempt made, and the walrus clients send every message with a fresh key and
retry it once on a dropped connection. A proxy in front of a real gateway that forwards the
first request and then resets the client's connection, its answer unsent, is that case.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.cluster import Cluster
from tests.test_keepalive import read_http, reset_on_close
from walrus_tasks.client import Client
from walrus_tasks.client.core import IDEMPOTENCY_KEY


class LoseFirstAnswer:
    """A proxy on a free port: every request goes to the gateway; the first one's answer is
    dropped and the client's connection reset, as when a connection dies after the gateway
    has done the work. ``requests`` holds what it forwarded."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with conn:
                while request := read_http(conn):
                    self.requests.append(request)
                    with socket.create_connection(self.upstream) as up:
                        up.sendall(request.replace(b"keep-alive", b"close"))
                        answer = read_http(up)
                    if len(self.requests) == 1:
                        reset_on_close(conn)
                        break  # the answer unsent
                    conn.sendall(answer)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def proxy(cluster: Cluster) -> Iterator[LoseFirstAnswer]:
    p = LoseFirstAnswer(cluster.gateway_url)
    yield p
    p.close()


def key_of(request: bytes) -> bytes:
    head = request.split(b"\r\n\r\n", 1)[0]
    return next(
        line.split(b":", 1)[1].strip()
        for line in head.split(b"\r\n")
        if line.lower().startswith(IDEMPOTENCY_KEY.lower().encode() + b":")
    )


def test_a_message_whose_answer_was_lost_is_sent_again_and_runs_once(
    cluster: Cluster, proxy: LoseFirstAnswer, sender: str
) -> None:
    with Client(proxy.url) as client:
        accepted = client.send("echo", "only once", sender=sender)
    assert len(proxy.requests) == 2, "the client sent the message again after the reset"
    assert key_of(proxy.requests[0]) == key_of(proxy.requests[1])
    assert cluster.wait_run(accepted.run_id)["status"] == "succeeded"
    with Client(cluster.gateway_url) as client:
        page = client.runs(agent="echo", sender=sender)
        assert [run.run_id for run in page.runs] == [accepted.run_id]
        users = [m for m in client.history("echo", sender) if m["role"] == "user"]
    assert [m["content"] for m in users] == ["only once"]


def post(cluster: Cluster, sender: str, content: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{cluster.gateway_url}/v1/agents/echo/messages",
        json={"content": content, "sender": sender},
        headers={IDEMPOTENCY_KEY: key},
        timeout=30,
    )


def test_the_same_key_answers_with_the_same_run(cluster: Cluster, sender: str) -> None:
    first = post(cluster, sender, "hello", "k-1")
    again = post(cluster, sender, "hello", "k-1")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    other = post(cluster, sender, "hello", "k-2")
    assert other.status_code == 202 and other.json()["run_id"] != first.json()["run_id"]
    for resp in (first, other):
        assert cluster.wait_run(resp.json()["run_id"])["status"] == "succeeded"


@pytest.mark.parametrize(
    ("content", "key", "message"),
    [
        ("another message", "k-1", "already used for another message"),
        ("hello", "x" * 256, "1 to 255 printable characters"),
        ("hello", "tab\there", "1 to 255 printable characters"),
    ],
)
def test_a_key_reused_for_another_message_or_malformed_is_a_422_that_writes_nothing(
    cluster: Cluster, sender: str, content: str, key: str, message: str
) -> None:
    assert post(cluster, sender, "hello", "k-1").status_code == 202
    with Client(cluster.gateway_url) as client:
        before = [run.run_id for run in client.runs(agent="echo", sender=sender).runs]
        resp = post(cluster, sender, content, key)
        assert resp.status_code == 422, resp.text
        assert message in resp.json()["error"]["message"]
        assert [run.run_id for run in client.runs(agent="echo", sender=sender).runs] == before
