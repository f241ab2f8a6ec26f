"""What each connection holds, and its client's leaving (gateway.connection, gateway.sse).

Against a real gateway process with no worker (a run stays queued, so its stream stays idle)
over real sockets; the response itself in-process, with and without the server's ``ON_LEAVE``.
"""

from __future__ import annotations

import asyncio
import gc
import re
import socket
import sys
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.connection import ON_LEAVE, LeanConnection, lean_event
from gateway.errors import BodyLimit
from gateway.server import untrack_async_generators
from gateway.sse import EventStream, LastFrame
from tests.cluster import Cluster, running, wait_for
from tests.conftest import redis_db_url
from tests.test_metrics import scrape, value
from walrus_tasks.redis_server import RedisServer, free_port

EVENTS = {"route": "/v1/runs/{run_id}/events"}


@pytest.fixture(scope="module")
def idle_gateway(
    redis_server: RedisServer, home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """A gateway and no worker: every run stays queued, and its stream idle."""
    c = Cluster(
        redis_url=redis_db_url(redis_server), home=home, log_dir=tmp_path_factory.mktemp("c")
    )
    with running(c, workers=()):
        yield c


def open_streams(c: Cluster) -> float:
    return value(scrape(c.gateway_url + "/metrics"), "walrus_sse_streams_active", **EVENTS)


def test_a_client_leaving_an_idle_stream_ends_it_at_once(
    idle_gateway: Cluster, sender: str
) -> None:
    """Nothing is ever written to this stream (its run never starts): only the connection's
    loss can end it, and it does, well within one keep-alive."""
    before = open_streams(idle_gateway)
    run_id = idle_gateway.send("echo", "hello", sender)
    with socket.create_connection(
        ("127.0.0.1", int(idle_gateway.gateway_url.rsplit(":", 1)[1]))
    ) as s:
        s.sendall(f"GET /v1/runs/{run_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = s.recv(65536)
        assert head.startswith(b"HTTP/1.1 200"), head
        wait_for(lambda: open_streams(idle_gateway) == before + 1, what="the stream to count")
    wait_for(lambda: open_streams(idle_gateway) == before, timeout=5, what="the stream to end")
    with idle_gateway.http() as c:
        assert c.get(f"/v1/runs/{run_id}").json()["status"] == "queued"


def test_pipelined_requests_are_answered_in_order(idle_gateway: Cluster) -> None:
    """Two requests in one write: the second waits in the connection's pipeline queue."""
    port = int(idle_gateway.gateway_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"GET /no/such/path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", data) == [b"200", b"404"], data


def test_a_keep_alive_connection_reads_each_request_however_it_comes(
    idle_gateway: Cluster,
) -> None:
    """The parser is dropped between requests and made again for the next bytes: a request
    after that, one sent a byte at a time, a body in two writes, two in one write, all read."""
    port = int(idle_gateway.gateway_url.rsplit(":", 1)[1])
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    bad = b'{"content": ""}'  # a 422: read whole, or it would not be refused so
    post = (
        b"POST /v1/agents/echo/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(bad)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:

        def answer() -> bytes:
            data = b""
            while not re.search(rb"\r\n\r\n(.*\}|ok|.*\n)$", data, re.S):
                data += s.recv(65536)
            return data

        s.sendall(head)
        assert answer().startswith(b"HTTP/1.1 200"), "the first request"
        for byte in head:  # a new parser, fed one byte at a time
            s.sendall(bytes([byte]))
        assert answer().startswith(b"HTTP/1.1 200"), "a request sent a byte at a time"
        s.sendall(post)
        s.sendall(bad)
        assert answer().startswith(b"HTTP/1.1 422"), "a body after its head"
        s.sendall(head + head.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", rest) == [b"200", b"200"], rest


def test_between_requests_a_connection_holds_no_parser() -> None:
    """Checked on the connections of a real server (in-process, so they can be looked at):
    one whose request is a stream being answered holds none, whether it is kept alive or
    closes after it; a pipelined one keeps its own."""

    async def stream(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"open", "more_body": True})
        while (await receive())["type"] != "http.disconnect":  # open until the client leaves
            pass

    async def main() -> tuple[list[bool], list[bool]]:
        config = uvicorn.Config(stream, port=free_port(), http=LeanConnection, lifespan="off")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        closing = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        writers = []
        for data in (request, closing, request + b"GET / HT"):  # the last: part of the next
            reader, writer = await asyncio.open_connection("127.0.0.1", config.port)
            writer.write(data)
            await reader.readuntil(b"open")
            writers.append(writer)
        connections = list(server.server_state.connections)
        held = sorted(c.parser is None for c in connections)
        writers[1].write(b"GET / HTTP/1.1\r\n\r\n" * 4)  # after a close: ignored, no parser
        await asyncio.sleep(0.1)
        held_after = sorted(c.parser is None for c in connections)
        for writer in writers:
            writer.close()
            await writer.wait_closed()
        server.should_exit = True
        await serving
        return held, held_after, [isinstance(c, LeanConnection) for c in connections]

    held, held_after, lean = asyncio.run(main())
    assert lean == [True, True, True]
    assert held == held_after == [False, True, True]  # only the pipelined one's is kept


def test_a_response_s_writes_of_one_turn_go_out_as_one_send() -> None:
    """Checked on a real server's connection (in-process): a JSON answer (status line and
    headers, then its body) is one write on the socket's transport, a stream's later event one
    more; a response that closes its connection is sent whole before the close."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"content-type", b"application/json")]
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"one", "more_body": True})
            await asyncio.sleep(0.05)
            await send({"type": "http.response.body", "body": b"two"})
            return
        body = b'{"ok": true}'
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def main() -> tuple[list[bytes], list[bytes], bytes]:
        config = uvicorn.Config(app, port=free_port(), http=LeanConnection, lifespan="off")
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", config.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"true}")
        [connection] = server.server_state.connections
        real = getattr(connection.transport, "_transport", connection.transport)
        sent: list[bytes] = []
        real_write = real.write
        real.write = lambda data: (sent.append(bytes(data)), real_write(data))[1]
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"true}")
        answered = list(sent)
        sent.clear()
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"0\r\n\r\n")
        streamed = list(sent)
        writer.close()
        await writer.wait_closed()
        reader, writer = await asyncio.open_connection("127.0.0.1", config.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        closed = await reader.read()  # to the end: the server closed after the answer
        writer.close()
        server.should_exit = True
        await serving
        return answered, streamed, closed

    answered, streamed, closed = asyncio.run(main())
    assert len(answered) == 1 and answered[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert answered[0].endswith(b'\r\n\r\n{"ok": true}')
    assert len(streamed) == 2, "the headers with the first event; the second after the sleep"
    assert b"one" in streamed[0] and b"two" in streamed[1]
    assert closed.startswith(b"HTTP/1.1 200 OK") and closed.endswith(b'{"ok": true}')


def test_a_lean_event_waits_and_wakes_as_before() -> None:
    async def main() -> None:
        event = asyncio.Event()
        lean_event(event)
        assert event._waiters == []  # type: ignore[attr-defined]
        waiting = [asyncio.ensure_future(event.wait()) for _ in range(3)]
        await asyncio.sleep(0)
        assert len(event._waiters) == 3  # type: ignore[attr-defined]
        event.set()
        assert await asyncio.gather(*waiting) == [True, True, True]
        assert event._waiters == []  # type: ignore[attr-defined]
        event.clear()
        busy = asyncio.Event()
        waiter = asyncio.ensure_future(busy.wait())
        await asyncio.sleep(0)
        lean_event(busy)  # it has a waiter: left as it is
        assert isinstance(busy._waiters, deque)  # type: ignore[attr-defined]
        busy.set()
        await waiter

    asyncio.run(main())


async def _idle_frames(closed: list[bool]) -> AsyncGenerator[str, None]:
    try:
        yield ": first\n\n"
        await asyncio.Event().wait()  # never another frame
        yield ": never\n\n"
    finally:
        closed.append(True)


def _respond(scope: dict[str, Any], received: list[str]) -> tuple[list[dict[str, Any]], list[bool]]:
    """Run an :class:`EventStream` of idle frames in ``scope``; its messages, and whether its
    frames were closed. The client leaves after the first frame."""
    sent: list[dict[str, Any]] = []
    closed: list[bool] = []
    gone = asyncio.Event()

    async def receive() -> dict[str, Any]:
        received.append("receive")
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body"):
            asyncio.get_running_loop().call_later(0.05, leave)

    def leave() -> None:
        gone.set()
        if callback := scope.get("registered"):
            callback()

    async def main() -> None:
        await asyncio.wait_for(EventStream(_idle_frames(closed))(scope, receive, send), 5)

    asyncio.run(main())
    return sent, closed


def test_a_stream_is_told_of_its_client_leaving_by_the_server_without_reading_receive() -> None:
    watched: list[Any] = []

    def on_leave(callback: Any) -> None:
        watched.append(callback)
        scope["registered"] = callback

    scope: dict[str, Any] = {"type": "http", ON_LEAVE: on_leave}
    received: list[str] = []
    sent, closed = _respond(scope, received)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert closed == [True]
    assert received == []  # no task waited on receive
    assert watched[0] is not None and watched[-1] is None  # asked, then let go


def test_on_another_server_a_stream_waits_on_receive_for_its_client_leaving() -> None:
    received: list[str] = []
    sent, closed = _respond({"type": "http"}, received)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert closed == [True]
    assert received


def test_each_stream_s_headers_are_a_list_of_its_own() -> None:
    """Streams without headers of their own share the header tuples, not the list: a middleware
    that adds to one stream's (CORS does) adds nothing to the next one's."""
    first, second = EventStream(_idle_frames([])), EventStream(_idle_frames([]))
    assert first.raw_headers == second.raw_headers
    assert (b"content-type", b"text/event-stream; charset=utf-8") in first.raw_headers
    assert (b"cache-control", b"no-cache") in first.raw_headers
    first.raw_headers.append((b"access-control-allow-origin", b"*"))
    assert (b"access-control-allow-origin", b"*") not in second.raw_headers
    own = EventStream(_idle_frames([]), {"A2A-Version": "1.0"})
    assert (b"a2a-version", b"1.0") in own.raw_headers
    assert (b"cache-control", b"no-cache") in own.raw_headers


def test_the_server_s_loop_tracks_no_async_generator_and_still_closes_a_dropped_one() -> None:
    """``untrack_async_generators`` (the gateway's server calls it as it starts)."""
    closed: list[str] = []

    async def frames() -> AsyncGenerator[str, None]:
        try:
            yield "first"
            yield "never"
        finally:
            closed.append("closed")

    async def main() -> tuple[Any, int]:
        untrack_async_generators()
        hooks = sys.get_asyncgen_hooks()
        gen = frames()
        assert await anext(gen) == "first"
        del gen  # dropped unfinished: the finalizer closes it on the loop
        gc.collect()
        for _ in range(3):
            await asyncio.sleep(0)
        return hooks.firstiter, len(asyncio.get_running_loop()._asyncgens)  # type: ignore[attr-defined]

    firstiter, tracked = asyncio.run(main())
    assert firstiter is None and tracked == 0
    assert closed == ["closed"]


def test_a_body_of_declared_length_reaches_the_app_unwrapped_and_a_chunked_one_counted() -> None:
    """The body limit keeps no wrapper for a body the server frames by its length (HTTP/1)."""
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        got.append(receive)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    limit = BodyLimit(app, 100)
    declared = {"type": "http", "http_version": "1.1", "headers": [(b"content-length", b"2")]}
    chunked = {"type": "http", "http_version": "1.1",
               "headers": [(b"transfer-encoding", b"chunked")]}  # fmt: skip
    asyncio.run(limit(declared, receive, None))  # type: ignore[arg-type]
    asyncio.run(limit(chunked, receive, None))  # type: ignore[arg-type]
    assert got[0] is receive and got[1] is not receive


def test_a_stream_s_last_frame_carries_the_body_s_end_and_any_other_ends_it_after() -> None:
    """A run's end (``LastFrame``) and the body's end go in one send; a stream whose frames just
    stop (a face's, an error's) has its end sent after them."""

    async def frames(*texts: str) -> AsyncGenerator[str, None]:
        for text in texts:
            yield text

    def bodies(stream: EventStream) -> list[tuple[bytes, bool]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()
            return {}

        asyncio.run(stream({"type": "http"}, receive, send))
        assert sent[0]["type"] == "http.response.start"
        return [(m["body"], m["more_body"]) for m in sent[1:]]

    ended = bodies(EventStream(frames("a\n\n", LastFrame("b\n\n"))))
    assert ended == [(b"a\n\n", True), (b"b\n\n", False)]
    assert bodies(EventStream(frames("a\n\n"))) == [(b"a\n\n", True), (b"", False)]
