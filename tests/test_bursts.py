"""A stream's frames are written a burst at a time (``gateway.bursts``): what the generator gives
without waiting goes in one write, nothing is held while it waits, and a cancellation that
arrives while a burst is written reaches the waiting generator as if it had been awaiting.

The write pattern over a real gateway, worker and Redis is at the end: a text's ``text_start``
and first ``chunk`` (one ``emit``) reach the client in one HTTP chunk.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import pytest
from starlette.types import Message

from gateway import bursts
from gateway.bursts import write_bursts
from tests.cluster import Cluster

Sent = list[tuple[bytes, bool]]


def recorder(sent: Sent, log: list[str] | None = None) -> Any:
    async def send(message: Message) -> None:
        assert message["type"] == "http.response.body"
        sent.append((message["body"], message["more_body"]))
        if log is not None:
            log.append(f"sent {message['body'].decode()!r}")

    return send


def test_frames_given_together_go_in_one_write_and_none_waits_for_the_next() -> None:
    log: list[str] = []
    sent: Sent = []
    go_on = asyncio.Event()

    async def frames() -> AsyncGenerator[str, None]:
        yield "a"
        yield "b"
        await asyncio.sleep(0)  # a bare yield to the loop: a wait too
        yield "c"
        log.append("waiting")
        await go_on.wait()
        yield "d"
        yield "e"

    async def main() -> None:
        writer = asyncio.create_task(write_bursts(frames(), recorder(sent, log)))
        while "waiting" not in log:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)
        log.append("go on")
        go_on.set()
        await asyncio.wait_for(writer, 5)

    asyncio.run(main())
    assert sent == [(b"ab", True), (b"c", True), (b"de", False)]
    # "c" was written before the generator began to wait, not with what came after the wait
    assert log.index("sent 'c'") < log.index("go on")


def test_an_empty_stream_ends_its_body_in_one_write() -> None:
    sent: Sent = []

    async def frames() -> AsyncGenerator[str, None]:
        return
        yield ""  # an async generator

    asyncio.run(write_bursts(frames(), recorder(sent)))
    assert sent == [(b"", False)]


def test_a_long_burst_is_written_in_pieces_of_at_most_burst_max() -> None:
    sent: Sent = []
    frame = "x" * 1000

    async def frames() -> AsyncGenerator[str, None]:
        for _ in range(200):
            yield frame

    asyncio.run(write_bursts(frames(), recorder(sent)))
    assert b"".join(body for body, _ in sent) == frame.encode() * 200
    assert all(len(body) <= bursts.BURST_MAX + len(frame) for body, _ in sent)
    assert len(sent) > 1 and [more for _, more in sent] == [True] * (len(sent) - 1) + [False]


def test_the_generator_s_timeout_during_a_slow_write_reaches_the_generator() -> None:
    """The hub's keep-alive is an ``asyncio.timeout`` around the subscriber's wait. A client slow
    to take a burst makes the write wait; the timeout that fires meanwhile cancels the task,
    and that cancellation is the generator's: it sees its ``TimeoutError`` and goes on (a
    keep-alive), rather than the stream ending as if the client had left."""
    sent: Sent = []
    timeouts: list[str] = []
    never = asyncio.Event()

    async def frames() -> AsyncGenerator[str, None]:
        yield "first"
        try:
            async with asyncio.timeout(0.05):
                await never.wait()
        except TimeoutError:
            timeouts.append("timed out")
        yield ": keep-alive"

    async def slow_send(message: Message) -> None:
        sent.append((message["body"], message["more_body"]))
        if message["body"] == b"first":
            await asyncio.sleep(0.3)  # the client reads slowly: flow control holds the write

    async def main() -> None:
        await asyncio.wait_for(write_bursts(frames(), slow_send), 5)

    asyncio.run(main())
    assert timeouts == ["timed out"]
    assert sent == [(b"first", True), (b": keep-alive", False)]


@pytest.mark.parametrize("while_writing", [False, True])
def test_a_cancelled_stream_closes_its_generator(while_writing: bool) -> None:
    """The client leaving cancels the writer: the generator's wait is cancelled (its ``finally``
    runs at once), whether the writer was waiting with it or writing a burst."""
    closed: list[str] = []
    started = asyncio.Event()

    async def frames() -> AsyncGenerator[str, None]:
        try:
            yield "first"
            await asyncio.Event().wait()
            yield "never"
        finally:
            closed.append("closed")

    async def send(message: Message) -> None:
        started.set()
        if while_writing:
            await asyncio.Event().wait()

    async def main() -> None:
        writer = asyncio.create_task(write_bursts(frames(), send))
        await started.wait()
        await asyncio.sleep(0.01)
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer

    asyncio.run(main())
    assert closed == ["closed"]


def chunks_of(sock: socket.socket) -> list[bytes]:
    """The HTTP/1.1 chunks of a chunked response read from ``sock`` (headers skipped)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, data = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"transfer-encoding: chunked" in head.lower()
    out: list[bytes] = []
    while True:
        while b"\r\n" not in data:
            data += sock.recv(65536)
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        while len(data) < size + 2:
            data += sock.recv(65536)
        if size == 0:
            return out
        out.append(data[:size])
        data = data[size + 2 :]


def datas(chunk: bytes) -> list[str]:
    """The ``data:`` of each SSE frame in ``chunk``."""
    return [line[6:] for line in chunk.decode().splitlines() if line.startswith("data: ")]


def test_a_text_s_start_and_first_chunk_reach_the_client_in_one_write(
    cluster: Cluster, sender: str
) -> None:
    body = json.dumps({"content": "hi", "sender": sender, "stream": True}).encode()
    url = urlsplit(cluster.gateway_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/agents/echo/messages HTTP/1.1\r\nhost: " + url.netloc.encode()
            + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )  # fmt: skip
        chunks = chunks_of(sock)
    types = [[json.loads(data)["type"] for data in datas(c)] for c in chunks]
    flat = [t for c in types for t in c]
    assert flat[0] == "start" and flat[-1] == "end", types
    first_chunk = next(c for c in types if "chunk" in c)
    assert first_chunk[: first_chunk.index("chunk") + 1][-2:] == ["text_start", "chunk"], types
